package service

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/shoal-gw/shoal/bus"
)

// Conn is a handle for one client connection on some shard. A handle is a
// value of the event that carried it: User reports the user bound when the
// event was published, and an Identify does not change it. Handles are cheap
// and may be kept after the event and used from any goroutine; commands on a
// connection that closed fail quietly (send, leave, identify, close) or with
// ErrNoConnection (join).
type Conn struct {
	id     string
	shard  string
	user   string
	remote string
	path   string
	svc    *Service
}

// ID returns the connection id "<shard>.<conn>", unique on the bus while the
// shard lives.
func (c *Conn) ID() string { return c.id }

// Service returns the Service that delivered the event, so a Handler can
// Publish or Broadcast without holding the Service itself.
func (c *Conn) Service() *Service { return c.svc }

// Shard returns the id of the shard holding the connection.
func (c *Conn) Shard() string { return c.shard }

// User returns the user bound to the connection when the event was
// published, or "" if none.
func (c *Conn) User() string { return c.user }

// Remote returns the client's "ip:port"; set on the handle passed to Open.
func (c *Conn) Remote() string { return c.remote }

// Path returns the request URI of the handshake (path and query); set on the
// handle passed to Open.
func (c *Conn) Path() string { return c.path }

// Send sends one message to the connection. It does not wait for the shard.
func (c *Conn) Send(op Opcode, data []byte) error {
	opv, err := opcodeValue(op)
	if err != nil {
		return err
	}
	return c.svc.send(c, opv, data)
}

// Join adds the connection to room and returns once the shard confirmed
// that its room subscription is in place, so whatever is published to the
// room after Join returned reaches the connection. Without a deadline in ctx
// it waits at most Config.RequestTimeout.
//
// Errors wrap ErrInvalidRoom, ErrNoConnection, ErrShardGone (no shard
// listens: it exited), ErrTimeout (with context.DeadlineExceeded), or
// ErrCommand; a cancelled ctx gives its error.
func (c *Conn) Join(ctx context.Context, room string) error {
	if err := bus.ValidRoom(room); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidRoom, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.svc.timeout)
		defer cancel()
	}
	msg := &nats.Msg{
		Subject: c.svc.subjects.Shard(c.shard),
		Header: nats.Header{
			bus.HeaderCmd:  {bus.CmdJoin},
			bus.HeaderConn: {c.id},
			bus.HeaderRoom: {room},
		},
	}
	reply, err := c.svc.nc.RequestMsgWithContext(ctx, msg)
	switch {
	case err == nil:
		return replyError(reply, bus.CmdJoin, c.id)
	case errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("%w: join %s: shard %s", ErrShardGone, c.id, c.shard)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return fmt.Errorf("%w: join %s: %w", ErrTimeout, c.id, err)
	default:
		return fmt.Errorf("service: join %s: %w", c.id, err)
	}
}

// replyError maps a shard's reply to a command to an error, nil on success.
func replyError(reply *nats.Msg, cmd, id string) error {
	msg := reply.Header.Get(bus.HeaderError)
	switch msg {
	case "":
		return nil
	case bus.ErrTextNoConn:
		return fmt.Errorf("%w: %s %s", ErrNoConnection, cmd, id)
	case bus.ErrTextInvalidRoom:
		return fmt.Errorf("%w: %s %s", ErrInvalidRoom, cmd, id)
	}
	return fmt.Errorf("%w: %s %s: %s", ErrCommand, cmd, id, msg)
}

// Leave removes the connection from room. It does not wait for the shard.
func (c *Conn) Leave(room string) error {
	if err := bus.ValidRoom(room); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidRoom, err)
	}
	return c.svc.publish(c.svc.subjects.Shard(c.shard), nats.Header{
		bus.HeaderCmd:  {bus.CmdLeave},
		bus.HeaderConn: {c.id},
		bus.HeaderRoom: {room},
	}, nil)
}

// Identify binds user to the connection: the shard puts it in the
// Shoal-User header of the connection's later events. It does not wait for
// the shard.
func (c *Conn) Identify(user string) error {
	if strings.ContainsFunc(user, isControl) {
		return fmt.Errorf("%w: %q", ErrInvalidUser, user)
	}
	return c.svc.publish(c.svc.subjects.Shard(c.shard), nats.Header{
		bus.HeaderCmd:  {bus.CmdIdentify},
		bus.HeaderConn: {c.id},
		bus.HeaderUser: {user},
	}, nil)
}

// Close asks the shard to close the connection with code (0 means
// CloseNormal) and reason. A reason longer than a close frame allows (123
// bytes) is cut at a character boundary; control characters become spaces.
// It does not wait for the shard.
func (c *Conn) Close(code int, reason string) error {
	if code == 0 {
		code = CloseNormal
	}
	if !validCloseCode(code) {
		return fmt.Errorf("%w: %d", ErrInvalidCloseCode, code)
	}
	return c.svc.publish(c.svc.subjects.Shard(c.shard), nats.Header{
		bus.HeaderCmd:         {bus.CmdClose},
		bus.HeaderConn:        {c.id},
		bus.HeaderCloseCode:   {strconv.Itoa(code)},
		bus.HeaderCloseReason: {closeReason(reason)},
	}, nil)
}

// maxReason is a close frame's 125-byte payload less the 2-byte code.
const maxReason = 123

func closeReason(r string) string {
	if strings.ContainsFunc(r, isControl) {
		r = strings.Map(func(c rune) rune {
			if isControl(c) {
				return ' '
			}
			return c
		}, r)
	}
	if !utf8.ValidString(r) {
		r = strings.ToValidUTF8(r, "?")
	}
	if len(r) <= maxReason {
		return r
	}
	n := maxReason
	for n > 0 && !utf8.RuneStart(r[n]) {
		n--
	}
	return r[:n]
}

func isControl(c rune) bool { return c < 0x20 || c == 0x7f }

func validCloseCode(code int) bool {
	return code >= 1000 && code <= 1003 || code >= 1007 && code <= 1014 || code >= 3000 && code <= 4999
}

func opcodeValue(op Opcode) (string, error) {
	switch op {
	case Text:
		return bus.OpcodeText, nil
	case Binary:
		return bus.OpcodeBinary, nil
	}
	return "", fmt.Errorf("%w: %d", ErrInvalidOpcode, op)
}
