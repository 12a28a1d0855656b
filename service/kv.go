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

// BucketConfig describes a key-value bucket. Name is required; the zero
// value of every other field means its default.
type BucketConfig struct {
	// Name of the bucket: [A-Za-z0-9_-]. JetStream keeps it in the stream
	// "KV_<Name>" on the subjects "$KV.<Name>.<key>".
	Name string
	// Description is shown by NATS tools.
	Description string
	// History is how many revisions are kept per key, 1 to 64 (default 1).
	History int
	// TTL removes keys not written for this long (default: never).
	TTL time.Duration
	// MaxValueSize bounds one value in bytes (default: the server's limit).
	MaxValueSize int32
	// Replicas overrides the Store's choice when the bucket is created.
	Replicas int
}

// Entry is one revision of a key.
type Entry struct {
	Key   string
	Value []byte
	// Revision is the bucket's sequence number of this write: it grows with
	// every write to the bucket, so it orders the writes of all keys.
	Revision uint64
	// Created is when the revision was written, by the server's clock.
	Created time.Time
	// Deleted marks a deletion (only watches report these).
	Deleted bool
}

// KV is a handle for one key-value bucket. Its methods are safe for
// concurrent use. Reads go through the bucket's stream leader, so a Get
// sees every write confirmed before it; writes with an expected revision
// are atomic, so two writers (two goroutines or two service instances)
// never overwrite each other unnoticed.
type KV struct {
	s      *Store
	name   string
	stream string // "KV_<name>"
	prefix string // "$KV.<name>."
	kv     jetstream.KeyValue
	info   jetstream.Stream
}

// KV returns a handle for the bucket cfg.Name, creating the bucket if it
// is missing. When it exists with another History, TTL or MaxValueSize,
// those are updated to cfg's, and its copies as StoreConfig.Replicas says.
func (s *Store) KV(ctx context.Context, cfg BucketConfig) (*KV, error) {
	if !validBucket(cfg.Name) {
		return nil, fmt.Errorf("%w: bucket name %q", ErrInvalidConfig, cfg.Name)
	}
	if cfg.History < 0 || cfg.History > jetstream.KeyValueMaxHistory {
		return nil, fmt.Errorf("%w: bucket %s: history %d not in 1..%d", ErrInvalidConfig, cfg.Name, cfg.History, jetstream.KeyValueMaxHistory)
	}
	if cfg.History == 0 {
		cfg.History = 1
	}
	jcfg := func(replicas int) jetstream.KeyValueConfig {
		return jetstream.KeyValueConfig{
			Bucket:       cfg.Name,
			Description:  cfg.Description,
			History:      uint8(cfg.History),
			TTL:          cfg.TTL,
			MaxValueSize: cfg.MaxValueSize,
			Storage:      jetstream.FileStorage,
			Replicas:     replicas,
		}
	}
	ctx, done, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	op := "open bucket " + cfg.Name
	kv, err := s.js.KeyValue(ctx, cfg.Name)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		mk := func(r int) (err error) {
			if cfg.Replicas > 0 {
				r = cfg.Replicas
			}
			kv, err = s.js.CreateKeyValue(ctx, jcfg(r))
			return err
		}
		if err = s.create(op, mk); errors.Is(err, jetstream.ErrBucketExists) {
			// Another instance created it first, perhaps differently.
			kv, err = s.js.KeyValue(ctx, cfg.Name)
		}
		if err != nil {
			return nil, storeError(op, ErrNoBucket, err)
		}
		s.log.Info("service: store: created bucket", "bucket", cfg.Name, "replicas", s.Replicas())
	case err != nil:
		return nil, storeError(op, ErrNoBucket, err)
	default:
		st, err := kv.Status(ctx)
		if err != nil {
			return nil, storeError(op, ErrNoBucket, err)
		}
		have := st.Config()
		r := s.replicasFor(have.Replicas, cfg.Replicas)
		limits := have.History != uint8(cfg.History) || have.TTL != cfg.TTL || have.MaxValueSize != cfg.MaxValueSize && cfg.MaxValueSize != 0
		if r != have.Replicas || limits {
			updated, err := s.js.UpdateKeyValue(ctx, jcfg(r))
			if err != nil && r != have.Replicas && placementError(err) {
				// Not enough servers for the copies yet: keep those it has,
				// and try again at the next open.
				s.log.Warn("service: store: cannot place more copies of the bucket yet", "bucket", cfg.Name, "replicas", have.Replicas, "want", r, "err", err)
				r, updated, err = have.Replicas, kv, nil
				if limits {
					updated, err = s.js.UpdateKeyValue(ctx, jcfg(r))
				}
			}
			if err != nil {
				return nil, storeError("update bucket "+cfg.Name, ErrNoBucket, err)
			}
			kv = updated
			s.log.Info("service: store: updated bucket", "bucket", cfg.Name, "history", cfg.History, "ttl", cfg.TTL, "replicas", r)
		}
	}
	info, err := s.js.Stream(ctx, "KV_"+cfg.Name)
	if err != nil {
		return nil, storeError(op, ErrNoBucket, err)
	}
	return &KV{s: s, name: cfg.Name, stream: "KV_" + cfg.Name, prefix: "$KV." + cfg.Name + ".", kv: kv, info: info}, nil
}

