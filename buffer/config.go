package buffer

import (
	"errors"
	"fmt"
	"time"
)

// Policy says what Append does when the byte quota is reached.
type Policy string

const (
	// DropOldest deletes the oldest records until the new one fits; each
	// deleted record is counted as dropped with reason "quota".
	DropOldest Policy = "drop-oldest"
	// Reject makes Append fail with ErrFull; nothing already stored is lost.
	Reject Policy = "reject"
)

// Defaults of Config.
const (
	DefaultMaxBytes = 256 * MiB
	DefaultMaxAge   = 168 * time.Hour
	DefaultWhenFull = DropOldest
)

// minMaxBytes is the smallest quota Validate accepts: below it badger's own
// fixed overhead dominates and the quota cannot mean anything.
const minMaxBytes = 64 * KiB

// Config is the `bridge.buffer:` section of the configuration file.
type Config struct {
	// MaxBytes is the byte quota of the backlog: the sum of the payload
	// sizes of unacknowledged records plus a fixed per-record overhead
	// (RecordOverhead). Badger's own files (logs, tombstones not yet
	// compacted) come on top; see Stats.DiskBytes. Default 256MiB.
	MaxBytes Size `yaml:"max_bytes"`
	// MaxAge drops records older than this (reason "expired"), checked by
	// Run about every MaxAge/100 (between 1s and 1m). 0 keeps records
	// forever. Default 168h.
	MaxAge time.Duration `yaml:"max_age"`
	// WhenFull is the policy applied when MaxBytes is reached:
	// "drop-oldest" (default) or "reject".
	WhenFull Policy `yaml:"when_full"`
}

// Defaults fills the zero fields with the defaults. Call it on the Config
// before decoding the file into it (yaml.v3 leaves absent keys untouched),
// so that an explicit `max_age: 0` ("keep forever") survives decoding.
func (c *Config) Defaults() {
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.MaxAge == 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.WhenFull == "" {
		c.WhenFull = DefaultWhenFull
	}
}

// Validate reports every problem of c as an errors.Join of *FieldError,
// with paths relative to the buffer section ("max_bytes").
func (c *Config) Validate() error {
	var errs []error
	if c.MaxBytes < minMaxBytes {
		errs = append(errs, &FieldError{Path: "max_bytes", Msg: fmt.Sprintf("must be at least %s, got %d", minMaxBytes, int64(c.MaxBytes))})
	}
	if c.MaxAge < 0 {
		errs = append(errs, &FieldError{Path: "max_age", Msg: fmt.Sprintf("must not be negative (0 keeps records forever), got %s", c.MaxAge)})
	} else if c.MaxAge > 0 && c.MaxAge < time.Second {
		errs = append(errs, &FieldError{Path: "max_age", Msg: fmt.Sprintf("must be 0 (keep forever) or at least 1s, got %s", c.MaxAge)})
	}
	switch c.WhenFull {
	case DropOldest, Reject:
	default:
		errs = append(errs, &FieldError{Path: "when_full", Msg: fmt.Sprintf("must be %q or %q, got %q", DropOldest, Reject, c.WhenFull)})
	}
	return errors.Join(errs...)
}

// FieldError is a configuration problem at Path (relative to the buffer
// section).
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// FieldPath returns the path of the offending key.
func (e *FieldError) FieldPath() string { return e.Path }
