package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults for the zero values of StoreConfig.
const (
	// DefaultMaxInFlight bounds the storage requests a Store has
	// outstanding at once.
	DefaultMaxInFlight = 256
	// DefaultStoreTimeout bounds a storage request whose context has no
	// deadline.
	DefaultStoreTimeout = 5 * time.Second
)

// clusterReplicas is the replica count chosen when the NATS server is part
// of a cluster: three copies survive the loss of one node with a quorum
// left, and more copies only slow every write down.
const clusterReplicas = 3

// StoreConfig configures a Store. The zero value of every field means its
// default.
type StoreConfig struct {
	// Replicas is the number of copies of every bucket and stream the Store
	// creates. Default: from the cluster size, 1 on a single server
	// (the embedded one included) and 3 when the server is part of a
	// cluster whose JetStream can place 3 copies. An existing bucket or
	// stream gets the configured count; without one, it keeps its copies
	// or gains copies up to the cluster's, never losing any.
	Replicas int
	// MaxInFlight bounds the storage requests outstanding at once over
	// the connection (default DefaultMaxInFlight); a request beyond it
	// waits for a slot, within its context's deadline.
	MaxInFlight int
	// Timeout bounds a request whose context has no deadline (default
	// DefaultStoreTimeout). The wait for a slot counts.
	Timeout time.Duration
	// Logger receives what the Store creates and changes; default discards.
	Logger *slog.Logger
}

// Store is a service's storage on JetStream: key-value buckets (KV) and
// streams (Stream), created on first use when missing. It shares the
// service's NATS connection: every handle is safe for concurrent use by
// any number of handler goroutines, and the Store bounds how many requests
// they have in flight together.
type Store struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	log     *slog.Logger
	timeout time.Duration
	slots   chan struct{}
	fixed   int // StoreConfig.Replicas

	mu       sync.Mutex
	replicas int // chosen for new buckets and streams; 0 until known
}

// OpenStore returns a Store on nc, which the caller owns and closes after
// the last use of the Store. It makes no request: buckets and streams are
// looked up or created by KV and Stream.
func OpenStore(nc *nats.Conn, cfg StoreConfig) (*Store, error) {
	if nc == nil {
		return nil, fmt.Errorf("%w: nil NATS connection", ErrInvalidConfig)
	}
	if cfg.Replicas < 0 || cfg.MaxInFlight < 0 || cfg.Timeout < 0 {
		return nil, fmt.Errorf("%w: negative store setting", ErrInvalidConfig)
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultStoreTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(cfg.Timeout))
	if err != nil {
		return nil, fmt.Errorf("service: store: %w", err)
	}
	return &Store{
		nc:      nc,
		js:      js,
		log:     cfg.Logger,
		timeout: cfg.Timeout,
		slots:   make(chan struct{}, cfg.MaxInFlight),
		fixed:   cfg.Replicas,
	}, nil
}

// acquire takes an in-flight slot and gives ctx the store's deadline if it
// has none. The caller calls done when the request finished.
func (s *Store) acquire(ctx context.Context) (context.Context, func(), error) {
	cancel := context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		ctx, cancel = context.WithTimeout(ctx, s.timeout)
	}
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		cancel()
		return nil, nil, fmt.Errorf("%w: waiting for a request slot: %w", ErrUnavailable, ctx.Err())
	}
	return ctx, func() {
		<-s.slots
		cancel()
	}, nil
}

