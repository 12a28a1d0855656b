package service_test

import (
	"testing"

	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/service"
)

// TestConnService checks that a handle reaches the Service that made it,
// whether it came with an event or from Service.Conn.
func TestConnService(t *testing.T) {
	snc, tnc := testBus(t)
	got := make(chan *service.Service, 1)
	s := runService(t, snc, service.Config{Name: "svc"}, service.Funcs{
		OnOpen: func(c *service.Conn) error {
			got <- c.Service()
			return nil
		},
	})
	event(t, tnc, "svc", bus.EventOpen, "s1.1", nil)
	if g := recv(t, got, "open"); g != s {
		t.Errorf("event handle: Service() = %p, want %p", g, s)
	}
	c, err := s.Conn("s1.2")
	if err != nil {
		t.Fatal(err)
	}
	if c.Service() != s {
		t.Errorf("Conn handle: Service() = %p, want %p", c.Service(), s)
	}
}
