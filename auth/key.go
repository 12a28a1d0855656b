package auth

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// KeySize is the size in bytes of a key LoadOrCreateKey makes, and the
// least LoadKey accepts: HMAC-SHA256 gains nothing from a longer key, and a
// shorter one is weaker than the hash.
const KeySize = 32

// maxKeyFile bounds what LoadKey reads: a key file is a line of hex, so
// anything much larger is a wrong path, not a key.
const maxKeyFile = 4 << 10

// Key is the HMAC secret that signs and checks tokens.
type Key []byte

// check reports whether k can sign and check tokens.
func (k Key) check() error {
	if len(k) < KeySize {
		return fmt.Errorf("%w: %d bytes, want at least %d", ErrBadKey, len(k), KeySize)
	}
	return nil
}

// LoadKey reads a key file: the key in hexadecimal (64 hex characters for
// 32 bytes; longer keys are accepted), surrounding whitespace ignored. A
// missing file is ErrNoKeyFile (and fs.ErrNotExist); a file that does not
// hold a key of at least 32 bytes is ErrBadKey.
func LoadKey(path string) (Key, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s: %w", ErrNoKeyFile, path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("auth: key file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("auth: key file %s: %w", path, err)
	}
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("%w: %s: larger than %d bytes, not a key file", ErrBadKey, path, maxKeyFile)
	}
	text := strings.TrimSpace(string(b))
	if text == "" {
		return nil, fmt.Errorf("%w: %s is empty", ErrBadKey, path)
	}
	k, err := hex.DecodeString(text)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: want %d hex characters: %v", ErrBadKey, path, 2*KeySize, err)
	}
	if err := Key(k).check(); err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return k, nil
}

// LoadOrCreateKey loads the key file at path, or, when there is none,
// creates it with KeySize random bytes (mode 0600; its directory is
// created with mode 0700 if missing). Processes that race to create the
// same file all end with the same key: each writes a complete file under a
// temporary name and links it to path, which succeeds for only one of
// them; the others then load the winner's key. A reader therefore never
// sees a half-written key.
func LoadOrCreateKey(path string) (Key, error) {
	k, err := LoadKey(path)
	if !errors.Is(err, ErrNoKeyFile) {
		return k, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("auth: key directory: %w", err)
	}
	fresh := make(Key, KeySize)
	if _, err := rand.Read(fresh); err != nil {
		return nil, fmt.Errorf("auth: random key: %w", err)
	}
	tmp, err := writeTemp(dir, filepath.Base(path), fresh)
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp)
	// link, unlike rename, never replaces an existing file: it is the
	// O_EXCL of a file that is already complete.
	switch err := os.Link(tmp, path); {
	case err == nil:
		syncDir(dir)
		return fresh, nil
	case errors.Is(err, fs.ErrExist):
		return LoadKey(path)
	default:
		return nil, fmt.Errorf("auth: create key file: %w", err)
	}
}

// writeTemp writes k in hex to a new file in dir, synced to disk, and
// returns its name.
func writeTemp(dir, base string, k Key) (string, error) {
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("auth: create key file: %w", err)
	}
	name := f.Name()
	fail := func(err error) (string, error) {
		f.Close()
		os.Remove(name)
		return "", fmt.Errorf("auth: write key file: %w", err)
	}
	// CreateTemp makes the file 0600 already; say so for umask-proof
	// certainty, since the file is a secret.
	if err := f.Chmod(0o600); err != nil {
		return fail(err)
	}
	if _, err := f.WriteString(hex.EncodeToString(k) + "\n"); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(name)
		return "", fmt.Errorf("auth: write key file: %w", err)
	}
	return name, nil
}

// syncDir makes a new directory entry durable. A failure only weakens
// crash safety, so it is not reported.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