// Name returns the bucket's name.
func (kv *KV) Name() string { return kv.name }

// KV-Operation header values, as every NATS client library writes them.
const (
	kvOpHeader = "KV-Operation"
	kvOpDel    = "DEL"
	kvOpPurge  = "PURGE"
)

// Get returns the current value of key, or ErrNotFound if it has none.
func (kv *KV) Get(ctx context.Context, key string) (Entry, error) {
	e, err := kv.last(ctx, key)
	if err == nil && e.Deleted {
		return Entry{}, fmt.Errorf("%w: %s: %s", ErrNotFound, kv.name, key)
	}
	return e, err
}

// last returns the latest revision of key, a deletion included.
func (kv *KV) last(ctx context.Context, key string) (Entry, error) {
	if !validKey(key) {
		return Entry{}, fmt.Errorf("%w: %q", ErrInvalidKey, key)
	}
	m, err := kv.s.leaderGet(ctx, kv.stream, msgGetRequest{LastFor: kv.prefix + key}, ErrNoBucket)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return Entry{}, fmt.Errorf("%w: %s: %s", ErrNotFound, kv.name, key)
		}
		return Entry{}, err
	}
	return Entry{
		Key:      key,
		Value:    m.Data,
		Revision: m.Seq,
		Created:  m.Time,
		Deleted:  deletion(m.Header),
	}, nil
}

// deletion reports whether a stored message's headers mark a deletion: a
// delete or purge, or a marker the server left when a TTL removed a key.
func deletion(h nats.Header) bool {
	switch h.Get(kvOpHeader) {
	case kvOpDel, kvOpPurge:
		return true
	}
	return h.Get(jetstream.MarkerReasonHeader) != ""
}

// Put writes value whatever the current revision and returns the new one.
func (kv *KV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	return kv.write(ctx, key, value, nil, "put")
}

// Create writes value only if key has none (never written, or deleted)
// and returns the new revision; ErrKeyExists if it has one.
func (kv *KV) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	expect := uint64(0)
	for attempt := 0; ; attempt++ {
		rev, err := kv.write(ctx, key, value, &expect, "create")
		if !errors.Is(err, ErrRevisionConflict) {
			return rev, err
		}
		// Something is stored under key; a deletion marker can be replaced.
		e, gerr := kv.last(ctx, key)
		switch {
		case errors.Is(gerr, ErrNotFound) && attempt == 0:
			expect = 0 // removed in between (TTL): try once more
		case gerr != nil && !errors.Is(gerr, ErrNotFound):
			return 0, gerr
		case gerr == nil && e.Deleted && attempt == 0:
			expect = e.Revision
		default:
			return 0, fmt.Errorf("%w: %s: %s", ErrKeyExists, kv.name, key)
		}
	}
}

// Update writes value only if the current revision of key is rev, and
// returns the new one; ErrRevisionConflict if another write came first.
func (kv *KV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	return kv.write(ctx, key, value, &rev, "update")
}