// Replicas reports how many copies new buckets and streams get: the
// configured number, or one chosen from the cluster (see StoreConfig).
func (s *Store) Replicas() int {
	if s.fixed > 0 {
		return s.fixed
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.replicas == 0 {
		// The server names its cluster in INFO only when it has one; a
		// lone server (the embedded one) cannot hold more than one copy.
		if s.nc.ConnectedClusterName() == "" {
			return 1
		}
		return clusterReplicas
	}
	return s.replicas
}

// create runs mk with the chosen replicas. When JetStream says it cannot
// place that many copies (a cluster of two, or servers without
// JetStream), it settles on one copy, remembers that for later creations,
// and runs mk again: JetStream's own answer is the real cluster size.
func (s *Store) create(what string, mk func(replicas int) error) error {
	r := s.Replicas()
	err := mk(r)
	if err == nil || r == 1 || s.fixed > 0 || !placementError(err) {
		return err
	}
	s.log.Warn("service: store: cannot place copies, using one", "what", what, "replicas", r, "err", err)
	s.mu.Lock()
	s.replicas = 1
	s.mu.Unlock()
	return mk(1)
}

// replicasFor is how many copies an existing bucket or stream should
// have: the count configured for it or for the Store, when one is;
// otherwise at least what the cluster holds now. So one made with a single
// copy while part of the cluster was down (see create) gets its copies at
// the next open once the cluster can place them, and never fewer.
func (s *Store) replicasFor(have, configured int) int {
	switch {
	case configured > 0:
		return configured
	case s.fixed > 0:
		return s.fixed
	}
	return max(have, s.Replicas())
}

// placementError reports JetStream's refusals of a replica count.
func placementError(err error) bool {
	var ae *jetstream.APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.ErrorCode {
	case 10005, // no suitable peers for placement
		10023, // insufficient resources
		10074: // replicas > 1 not supported in non-clustered mode
		return true
	}
	return false
}

// storeError maps an error of nats.go or JetStream to this package's
// sentinels; missing is the sentinel for a bucket or stream not found.
func storeError(op string, missing, err error) error {
	if err == nil {
		return nil
	}
	var ae *jetstream.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode {
		case jetstream.JSErrCodeStreamWrongLastSequence, jetstream.JSErrCodeStreamWrongLastSequenceConstant:
			return fmt.Errorf("%w: %s: %w", ErrRevisionConflict, op, err)
		case jetstream.JSErrCodeStreamNotFound:
			return fmt.Errorf("%w: %s: %w", missing, op, err)
		case jetstream.JSErrCodeMessageNotFound:
			return fmt.Errorf("%w: %s", ErrNotFound, op)
		case jetstream.JSErrCodeStreamMessageExceedsMaximum:
			return fmt.Errorf("%w: %s: %w", ErrTooLarge, op, err)
		case jetstream.JSErrCodeJetStreamNotEnabled, jetstream.JSErrCodeJetStreamNotEnabledForAccount,
			10008: // JetStream system temporarily unavailable
			return fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)
		}
	}
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrMsgNotFound):
		return fmt.Errorf("%w: %s", ErrNotFound, op)
	case errors.Is(err, jetstream.ErrBucketNotFound), errors.Is(err, jetstream.ErrStreamNotFound):
		return fmt.Errorf("%w: %s: %w", missing, op, err)
	case errors.Is(err, jetstream.ErrInvalidKey):
		return fmt.Errorf("%w: %s", ErrInvalidKey, op)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionDraining),
		errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrServerShutdown):
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("service: store: %s: %w", op, err)
	}
	return fmt.Errorf("service: store: %s: %w", op, err)
}

// noResponse refines an answer nobody gave: a publish to a subject no
// stream captures, or a direct get nobody serves, means either that the
// stream is gone or that JetStream is. Asking JetStream tells which.
func (s *Store) noResponse(ctx context.Context, op, stream string, missing, err error) error {
	if _, serr := s.js.Stream(ctx, stream); errors.Is(serr, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("%w: %s: stream %s", missing, op, stream)
	}
	return storeError(op, missing, err)
}

