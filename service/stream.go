package service

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// StreamConfig describes a stream. Name and Subjects are required; the
// zero value of every other field means its default.
type StreamConfig struct {
	// Name of the stream: [A-Za-z0-9_-].
	Name string
	// Description is shown by NATS tools.
	Description string
	// Subjects the stream stores, wildcards allowed.
	Subjects []string
	// MaxMsgsPerSubject keeps only the newest this many messages of each
	// subject (default: no limit).
	MaxMsgsPerSubject int64
	// MaxAge removes messages older than this (default: never).
	MaxAge time.Duration
	// MaxBytes bounds the stream's size; the oldest messages go first
	// (default: no limit).
	MaxBytes int64
	// MaxMsgSize bounds one message (default: the server's limit).
	MaxMsgSize int32
	// Duplicates is the window in which an append with a message id already
	// stored is dropped as a duplicate (default 2 minutes).
	Duplicates time.Duration
	// Replicas overrides the Store's choice when the stream is created.
	Replicas int
}

// Msg is a stored message.
type Msg struct {
	Subject string
	// Seq is the stream sequence: it grows with every message of the
	// stream, whatever its subject.
	Seq uint64
	// Time is when the message was stored, by the server's clock.
	Time time.Time
	// Header holds the headers it was stored with, and JetStream's own
	// (Nats-Sequence, Nats-Subject, ...) on messages read in ranges.
	Header nats.Header
	Data   []byte
}

// Stream is a handle for one stream. Its methods are safe for concurrent
// use. Single reads (Get, LastOf) go through the stream leader and see
// every append confirmed before them; range reads (Range, Last) use the
// direct get API that any replica may answer, which is faster but may
// miss an append confirmed a moment ago on a replicated stream.
type Stream struct {
	s    *Store
	cfg  StreamConfig
	jcfg func(replicas int) jetstream.StreamConfig

	mu      sync.Mutex
	js      jetstream.Stream
	created time.Time
}

// Stream returns a handle for the stream cfg.Name, creating it if it is
// missing. When it exists with other subjects or limits, those are
// updated to cfg's; its replicas stay.
func (s *Store) Stream(ctx context.Context, cfg StreamConfig) (*Stream, error) {
	if !validBucket(cfg.Name) {
		return nil, fmt.Errorf("%w: stream name %q", ErrInvalidConfig, cfg.Name)
	}
	if len(cfg.Subjects) == 0 {
		return nil, fmt.Errorf("%w: stream %s: no subjects", ErrInvalidConfig, cfg.Name)
	}
	if cfg.Duplicates == 0 {
		cfg.Duplicates = 2 * time.Minute
	}
	st := &Stream{s: s, cfg: cfg}
	st.jcfg = func(replicas int) jetstream.StreamConfig {
		limit := func(v int64) int64 {
			if v == 0 {
				return -1
			}
			return v
		}
		size := cfg.MaxMsgSize
		if size == 0 {
			size = -1
		}
		return jetstream.StreamConfig{
			Name:              cfg.Name,
			Description:       cfg.Description,
			Subjects:          cfg.Subjects,
			MaxMsgsPerSubject: limit(cfg.MaxMsgsPerSubject),
			MaxAge:            cfg.MaxAge,
			MaxBytes:          limit(cfg.MaxBytes),
			MaxMsgs:           -1,
			MaxConsumers:      -1,
			MaxMsgSize:        size,
			Duplicates:        cfg.Duplicates,
			Storage:           jetstream.FileStorage,
			Discard:           jetstream.DiscardOld,
			Replicas:          replicas,
			// Range reads use the batched direct get API.
			AllowDirect: true,
		}
	}
	if err := st.Ensure(ctx); err != nil {
		return nil, err
	}
	return st, nil
}

