// Package chattest is a WebSocket client of the chat protocol
// (service/chat/PROTOCOL.md) for tests: it decodes every server message
// and lets a test wait for the one it expects while keeping the others.
package chattest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// Frame is any server message, decoded; Raw is it as it came.
type Frame struct {
	Type     string          `json:"type"`
	ID       json.RawMessage `json:"id"`
	Code     string          `json:"code"`
	Message  string          `json:"message"`
	Room     string          `json:"room"`
	User     string          `json:"user"`
	Token    string          `json:"token"`
	Expires  string          `json:"expires"`
	Text     string          `json:"text"`
	Event    string          `json:"event"`
	Epoch    string          `json:"epoch"`
	TS       string          `json:"ts"`
	Seq      uint64          `json:"seq"`
	Prev     uint64          `json:"prev"`
	Rev      uint64          `json:"rev"`
	Members  []string        `json:"members"`
	History  []Frame         `json:"history"`
	Messages []Frame         `json:"messages"`
	More     bool            `json:"more"`
	Rooms    []Room          `json:"rooms"`
	Raw      string          `json:"-"`
}

// Room is an entry of a rooms reply.
type Room struct {
	Room    string `json:"room"`
	Members int    `json:"members"`
}

// Client is one connection. Await, Call and Pending take from one queue:
// call them from one goroutine at a time.
type Client struct {
	// User and Token are the caller's to keep: who the connection is.
	User, Token string

	conn  net.Conn
	w     sync.Mutex // serializes writes: the reader answers pings
	in    chan Frame
	queue []Frame
	ids   int
}

// Dial connects to base + "/ws/chat" (base is "ws://host:port"), with
// token in the query unless it is "".
func Dial(ctx context.Context, base, token string) (*Client, error) {
	u := base + "/ws/chat"
	if token != "" {
		u += "?token=" + url.QueryEscape(token)
	}
	conn, br, _, err := ws.Dial(ctx, u)
	if err != nil {
		return nil, err
	}
	var rd io.Reader = conn
	if br != nil {
		// Frames the server sent right after its handshake answer.
		rd = io.MultiReader(br, conn)
	}
	c := &Client{conn: conn, in: make(chan Frame, 4096)}
	go c.read(bufio.NewReader(rd))
	return c, nil
}

// read decodes frames until the connection ends, then closes c.in.
func (c *Client) read(rd io.Reader) {
	defer close(c.in)
	rw := struct {
		io.Reader
		io.Writer
	}{rd, writerFunc(func(p []byte) (int, error) {
		c.w.Lock()
		defer c.w.Unlock()
		return c.conn.Write(p)
	})}
	for {
		data, _, err := wsutil.ReadServerData(rw)
		if err != nil {
			return
		}
		var f Frame
		if err := json.Unmarshal(data, &f); err != nil {
			f = Frame{Type: "undecodable"}
		}
		f.Raw = string(data)
		c.in <- f
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// Close closes the connection without a close handshake, as a client
// that vanishes does.
func (c *Client) Close() error { return c.conn.Close() }

// LocalPort is the client's own port.
func (c *Client) LocalPort() int { return c.conn.LocalAddr().(*net.TCPAddr).Port }

// Send sends one text frame.
func (c *Client) Send(text string) error {
	c.w.Lock()
	defer c.w.Unlock()
	return wsutil.WriteClientText(c.conn, []byte(text))
}

// SendBinary sends one binary frame.
func (c *Client) SendBinary(p []byte) error {
	c.w.Lock()
	defer c.w.Unlock()
	return wsutil.WriteClientBinary(c.conn, p)
}

// Await returns the first frame, queued ones first, that matches; the
// others stay queued. what names the frame in the error.
func (c *Client) Await(what string, timeout time.Duration, match func(Frame) bool) (Frame, error) {
	for i, f := range c.queue {
		if match(f) {
			c.queue = slices.Delete(c.queue, i, i+1)
			return f, nil
		}
	}
	deadline := time.After(timeout)
	for {
		select {
		case f, ok := <-c.in:
			if !ok {
				return Frame{}, fmt.Errorf("%s: connection closed while waiting for %s", c.User, what)
			}
			if match(f) {
				return f, nil
			}
			c.queue = append(c.queue, f)
		case <-deadline:
			return Frame{}, fmt.Errorf("%s: no %s within %v; queued: %v", c.User, what, timeout, c.Raws())
		}
	}
}

// Call sends msg with a fresh numeric "id" and waits for the answer
// that echoes it.
func (c *Client) Call(timeout time.Duration, msg map[string]any) (Frame, error) {
	c.ids++
	id := strconv.Itoa(c.ids)
	msg["id"] = c.ids
	b, err := json.Marshal(msg)
	if err != nil {
		return Frame{}, err
	}
	if err := c.Send(string(b)); err != nil {
		return Frame{}, err
	}
	return c.Await("answer to "+string(b), timeout, func(f Frame) bool { return string(f.ID) == id })
}

// Pending returns the frames received and not taken yet, those that have
// arrived by now included; they stay queued.
func (c *Client) Pending() []Frame {
	for {
		select {
		case f, ok := <-c.in:
			if !ok {
				return c.queue
			}
			c.queue = append(c.queue, f)
		default:
			return c.queue
		}
	}
}

// Raws returns the queued frames as they came, for error messages.
func (c *Client) Raws() []string {
	out := make([]string, len(c.queue))
	for i, f := range c.queue {
		out[i] = f.Raw
	}
	return out
}