// Delete removes key's value and returns the revision of the deletion,
// which orders it among the bucket's writes. With rev > 0 it deletes only
// if the current revision is rev (ErrRevisionConflict otherwise); with 0
// it deletes whatever is there. Deleting a missing key is not an error.
func (kv *KV) Delete(ctx context.Context, key string, rev uint64) (uint64, error) {
	if !validKey(key) {
		return 0, fmt.Errorf("%w: %q", ErrInvalidKey, key)
	}
	var expect *uint64
	if rev > 0 {
		expect = &rev
	}
	return kv.publish(ctx, &nats.Msg{Subject: kv.prefix + key, Header: nats.Header{kvOpHeader: {kvOpDel}}}, expect, "delete "+key)
}

func (kv *KV) write(ctx context.Context, key string, value []byte, expect *uint64, op string) (uint64, error) {
	if !validKey(key) {
		return 0, fmt.Errorf("%w: %q", ErrInvalidKey, key)
	}
	return kv.publish(ctx, &nats.Msg{Subject: kv.prefix + key, Data: value}, expect, op+" "+key)
}

func (kv *KV) publish(ctx context.Context, m *nats.Msg, expect *uint64, op string) (uint64, error) {
	ctx, done, err := kv.s.acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer done()
	var opts []jetstream.PublishOpt
	if expect != nil {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(*expect))
	}
	op = kv.name + ": " + op
	ack, err := kv.s.js.PublishMsg(ctx, m, opts...)
	if errors.Is(err, jetstream.ErrNoStreamResponse) {
		return 0, kv.s.noResponse(ctx, op, kv.stream, ErrNoBucket, err)
	}
	if err != nil {
		return 0, storeError(op, ErrNoBucket, err)
	}
	return ack.Sequence, nil
}

// LastRevision returns the revision of the bucket's latest write, of any
// key. A watcher that has seen this revision has seen every write
// confirmed before the call.
func (kv *KV) LastRevision(ctx context.Context) (uint64, error) {
	ctx, done, err := kv.s.acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer done()
	info, err := kv.info.Info(ctx)
	if err != nil {
		return 0, storeError(kv.name+": info", ErrNoBucket, err)
	}
	return info.State.LastSeq, nil
}

// Watch follows the keys matching pattern ("*" matches one token, ">" the
// rest; ">" alone is every key). Its channel first carries the current
// value of every matching key, then one Entry with an empty Key marking
// that the current values are complete, then every later write and
// deletion, in revision order, each once. When the connection
// reconnected (the server may have restarted and forgotten the watch), it
// starts again after the last revision it delivered; a write that a later
// write to the same key replaced in between is gone from the bucket (it
// keeps History revisions per key) and is skipped, so a copy kept from the
// watch still ends up with every key's latest value.
func (kv *KV) Watch(ctx context.Context, pattern string) (*Watcher, error) {
	w := &Watcher{
		kv:      kv,
		pattern: pattern,
		out:     make(chan Entry, 256),
		stop:    make(chan struct{}),
	}
	reconnects := kv.s.nc.Stats().Reconnects
	nw, err := w.open(ctx)
	if err != nil {
		return nil, err
	}
	w.wg.Go(func() { w.pump(nw, reconnects) })
	return w, nil
}

// Watcher is a running KV.Watch.
type Watcher struct {
	kv      *KV
	pattern string
	out     chan Entry
	stop    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
}

// natsWatch is one nats.go watch and the context that keeps it alive.
type natsWatch struct {
	w      jetstream.KeyWatcher
	cancel context.CancelFunc
}

// resumeCheck is how often a watch looks whether its connection
// reconnected.
const resumeCheck = 250 * time.Millisecond