// Ensure creates the stream again if it is missing (deleted after the
// handle was made), brings its subjects and limits to the handle's
// config, and refreshes Created. A recreated stream starts over: its
// sequences mean nothing in the old one's terms, and Created tells them
// apart.
func (st *Stream) Ensure(ctx context.Context) error {
	s, cfg := st.s, st.cfg
	ctx, done, err := s.acquire(ctx)
	if err != nil {
		return err
	}
	defer done()
	op := "open stream " + cfg.Name
	js, err := s.js.Stream(ctx, cfg.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		mk := func(r int) (err error) {
			if cfg.Replicas > 0 {
				r = cfg.Replicas
			}
			js, err = s.js.CreateStream(ctx, st.jcfg(r))
			return err
		}
		if err = s.create(op, mk); errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// Another instance created it first.
			js, err = s.js.Stream(ctx, cfg.Name)
		}
		if err != nil {
			return storeError(op, ErrNoStream, err)
		}
		s.log.Info("service: store: created stream", "stream", cfg.Name, "replicas", js.CachedInfo().Config.Replicas)
	case err != nil:
		return storeError(op, ErrNoStream, err)
	default:
		have := js.CachedInfo().Config
		r := s.replicasFor(have.Replicas, cfg.Replicas)
		want := st.jcfg(r)
		if r != have.Replicas || !sameLimits(have, want) {
			updated, err := s.js.UpdateStream(ctx, want)
			if err != nil && r != have.Replicas && placementError(err) {
				// Not enough servers for the copies yet: keep those it has,
				// and try again at the next open.
				s.log.Warn("service: store: cannot place more copies of the stream yet", "stream", cfg.Name, "replicas", have.Replicas, "want", r, "err", err)
				r, want = have.Replicas, st.jcfg(have.Replicas)
				updated, err = js, nil
				if !sameLimits(have, want) {
					updated, err = s.js.UpdateStream(ctx, want)
				}
			}
			if err != nil {
				return storeError("update stream "+cfg.Name, ErrNoStream, err)
			}
			js = updated
			s.log.Info("service: store: updated stream", "stream", cfg.Name, "replicas", r)
		}
	}
	st.mu.Lock()
	st.js, st.created = js, js.CachedInfo().Created
	st.mu.Unlock()
	return nil
}

// sameLimits compares the parts of a stream's config a handle owns.
func sameLimits(a, b jetstream.StreamConfig) bool {
	if len(a.Subjects) != len(b.Subjects) {
		return false
	}
	for i := range a.Subjects {
		if a.Subjects[i] != b.Subjects[i] {
			return false
		}
	}
	return a.MaxMsgsPerSubject == b.MaxMsgsPerSubject && a.MaxAge == b.MaxAge &&
		a.MaxBytes == b.MaxBytes && a.MaxMsgSize == b.MaxMsgSize &&
		a.Duplicates == b.Duplicates && a.AllowDirect == b.AllowDirect
}

// Name returns the stream's name.
func (st *Stream) Name() string { return st.cfg.Name }

// Created returns when the stream was created, as of the last Ensure (or
// the handle's making). It changes when the stream was deleted and made
// again.
func (st *Stream) Created() time.Time {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.created
}

// Replicas returns the stream's copies, as of the last Ensure.
func (st *Stream) Replicas() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.js.CachedInfo().Config.Replicas
}

// StreamState is a stream's state at one moment.
type StreamState struct {
	Created  time.Time
	Msgs     uint64
	FirstSeq uint64
	LastSeq  uint64
}

// State asks the stream for its state.
func (st *Stream) State(ctx context.Context) (StreamState, error) {
	ctx, done, err := st.s.acquire(ctx)
	if err != nil {
		return StreamState{}, err
	}
	defer done()
	st.mu.Lock()
	js := st.js
	st.mu.Unlock()
	info, err := js.Info(ctx)
	if err != nil {
		return StreamState{}, storeError(st.cfg.Name+": info", ErrNoStream, err)
	}
	return StreamState{Created: info.Created, Msgs: info.State.Msgs, FirstSeq: info.State.FirstSeq, LastSeq: info.State.LastSeq}, nil
}

