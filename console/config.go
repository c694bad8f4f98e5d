package console

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Roles of console users.
const (
	RoleRead  = "read"  // every page and API, no writes
	RoleWrite = "write" // also writes points through the Write page
)

// Config is the `console:` section. The zero value, after Defaults, serves
// the console on the ops HTTP server (gateway.http.address).
type Config struct {
	// Enabled turns the console on. Default true.
	Enabled *bool `yaml:"enabled"`
	// Address, when set, serves the console on its own listener
	// (host:port) instead of on gateway.http.address. Required for TLS.
	Address string `yaml:"address"`
	// Users may log in. A login is required on every page and API when the
	// console's address is not a loopback address; on loopback nobody logs
	// in and every local user may write.
	Users []User `yaml:"users"`
	// TLS serves Address over HTTPS with this certificate and key.
	TLS *TLSConfig `yaml:"tls"`
	// History is how many recent samples each point keeps in memory for its
	// chart. Default 120; at most 10000.
	History int `yaml:"history"`
	// SessionTTL is how long a login lasts. Default 12h.
	SessionTTL time.Duration `yaml:"session_ttl"`
}

// User is a console login: a bcrypt hash (`fieldgate passwd` prints one)
// and a role, read or write.
type User struct {
	Username     string `yaml:"username"`
	PasswordHash string `yaml:"password_hash"`
	Role         string `yaml:"role"`
}

// TLSConfig names the PEM certificate (chain) and key files.
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Defaults fills every unset value.
func (c *Config) Defaults() {
	if c.Enabled == nil {
		on := true
		c.Enabled = &on
	}
	if c.History == 0 {
		c.History = 120
	}
	if c.SessionTTL == 0 {
		c.SessionTTL = 12 * time.Hour
	}
	for i := range c.Users {
		if c.Users[i].Role == "" {
			c.Users[i].Role = RoleRead
		}
	}
}

// FieldError is one configuration problem; Path is relative to `console`.
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// FieldPath returns the problem's path relative to `console`.
func (e *FieldError) FieldPath() string { return e.Path }

// Validate reports every problem (joined), each a *FieldError.
func (c *Config) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	if c.Address != "" && !strings.Contains(c.Address, ":") {
		add("address", "%q: want host:port", c.Address)
	}
	if c.TLS != nil {
		if c.Address == "" {
			add("tls", "needs console.address: TLS applies to the console's own listener")
		}
		if c.TLS.CertFile == "" || c.TLS.KeyFile == "" {
			add("tls", "needs both cert_file and key_file")
		}
	}
	if c.History < 2 || c.History > 10000 {
		add("history", "%d: want 2 to 10000 samples", c.History)
	}
	if c.SessionTTL < time.Minute {
		add("session_ttl", "%s: want at least 1m", c.SessionTTL)
	}
	seen := map[string]bool{}
	for i, u := range c.Users {
		p := fmt.Sprintf("users[%d]", i)
		switch {
		case u.Username == "":
			add(p+".username", "must not be empty")
		case seen[u.Username]:
			add(p+".username", "%q appears twice", u.Username)
		}
		seen[u.Username] = true
		if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
			add(p+".password_hash", "not a bcrypt hash (make one with `fieldgate passwd`)")
		}
		if u.Role != RoleRead && u.Role != RoleWrite {
			add(p+".role", "%q: want read or write", u.Role)
		}
	}
	return errors.Join(errs...)
}
