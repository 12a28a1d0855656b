package service

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestAcquireBounds checks that a request beyond MaxInFlight waits for a
// slot and gives up with ErrUnavailable when its deadline passes first.
func TestAcquireBounds(t *testing.T) {
	s, err := OpenStore(&nats.Conn{}, StoreConfig{MaxInFlight: 2})
	if err != nil {
		t.Fatal(err)
	}
	var dones []func()
	for range 2 {
		_, done, err := s.acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		dones = append(dones, done)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, _, err := s.acquire(ctx); !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third acquire: %v, want ErrUnavailable with DeadlineExceeded", err)
	}
	got := make(chan error, 1)
	go func() {
		_, done, err := s.acquire(context.Background())
		if err == nil {
			done()
		}
		got <- err
	}()
	dones[0]()
	if err := <-got; err != nil {
		t.Fatalf("acquire after a release: %v", err)
	}
	dones[1]()
	if n := len(s.slots); n != 0 {
		t.Fatalf("%d slots still held", n)
	}
}