// AppendOption sets a per-call option of Append.
type AppendOption func(*appendOptions)

type appendOptions struct {
	msgID      string
	expect     uint64
	haveExpect bool
	header     nats.Header
}

// WithMsgID gives the message an id: a second append with the same id
// within the stream's Duplicates window is not stored again, and reports
// the first one's sequence with Appended.Duplicate set. Use it to retry an
// append whose answer was lost.
func WithMsgID(id string) AppendOption { return func(o *appendOptions) { o.msgID = id } }

// WithExpectLast stores the message only if the last message of its
// subject has sequence seq (0: the subject has none); otherwise Append
// fails with ErrRevisionConflict. Subjects whose appends all expect the
// last one form a chain that never forks, however many writers race.
func WithExpectLast(seq uint64) AppendOption {
	return func(o *appendOptions) { o.expect, o.haveExpect = seq, true }
}

// WithHeader stores the message with header h (not modified).
func WithHeader(h nats.Header) AppendOption { return func(o *appendOptions) { o.header = h } }

// Appended reports a stored message.
type Appended struct {
	Seq uint64
	// Duplicate is set when the message id was stored before: Seq is the
	// earlier message's, and this append stored nothing.
	Duplicate bool
}

// Append stores data on subject (one of the stream's subjects).
func (st *Stream) Append(ctx context.Context, subject string, data []byte, opts ...AppendOption) (Appended, error) {
	var o appendOptions
	for _, opt := range opts {
		opt(&o)
	}
	h := nats.Header{}
	for k, v := range o.header {
		h[k] = v
	}
	var popts []jetstream.PublishOpt
	if o.msgID != "" {
		popts = append(popts, jetstream.WithMsgID(o.msgID))
	}
	if o.haveExpect {
		popts = append(popts, jetstream.WithExpectLastSequencePerSubject(o.expect))
	}
	ctx, done, err := st.s.acquire(ctx)
	if err != nil {
		return Appended{}, err
	}
	defer done()
	op := st.cfg.Name + ": append to " + subject
	ack, err := st.s.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: h, Data: data}, popts...)
	if errors.Is(err, jetstream.ErrNoStreamResponse) {
		return Appended{}, st.s.noResponse(ctx, op, st.cfg.Name, ErrNoStream, err)
	}
	if err != nil {
		return Appended{}, storeError(op, ErrNoStream, err)
	}
	if ack.Stream != st.cfg.Name {
		return Appended{}, fmt.Errorf("%w: %s: subject stored by stream %s", ErrInvalidConfig, op, ack.Stream)
	}
	return Appended{Seq: ack.Sequence, Duplicate: ack.Duplicate}, nil
}

// Get returns the message with sequence seq, or ErrNotFound.
func (st *Stream) Get(ctx context.Context, seq uint64) (Msg, error) {
	return st.s.leaderGet(ctx, st.cfg.Name, msgGetRequest{Seq: seq}, ErrNoStream)
}

// LastOf returns the last message of subject, or ErrNotFound.
func (st *Stream) LastOf(ctx context.Context, subject string) (Msg, error) {
	return st.s.leaderGet(ctx, st.cfg.Name, msgGetRequest{LastFor: subject}, ErrNoStream)
}

// Range limits.
const (
	// rangePage bounds the messages of one direct get request.
	rangePage = 1000
	// rangeBytes bounds the bytes of one direct get request, so one read
	// cannot fill the connection's buffers.
	rangeBytes = 1 << 20
	// scanAll is how many messages of one subject Last reads from the
	// first before it searches for where the last ones start instead.
	scanAll = 512
)

