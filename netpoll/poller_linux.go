package netpoll

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/mailru/easygo/netpoll"
	"golang.org/x/sys/unix"
)

// Poller reports readiness of raw file descriptors through one epoll
// instance and one wait goroutine.
//
// Descriptors are registered as they are: the poller never duplicates or
// closes them (easygo's Handle would dup every descriptor, doubling the
// process's open files). Whoever registered a descriptor must Del it before
// closing it.
type Poller struct {
	ep   *netpoll.Epoll
	log  *slog.Logger
	n    atomic.Int64
	once sync.Once
}

// NewPoller creates an epoll instance and starts its wait goroutine.
// A nil logger discards wait errors.
func NewPoller(logger *slog.Logger) (*Poller, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Poller{log: logger}
	ep, err := netpoll.EpollCreate(&netpoll.EpollConfig{
		OnWaitError: func(err error) { logger.Error("epoll wait failed", "err", err) },
	})
	if err != nil {
		return nil, fmt.Errorf("netpoll: epoll create: %w", err)
	}
	p.ep = ep
	return p, nil
}

// Add registers fd with interest ev. cb runs on the poller's single wait
// goroutine, one call at a time, so it must not block: it hands work to a
// Pool. cb may call Add, Mod and Del. The poller retains cb until Del.
func (p *Poller) Add(fd int, ev Event, cb func(Event)) error {
	err := p.ep.Add(fd, toEpoll(ev), func(e netpoll.EpollEvent) { cb(fromEpoll(e)) })
	if err != nil {
		return p.wrap("add", fd, err)
	}
	p.n.Add(1)
	return nil
}

// Mod replaces the interest of fd; with OneShot it re-arms the registration.
func (p *Poller) Mod(fd int, ev Event) error {
	if err := p.ep.Mod(fd, toEpoll(ev)); err != nil {
		return p.wrap("mod", fd, err)
	}
	return nil
}

// Del removes fd. After Del returns, its callback is not called again,
// except by a report already collected in the same wait round: callbacks
// must tolerate one late call.
func (p *Poller) Del(fd int) error {
	if err := p.ep.Del(fd); err != nil {
		return p.wrap("del", fd, err)
	}
	p.n.Add(-1)
	return nil
}

// Len is the number of registered descriptors.
func (p *Poller) Len() int { return int(p.n.Load()) }

// Close stops the wait goroutine, waits for it, then reports Closed to every
// registered callback. A second Close returns ErrClosed.
func (p *Poller) Close() error {
	err := ErrClosed
	p.once.Do(func() {
		err = p.ep.Close()
		if err != nil {
			err = fmt.Errorf("netpoll: close: %w", err)
		}
	})
	return err
}

func (p *Poller) wrap(op string, fd int, err error) error {
	switch {
	case errors.Is(err, netpoll.ErrClosed):
		return fmt.Errorf("netpoll: %s fd %d: %w", op, fd, ErrClosed)
	case errors.Is(err, netpoll.ErrRegistered):
		return fmt.Errorf("netpoll: %s fd %d: %w", op, fd, ErrRegistered)
	case errors.Is(err, netpoll.ErrNotRegistered):
		return fmt.Errorf("netpoll: %s fd %d: %w", op, fd, ErrNotRegistered)
	}
	return fmt.Errorf("netpoll: %s fd %d: %w", op, fd, err)
}

// closedEvent is what easygo reports to each callback when the epoll closes.
const closedEvent = 0x20

func toEpoll(ev Event) netpoll.EpollEvent {
	var e netpoll.EpollEvent
	if ev&Read != 0 {
		e |= unix.EPOLLIN | unix.EPOLLRDHUP
	}
	if ev&Write != 0 {
		e |= unix.EPOLLOUT
	}
	if ev&OneShot != 0 {
		e |= unix.EPOLLONESHOT
	}
	if ev&Edge != 0 {
		e |= unix.EPOLLET
	}
	return e
}

func fromEpoll(e netpoll.EpollEvent) Event {
	if e == closedEvent {
		return Closed
	}
	var ev Event
	if e&(unix.EPOLLIN|unix.EPOLLPRI) != 0 {
		ev |= Read
	}
	if e&unix.EPOLLOUT != 0 {
		ev |= Write
	}
	if e&unix.EPOLLRDHUP != 0 {
		ev |= ReadHup
	}
	if e&unix.EPOLLHUP != 0 {
		ev |= Hup
	}
	if e&unix.EPOLLERR != 0 {
		ev |= Err
	}
	return ev
}
