package netpoll

import (
	"errors"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pair returns a connected non-blocking socket pair, closed at cleanup.
func pair(t testing.TB) (int, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds[0], fds[1]
}

func newPoller(t testing.TB) *Poller {
	t.Helper()
	p, err := NewPoller(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func recv(t testing.TB, ch <-chan Event, want Event) Event {
	t.Helper()
	select {
	case ev := <-ch:
		if ev&want != want {
			t.Fatalf("got %v, want %v", ev, want)
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatalf("no %v event", want)
	}
	return 0
}

func quiet(t testing.TB, ch <-chan Event) {
	t.Helper()
	select {
	case ev := <-ch:
		t.Fatalf("unexpected event %v", ev)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestPollerOneShotRead(t *testing.T) {
	p := newPoller(t)
	a, b := pair(t)
	ch := make(chan Event, 16)
	if err := p.Add(a, Read|OneShot, func(ev Event) { ch <- ev }); err != nil {
		t.Fatal(err)
	}
	if p.Len() != 1 {
		t.Fatalf("Len %d, want 1", p.Len())
	}
	quiet(t, ch)
	unix.Write(b, []byte("x"))
	recv(t, ch, Read)
	// Unread data but disarmed: nothing more until Mod.
	unix.Write(b, []byte("y"))
	quiet(t, ch)
	if err := p.Mod(a, Read|OneShot); err != nil {
		t.Fatal(err)
	}
	recv(t, ch, Read)
}

func TestPollerWriteAndHup(t *testing.T) {
	p := newPoller(t)
	a, b := pair(t)
	ch := make(chan Event, 16)
	if err := p.Add(a, Write|OneShot, func(ev Event) { ch <- ev }); err != nil {
		t.Fatal(err)
	}
	recv(t, ch, Write)
	if err := p.Mod(a, Read|OneShot); err != nil {
		t.Fatal(err)
	}
	unix.Shutdown(b, unix.SHUT_WR)
	recv(t, ch, ReadHup)
	unix.Close(b)
	if err := p.Mod(a, Read|OneShot); err != nil {
		t.Fatal(err)
	}
	recv(t, ch, Hup)
}

func TestPollerDel(t *testing.T) {
	p := newPoller(t)
	a, b := pair(t)
	ch := make(chan Event, 16)
	if err := p.Add(a, Read, func(ev Event) { ch <- ev }); err != nil {
		t.Fatal(err)
	}
	if err := p.Add(a, Read, func(Event) {}); !errors.Is(err, ErrRegistered) {
		t.Fatalf("second Add: %v, want ErrRegistered", err)
	}
	if err := p.Del(a); err != nil {
		t.Fatal(err)
	}
	if err := p.Del(a); !errors.Is(err, ErrNotRegistered) {
		t.Fatalf("second Del: %v, want ErrNotRegistered", err)
	}
	if err := p.Mod(a, Read); !errors.Is(err, ErrNotRegistered) {
		t.Fatalf("Mod after Del: %v, want ErrNotRegistered", err)
	}
	unix.Write(b, []byte("x"))
	quiet(t, ch)
	if p.Len() != 0 {
		t.Fatalf("Len %d, want 0", p.Len())
	}
}

func TestPollerCloseReportsClosed(t *testing.T) {
	before := runtime.NumGoroutine()
	p, err := NewPoller(nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan Event, 4)
	for range 3 {
		a, _ := pair(t)
		if err := p.Add(a, Read|OneShot, func(ev Event) { got <- ev }); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		recv(t, got, Closed)
	}
	if err := p.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v, want ErrClosed", err)
	}
	a, _ := pair(t)
	if err := p.Add(a, Read, func(Event) {}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Add after Close: %v, want ErrClosed", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d before, %d after Close", before, runtime.NumGoroutine())
		}
		time.Sleep(time.Millisecond)
	}
}

func openFiles(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// The poller must register descriptors as they are, without dup.
func TestPollerDoesNotDup(t *testing.T) {
	p := newPoller(t)
	fds := make([]int, 0, 100)
	for range 50 {
		a, b := pair(t)
		fds = append(fds, a, b)
	}
	before := openFiles(t)
	for _, fd := range fds {
		if err := p.Add(fd, Read|OneShot, func(Event) {}); err != nil {
			t.Fatal(err)
		}
	}
	if after := openFiles(t); after != before {
		t.Fatalf("open files %d before Add, %d after", before, after)
	}
	for _, fd := range fds {
		if err := p.Del(fd); err != nil {
			t.Fatal(err)
		}
	}
}

func TestEventString(t *testing.T) {
	if s := (Read | OneShot | Closed).String(); s != "Read|OneShot|Closed" {
		t.Fatalf("String = %q", s)
	}
	if s := Event(0).String(); s != "0" {
		t.Fatalf("String = %q", s)
	}
}

func BenchmarkPollerRoundTrip(b *testing.B) {
	p := newPoller(b)
	x, y := pair(b)
	ch := make(chan Event, 1)
	if err := p.Add(x, Read|OneShot, func(ev Event) { ch <- ev }); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1)
	b.ReportAllocs()
	for b.Loop() {
		unix.Write(y, buf)
		<-ch
		unix.Read(x, buf)
		p.Mod(x, Read|OneShot)
	}
}