// Range returns up to n messages of subject with sequences above after,
// oldest first, and whether more follow.
func (st *Stream) Range(ctx context.Context, subject string, after uint64, n int) ([]Msg, bool, error) {
	var out []Msg
	for n > 0 {
		batch := min(n, rangePage)
		page, left, err := st.s.directBatch(ctx, st.cfg.Name, msgGetRequest{
			Seq: after + 1, NextFor: subject, Batch: batch, MaxBytes: rangeBytes,
		}, ErrNoStream)
		if err != nil {
			return nil, false, err
		}
		out = append(out, page...)
		n -= len(page)
		if left == 0 || len(page) == 0 {
			return out, false, nil
		}
		after = page[len(page)-1].Seq
	}
	return out, true, nil
}

// Last returns the newest n messages of subject with sequences below
// before (0: no bound), oldest first, and whether older ones exist.
//
// A subject of up to a few hundred messages (a stream with
// MaxMsgsPerSubject keeps it so) is read from its start in one request;
// for a longer one Last finds where its newest n begin by bisecting the
// sequences with counting reads, a few dozen small requests at most.
func (st *Stream) Last(ctx context.Context, subject string, n int, before uint64) ([]Msg, bool, error) {
	if n <= 0 {
		return nil, false, nil
	}
	name := st.cfg.Name
	first, left, err := st.s.directBatch(ctx, name, msgGetRequest{
		Seq: 1, NextFor: subject, Batch: scanAll, MaxBytes: rangeBytes,
	}, ErrNoStream)
	if err != nil || len(first) == 0 {
		return nil, false, err
	}
	below := func(msgs []Msg) []Msg {
		if before == 0 {
			return msgs
		}
		k := len(msgs)
		for k > 0 && msgs[k-1].Seq >= before {
			k--
		}
		return msgs[:k]
	}
	if count(first[0]) <= scanAll {
		// The whole subject, in this page and (when max bytes cut it
		// short) the ones after it.
		all := first
		if left > 0 && (before == 0 || all[len(all)-1].Seq < before) {
			rest, _, err := st.Range(ctx, subject, all[len(all)-1].Seq, int(left))
			if err != nil {
				return nil, false, err
			}
			all = append(all, rest...)
		}
		all = below(all)
		if len(all) <= n {
			return all, false, nil
		}
		return all[len(all)-n:], true, nil
	}
	// Many messages: count those at or after before, then bisect for the
	// lowest sequence with n of them below before.
	var atOrAfter uint64
	if before > 0 {
		if atOrAfter, _, err = st.countFrom(ctx, subject, before); err != nil {
			return nil, false, err
		}
	}
	total := count(first[0]) - atOrAfter
	start := first[0].Seq
	more := total > uint64(n)
	if more {
		lo, hi := start, before-1
		if before == 0 {
			state, err := st.State(ctx)
			if err != nil {
				return nil, false, err
			}
			hi = state.LastSeq
		}
		for lo < hi {
			mid := lo + (hi-lo+1)/2
			c, seq, err := st.countFrom(ctx, subject, mid)
			if err != nil {
				return nil, false, err
			}
			if c > atOrAfter && c-atOrAfter >= uint64(n) {
				lo = seq
			} else {
				hi = mid - 1
			}
		}
		start = lo
	}
	msgs, _, err := st.Range(ctx, subject, start-1, n)
	if err != nil {
		return nil, false, err
	}
	return below(msgs), more, nil
}

// countFrom returns how many messages of subject have sequences at or
// above seq, and the sequence of the first of them.
func (st *Stream) countFrom(ctx context.Context, subject string, seq uint64) (uint64, uint64, error) {
	page, _, err := st.s.directBatch(ctx, st.cfg.Name, msgGetRequest{Seq: seq, NextFor: subject, Batch: 1}, ErrNoStream)
	if err != nil || len(page) == 0 {
		return 0, 0, err
	}
	return count(page[0]), page[0].Seq, nil
}

// count reads how many matching messages a batched direct get had left
// from this one on: the ones pending after it, and itself.
func count(m Msg) uint64 {
	var n uint64
	for _, c := range m.Header.Get(numPendingHeader) {
		if c < '0' || c > '9' {
			return 1
		}
		n = n*10 + uint64(c-'0')
	}
	return n + 1
}
