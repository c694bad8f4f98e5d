package gateway

import (
	"context"
	"io"

	"github.com/fieldgate/fieldgate/broker"
	"github.com/fieldgate/fieldgate/devices/modbus"
)

// HashPassword returns a bcrypt hash for broker.auth.users[].password_hash.
func HashPassword(password string) (string, error) { return broker.HashPassword(password) }

// ProbeOptions says which Modbus device and registers `fieldgate probe` reads.
type ProbeOptions = modbus.ProbeOptions

// Probe reads raw registers from a live Modbus device and prints every type
// and byte/word order interpretation, closest to opts.Expect first.
func Probe(ctx context.Context, opts ProbeOptions, w io.Writer) error {
	return modbus.Probe(ctx, opts, w)
}