// leaderGet reads one message through the stream leader
// ($JS.API.STREAM.MSG.GET), not a direct get that any replica may answer:
// what a write confirmed before is always seen, which revision checks
// rely on.
func (s *Store) leaderGet(ctx context.Context, stream string, req msgGetRequest, missing error) (Msg, error) {
	body, _ := json.Marshal(req)
	ctx, done, err := s.acquire(ctx)
	if err != nil {
		return Msg{}, err
	}
	defer done()
	op := "get from " + stream
	reply, err := s.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+stream, body)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return Msg{}, fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)
		}
		return Msg{}, storeError(op, missing, err)
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Subject string    `json:"subject"`
			Seq     uint64    `json:"seq"`
			Header  []byte    `json:"hdrs"`
			Data    []byte    `json:"data"`
			Time    time.Time `json:"time"`
		} `json:"message"`
	}
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return Msg{}, fmt.Errorf("service: store: %s: bad reply: %w", op, err)
	}
	if resp.Error != nil {
		return Msg{}, storeError(op, missing, resp.Error)
	}
	if resp.Message == nil {
		return Msg{}, fmt.Errorf("service: store: %s: reply without a message", op)
	}
	m := Msg{Subject: resp.Message.Subject, Seq: resp.Message.Seq, Time: resp.Message.Time, Data: resp.Message.Data}
	if len(resp.Message.Header) > 0 {
		if m.Header, err = nats.DecodeHeadersMsg(resp.Message.Header); err != nil {
			return Msg{}, fmt.Errorf("service: store: %s: bad headers: %w", op, err)
		}
	}
	return m, nil
}

// msgGetRequest is the body of JetStream's message get APIs.
type msgGetRequest struct {
	Seq      uint64 `json:"seq,omitempty"`
	LastFor  string `json:"last_by_subj,omitempty"`
	NextFor  string `json:"next_by_subj,omitempty"`
	Batch    int    `json:"batch,omitempty"`
	MaxBytes int    `json:"max_bytes,omitempty"`
}

// directBatch asks the stream's direct get API for up to req.Batch (at
// least 1) messages and returns them with the number of matching messages left
// after the last one. Any replica may answer, so a write confirmed a
// moment ago may be missing: fine for reading history, not for checks.
func (s *Store) directBatch(ctx context.Context, stream string, req msgGetRequest, missing error) ([]Msg, uint64, error) {
	body, _ := json.Marshal(req)
	ctx, done, err := s.acquire(ctx)
	if err != nil {
		return nil, 0, err
	}
	defer done()
	op := "read " + stream
	inbox := s.nc.NewInbox()
	sub, err := s.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, 0, storeError(op, missing, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := s.nc.PublishRequest("$JS.API.DIRECT.GET."+stream, inbox, body); err != nil {
		return nil, 0, storeError(op, missing, err)
	}
	var msgs []Msg
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, 0, s.noResponse(ctx, op, stream, missing, err)
		}
		if err != nil {
			return nil, 0, storeError(op, missing, err)
		}
		switch status := m.Header.Get("Status"); status {
		case "":
		case "204": // end of batch
			left, _ := strconv.ParseUint(m.Header.Get(numPendingHeader), 10, 64)
			return msgs, left, nil
		case "404": // nothing matches
			return msgs, 0, nil
		default:
			return nil, 0, fmt.Errorf("service: store: %s: status %s %s", op, status, m.Header.Get("Description"))
		}
		seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
		if err != nil {
			return nil, 0, fmt.Errorf("service: store: %s: bad sequence header %q", op, m.Header.Get(jetstream.SequenceHeader))
		}
		ts, _ := time.Parse(time.RFC3339Nano, m.Header.Get(jetstream.TimeStampHeaer))
		msgs = append(msgs, Msg{
			Subject: m.Header.Get(jetstream.SubjectHeader),
			Seq:     seq,
			Time:    ts,
			Header:  m.Header,
			Data:    m.Data,
		})
	}
}

// numPendingHeader is set by a batched direct get on every message and on
// the end-of-batch marker: how many matching messages follow.
const numPendingHeader = "Nats-Num-Pending"