// open starts a nats.go watch: of the current values when nothing was
// delivered yet, else of every write after the last one delivered.
func (w *Watcher) open(ctx context.Context, opts ...jetstream.WatchOpt) (natsWatch, error) {
	kv := w.kv
	// nats.go ends a watch when the context given to it ends, so it gets
	// one that lives until the watch is dropped; the creation is bounded
	// apart, by ctx and the store's timeout.
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	timer := time.AfterFunc(kv.s.timeout, cancel)
	unhook := context.AfterFunc(ctx, cancel)
	nw, err := kv.kv.Watch(wctx, w.pattern, opts...)
	fired := !timer.Stop()
	if !unhook() || fired {
		if err == nil {
			_ = nw.Stop()
		}
		err = fmt.Errorf("%w: %s: watch %s: %w", ErrUnavailable, kv.name, w.pattern, context.DeadlineExceeded)
	}
	if err != nil {
		cancel()
		return natsWatch{}, storeError(kv.name+": watch "+w.pattern, ErrNoBucket, err)
	}
	return natsWatch{w: nw, cancel: cancel}, nil
}

// Updates returns the watch's channel. It is closed after Stop, or when
// the connection closed.
func (w *Watcher) Updates() <-chan Entry { return w.out }

// Stop ends the watch and waits for its goroutines; safe to call twice.
// It asks JetStream to drop the watch's consumer, so while JetStream does
// not answer it waits for nats.go's JetStream timeout (5s).
func (w *Watcher) Stop() {
	w.once.Do(func() { close(w.stop) })
	w.wg.Wait()
}

// drop ends a nats.go watch. It reads the watch's channel until nats.go
// closes it, since nats.go's callback blocks on a full channel and would
// never let the subscription end.
func (w *Watcher) drop(nw natsWatch) {
	_ = nw.w.Stop()
	nw.cancel()
	for range nw.w.Updates() {
	}
}

// pump delivers the entries of the current nats.go watch, and replaces it
// after a reconnect by one that resumes after the last revision
// delivered; entries at or below it (the old watch's last ones, or the
// new watch's first) are dropped, so each revision comes once.
func (w *Watcher) pump(nw natsWatch, reconnects uint64) {
	defer close(w.out)
	tick := time.NewTicker(resumeCheck)
	defer tick.Stop()
	var last uint64
	marked := false
	for {
		select {
		case <-w.stop:
			w.drop(nw)
			return
		case e, ok := <-nw.w.Updates():
			if !ok {
				// The connection closed for good.
				nw.cancel()
				return
			}
			var out Entry
			if e == nil {
				if marked {
					continue // a resumed watch's end of "current values"
				}
				marked = true
			} else {
				if e.Revision() <= last {
					continue
				}
				last = e.Revision()
				out = Entry{
					Key:      e.Key(),
					Value:    e.Value(),
					Revision: e.Revision(),
					Created:  e.Created(),
					Deleted:  e.Operation() != jetstream.KeyValuePut,
				}
			}
			select {
			case w.out <- out:
			case <-w.stop:
				w.drop(nw)
				return
			}
		case <-tick.C:
			nc := w.kv.s.nc
			if n := nc.Stats().Reconnects; n != reconnects && nc.IsConnected() {
				var opts []jetstream.WatchOpt
				if last > 0 {
					opts = []jetstream.WatchOpt{jetstream.IncludeHistory(), jetstream.ResumeFromRevision(last + 1)}
				}
				ctx, cancel := context.WithTimeout(context.Background(), w.kv.s.timeout)
				fresh, err := w.open(ctx, opts...)
				cancel()
				if err != nil {
					w.kv.s.log.Warn("service: store: resume watch", "bucket", w.kv.name, "pattern", w.pattern, "err", err)
					continue // tried again at the next tick
				}
				w.kv.s.log.Debug("service: store: watch resumed", "bucket", w.kv.name, "after", last)
				old := nw
				nw, reconnects = fresh, n
				w.wg.Go(func() { w.drop(old) })
			}
		}
	}
}

// validBucket applies JetStream's rule for bucket names.
func validBucket(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !tokenByte(name[i]) {
			return false
		}
	}
	return true
}

// validKey applies the key-value rule for keys: dot-separated non-empty
// tokens of [A-Za-z0-9_=/-].
func validKey(key string) bool {
	if key == "" || key[0] == '.' || key[len(key)-1] == '.' {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case tokenByte(c), c == '=', c == '/':
		case c == '.' && key[i-1] != '.':
		default:
			return false
		}
	}
	return true
}

func tokenByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}
