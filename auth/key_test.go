package auth

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// raceEnv, when set, makes the test binary a child of
// TestLoadOrCreateKeyProcessRace: it waits for its standard input to close,
// creates or loads the key at the path it names, prints the key and exits.
const raceEnv = "SHOAL_AUTH_KEY_RACE"

func TestMain(m *testing.M) {
	if path := os.Getenv(raceEnv); path != "" {
		_, _ = io.Copy(io.Discard, os.Stdin)
		k, err := LoadOrCreateKey(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(hex.EncodeToString(k))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token.key")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadKey(t *testing.T) {
	want := testKey(t, 7)
	for _, content := range []string{
		hex.EncodeToString(want),
		"  \n" + hex.EncodeToString(want) + "\r\n\t",
		strings.ToUpper(hex.EncodeToString(want)) + "\n",
	} {
		k, err := LoadKey(writeFile(t, content))
		if err != nil || !bytes.Equal(k, want) {
			t.Fatalf("file %q: %x, %v", content, k, err)
		}
	}
	long := bytes.Repeat([]byte{5}, 64)
	if k, err := LoadKey(writeFile(t, hex.EncodeToString(long))); err != nil || !bytes.Equal(k, long) {
		t.Fatalf("64-byte key: %x, %v", k, err)
	}
}

func TestLoadKeyErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope", "token.key")
	_, err := LoadKey(missing)
	if !errors.Is(err, ErrNoKeyFile) || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: %v", err)
	}
	for _, c := range []struct {
		name, content, mention string
	}{
		{"empty", "", "empty"},
		{"blank", " \n\n", "empty"},
		{"not hex", strings.Repeat("zz", KeySize), "hex"},
		{"odd length", strings.Repeat("a", 2*KeySize+1), "hex"},
		{"two keys", hex.EncodeToString(testKey(t, 1)) + " " + hex.EncodeToString(testKey(t, 2)), "hex"},
		{"short", hex.EncodeToString(make([]byte, KeySize-1)), "31 bytes"},
		{"huge", strings.Repeat("ab", 4<<10), "larger"},
	} {
		_, err := LoadKey(writeFile(t, c.content))
		if !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), c.mention) {
			t.Errorf("%s: %v, want ErrBadKey mentioning %q", c.name, err, c.mention)
		}
	}
	if _, err := LoadKey(t.TempDir()); err == nil || errors.Is(err, ErrNoKeyFile) {
		t.Errorf("a directory: %v", err)
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "deeper")
	path := filepath.Join(dir, "token.key")
	k, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(k) != KeySize {
		t.Fatalf("key of %d bytes", len(k))
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := st.Mode().Perm(); mode != 0o600 {
		t.Errorf("key file mode %o, want 600", mode)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("key directory: %v, %v, want mode 700", st.Mode(), err)
	}
	again, err := LoadOrCreateKey(path)
	if err != nil || !bytes.Equal(again, k) {
		t.Fatalf("second call: %x, %v; want %x", again, err, k)
	}
	loaded, err := LoadKey(path)
	if err != nil || !bytes.Equal(loaded, k) {
		t.Fatalf("LoadKey: %x, %v", loaded, err)
	}
	// Nothing but the key is left behind.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only the key", len(ents))
	}
	// A bad key file is reported, never replaced.
	bad := writeFile(t, "not a key")
	if _, err := LoadOrCreateKey(bad); !errors.Is(err, ErrBadKey) {
		t.Errorf("bad file: %v, want ErrBadKey", err)
	}
	if b, _ := os.ReadFile(bad); string(b) != "not a key" {
		t.Errorf("bad key file rewritten to %q", b)
	}
}

// Goroutines that race to create the key all end with the same one.
func TestLoadOrCreateKeyGoroutineRace(t *testing.T) {
	for round := range 20 {
		path := filepath.Join(t.TempDir(), "token.key")
		const n = 16
		keys := make([]Key, n)
		errs := make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				keys[i], errs[i] = LoadOrCreateKey(path)
			}()
		}
		close(start)
		wg.Wait()
		onDisk, err := LoadKey(path)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if errs[i] != nil || !bytes.Equal(keys[i], onDisk) {
				t.Fatalf("round %d, goroutine %d: %x, %v; the file holds %x", round, i, keys[i], errs[i], onDisk)
			}
		}
	}
}

// Processes that race to create the key all end with the same one.
func TestLoadOrCreateKeyProcessRace(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		path := filepath.Join(t.TempDir(), "token.key")
		const n = 6
		cmds := make([]*exec.Cmd, n)
		outs := make([]*bytes.Buffer, n)
		gates := make([]io.WriteCloser, n)
		for i := range n {
			cmd := exec.Command(exe, "-test.run=^$")
			cmd.Env = append(os.Environ(), raceEnv+"="+path)
			outs[i] = new(bytes.Buffer)
			cmd.Stdout, cmd.Stderr = outs[i], outs[i]
			if gates[i], err = cmd.StdinPipe(); err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			cmds[i] = cmd
		}
		// Every child is started and blocked on its input: open the gates
		// together.
		for _, g := range gates {
			g.Close()
		}
		seen := make(map[string]int)
		for i, cmd := range cmds {
			if err := cmd.Wait(); err != nil {
				t.Fatalf("round %d, child %d: %v: %s", round, i, err, outs[i])
			}
			seen[strings.TrimSpace(outs[i].String())]++
		}
		onDisk, err := LoadKey(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(seen) != 1 || seen[hex.EncodeToString(onDisk)] != n {
			t.Fatalf("round %d: keys seen %v, the file holds %x", round, seen, onDisk)
		}
	}
}
