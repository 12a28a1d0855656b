package service_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/bus/bustest"
	"github.com/shoal-gw/shoal/service"
)

func openStore(t testing.TB, nc *nats.Conn, cfg service.StoreConfig) *service.Store {
	t.Helper()
	s, err := service.OpenStore(nc, cfg)
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	return s
}

func openKV(t testing.TB, s *service.Store, name string) *service.KV {
	t.Helper()
	kv, err := s.KV(context.Background(), service.BucketConfig{Name: name})
	if err != nil {
		t.Fatalf("KV %s: %v", name, err)
	}
	return kv
}

func wantErr(t testing.TB, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: err = %v, want %v", what, err, want)
	}
}

func must(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// TestKVOperations walks one key through every operation and its errors.
func TestKVOperations(t *testing.T) {
	ctx := context.Background()
	nc, _ := testBus(t)
	kv := openKV(t, openStore(t, nc, service.StoreConfig{}), "ops")

	_, err := kv.Get(ctx, "a.b")
	wantErr(t, "Get of a missing key", err, service.ErrNotFound)
	_, err = kv.Update(ctx, "a.b", []byte("x"), 1)
	wantErr(t, "Update of a missing key", err, service.ErrRevisionConflict)

	r1, err := kv.Create(ctx, "a.b", []byte("one"))
	must(t, "Create", err)
	_, err = kv.Create(ctx, "a.b", []byte("again"))
	wantErr(t, "second Create", err, service.ErrKeyExists)

	e, err := kv.Get(ctx, "a.b")
	must(t, "Get", err)
	if string(e.Value) != "one" || e.Revision != r1 || e.Key != "a.b" || e.Created.IsZero() {
		t.Fatalf("Get = %+v, want one at revision %d", e, r1)
	}

	_, err = kv.Update(ctx, "a.b", []byte("stale"), r1+100)
	wantErr(t, "Update with a wrong revision", err, service.ErrRevisionConflict)
	r2, err := kv.Update(ctx, "a.b", []byte("two"), r1)
	must(t, "Update", err)
	if r2 <= r1 {
		t.Fatalf("Update revision %d not after %d", r2, r1)
	}
	_, err = kv.Update(ctx, "a.b", []byte("late"), r1)
	wantErr(t, "Update with the previous revision", err, service.ErrRevisionConflict)

	r3, err := kv.Put(ctx, "a.b", []byte("three"))
	must(t, "Put", err)
	_, err = kv.Delete(ctx, "a.b", r2)
	wantErr(t, "Delete with a stale revision", err, service.ErrRevisionConflict)
	r4, err := kv.Delete(ctx, "a.b", r3)
	must(t, "Delete", err)
	if r4 <= r3 {
		t.Fatalf("Delete revision %d not after %d", r4, r3)
	}
	_, err = kv.Get(ctx, "a.b")
	wantErr(t, "Get after Delete", err, service.ErrNotFound)

	// A deleted key can be created again.
	r5, err := kv.Create(ctx, "a.b", []byte("reborn"))
	must(t, "Create after Delete", err)
	if e, err := kv.Get(ctx, "a.b"); err != nil || string(e.Value) != "reborn" || e.Revision != r5 {
		t.Fatalf("Get after re-create = %+v, %v", e, err)
	}

	for _, bad := range []string{"", ".a", "a.", "a..b", "a b", "a*", "a>", "ä"} {
		_, err := kv.Put(ctx, bad, nil)
		wantErr(t, fmt.Sprintf("Put %q", bad), err, service.ErrInvalidKey)
		_, err = kv.Get(ctx, bad)
		wantErr(t, fmt.Sprintf("Get %q", bad), err, service.ErrInvalidKey)
	}
}

// TestKVRevisionsRaceFree runs compare-and-set increments of one counter
// from many goroutines on two stores, each with its own connection as two
// service instances would have: no increment may be lost.
func TestKVRevisionsRaceFree(t *testing.T) {
	ctx := context.Background()
	srv := bustest.RunServer(t)
	kvs := []*service.KV{
		openKV(t, openStore(t, bustest.Connect(t, srv.ClientURL()), service.StoreConfig{MaxInFlight: 4}), "counter"),
		openKV(t, openStore(t, bustest.Connect(t, srv.ClientURL()), service.StoreConfig{MaxInFlight: 4}), "counter"),
	}
	const goroutines, each = 16, 10
	var wg sync.WaitGroup
	for g := range goroutines {
		kv := kvs[g%2]
		wg.Go(func() {
			for range each {
				for {
					e, err := kv.Get(ctx, "n")
					var rev uint64
					n := 0
					switch {
					case errors.Is(err, service.ErrNotFound):
					case err != nil:
						t.Error(err)
						return
					default:
						rev = e.Revision
						n, _ = strconv.Atoi(string(e.Value))
					}
					v := []byte(strconv.Itoa(n + 1))
					if rev == 0 {
						_, err = kv.Create(ctx, "n", v)
					} else {
						_, err = kv.Update(ctx, "n", v, rev)
					}
					if err == nil {
						break
					}
					if !errors.Is(err, service.ErrRevisionConflict) && !errors.Is(err, service.ErrKeyExists) {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	e, err := kvs[0].Get(ctx, "n")
	must(t, "Get", err)
	if got := string(e.Value); got != strconv.Itoa(goroutines*each) {
		t.Fatalf("counter = %s, want %d", got, goroutines*each)
	}
}

// TestKVWatch checks a watch's initial values, its marker, and the writes
// and deletions after it, in order.
func TestKVWatch(t *testing.T) {
	ctx := context.Background()
	nc, _ := testBus(t)
	kv := openKV(t, openStore(t, nc, service.StoreConfig{}), "watched")
	must(t, "Put", putErr(kv.Put(ctx, "room.a", []byte("1"))))
	must(t, "Put", putErr(kv.Put(ctx, "room.b", []byte("2"))))
	must(t, "Put", putErr(kv.Put(ctx, "other", []byte("x"))))
	must(t, "Put", putErr(kv.Put(ctx, "room.a", []byte("3"))))

	w, err := kv.Watch(ctx, "room.*")
	must(t, "Watch", err)
	t.Cleanup(w.Stop)
	initial := map[string]string{}
	for {
		e := recv(t, w.Updates(), "initial value")
		if e.Key == "" {
			break
		}
		initial[e.Key] = string(e.Value)
	}
	if len(initial) != 2 || initial["room.a"] != "3" || initial["room.b"] != "2" {
		t.Fatalf("initial values %v, want room.a=3 room.b=2", initial)
	}

	rDel, err := kv.Delete(ctx, "room.b", 0)
	must(t, "Delete", err)
	must(t, "Put", putErr(kv.Put(ctx, "other", []byte("y"))))
	rPut, err := kv.Put(ctx, "room.c", []byte("4"))
	must(t, "Put", err)

	e := recv(t, w.Updates(), "deletion")
	if e.Key != "room.b" || !e.Deleted || e.Revision != rDel {
		t.Fatalf("after delete: %+v, want room.b deleted at %d", e, rDel)
	}
	e = recv(t, w.Updates(), "put")
	if e.Key != "room.c" || e.Deleted || string(e.Value) != "4" || e.Revision != rPut {
		t.Fatalf("after put: %+v, want room.c=4 at %d", e, rPut)
	}
	last, err := kv.LastRevision(ctx)
	must(t, "LastRevision", err)
	if last != rPut {
		t.Fatalf("LastRevision = %d, want %d", last, rPut)
	}
	w.Stop()
	for range w.Updates() {
	}
}

func putErr(_ uint64, err error) error { return err }

// TestKVMissingBucket checks the error of a handle whose bucket was
// deleted behind its back, and that opening it again makes it anew.
func TestKVMissingBucket(t *testing.T) {
	ctx := context.Background()
	nc, _ := testBus(t)
	s := openStore(t, nc, service.StoreConfig{})
	kv := openKV(t, s, "doomed")
	must(t, "Put", putErr(kv.Put(ctx, "k", []byte("v"))))
	js, err := jetstream.New(nc)
	must(t, "jetstream", err)
	must(t, "DeleteKeyValue", js.DeleteKeyValue(ctx, "doomed"))

	_, err = kv.Get(ctx, "k")
	wantErr(t, "Get", err, service.ErrNoBucket)
	_, err = kv.Put(ctx, "k", []byte("v"))
	wantErr(t, "Put", err, service.ErrNoBucket)
	_, err = kv.LastRevision(ctx)
	wantErr(t, "LastRevision", err, service.ErrNoBucket)

	kv = openKV(t, s, "doomed")
	_, err = kv.Get(ctx, "k")
	wantErr(t, "Get in the new bucket", err, service.ErrNotFound)
}

// TestKVConfigChange checks that a bucket opened with another history
// takes it, as a restart with new flags would.
func TestKVConfigChange(t *testing.T) {
	ctx := context.Background()
	nc, _ := testBus(t)
	s := openStore(t, nc, service.StoreConfig{})
	openKV(t, s, "cfg")
	if _, err := s.KV(ctx, service.BucketConfig{Name: "cfg", History: 5}); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, "cfg")
	must(t, "KeyValue", err)
	st, err := kv.Status(ctx)
	must(t, "Status", err)
	if st.History() != 5 {
		t.Fatalf("history %d, want 5", st.History())
	}
	if _, err := s.KV(ctx, service.BucketConfig{Name: "bad name"}); !errors.Is(err, service.ErrInvalidConfig) {
		t.Fatalf("bad bucket name: %v", err)
	}
}

func openStream(t testing.TB, s *service.Store, cfg service.StreamConfig) *service.Stream {
	t.Helper()
	st, err := s.Stream(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Stream %s: %v", cfg.Name, err)
	}
	return st
}

// TestStreamAppendChain checks appends that expect the subject's last
// sequence, and message ids that make a retried append harmless.
func TestStreamAppendChain(t *testing.T) {
	ctx := context.Background()
	nc, _ := testBus(t)
	st := openStream(t, openStore(t, nc, service.StoreConfig{}), service.StreamConfig{Name: "chain", Subjects: []string{"chain.>"}})

	a1, err := st.Append(ctx, "chain.x", []byte("1"), service.WithExpectLast(0))
	must(t, "first append", err)
	_, err = st.Append(ctx, "chain.x", []byte("fork"), service.WithExpectLast(0))
	wantErr(t, "append expecting an empty subject", err, service.ErrRevisionConflict)
	// Another subject does not disturb the chain.
	if _, err := st.Append(ctx, "chain.y", []byte("y")); err != nil {
		t.Fatal(err)
	}
	a2, err := st.Append(ctx, "chain.x", []byte("2"), service.WithExpectLast(a1.Seq), service.WithMsgID("m2"))
	must(t, "second append", err)
	dup, err := st.Append(ctx, "chain.x", []byte("2"), service.WithMsgID("m2"))
	must(t, "duplicate append", err)
	if !dup.Duplicate || dup.Seq != a2.Seq {
		t.Fatalf("duplicate append = %+v, want duplicate of %d", dup, a2.Seq)
	}

	last, err := st.LastOf(ctx, "chain.x")
	must(t, "LastOf", err)
	if last.Seq != a2.Seq || string(last.Data) != "2" || last.Subject != "chain.x" {
		t.Fatalf("LastOf = %d %q, want %d 2", last.Seq, last.Data, a2.Seq)
	}
	m, err := st.Get(ctx, a1.Seq)
	must(t, "Get", err)
	if string(m.Data) != "1" {
		t.Fatalf("Get(%d) = %q", a1.Seq, m.Data)
	}
	_, err = st.Get(ctx, 999)
	wantErr(t, "Get of a missing sequence", err, service.ErrNotFound)
	_, err = st.LastOf(ctx, "chain.none")
	wantErr(t, "LastOf an empty subject", err, service.ErrNotFound)
	_, err = st.Append(ctx, "elsewhere", []byte("x"))
	if err == nil {
		t.Fatal("append to a subject no stream stores: no error")
	}
}

// TestStreamRanges fills two interleaved subjects and checks Range and
// Last against what was appended, on a short subject (read whole) and a
// long one (searched).
func TestStreamRanges(t *testing.T) {
	ctx := context.Background()
	nc, _ := testBus(t)
	st := openStream(t, openStore(t, nc, service.StoreConfig{}), service.StreamConfig{Name: "ranges", Subjects: []string{"r.>"}})
	seqs := map[string][]uint64{}
	appendTo := func(subj string) {
		a, err := st.Append(ctx, subj, []byte(subj+strconv.Itoa(len(seqs[subj]))))
		must(t, "Append", err)
		seqs[subj] = append(seqs[subj], a.Seq)
	}
	// "r.long" has more messages than Last reads whole, so it bisects.
	for i := range 1300 {
		appendTo("r.long")
		if i%10 == 0 {
			appendTo("r.short")
		}
		if i%3 == 0 {
			appendTo("r.noise")
		}
	}
	check := func(what string, got []service.Msg, want []uint64) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d messages, want %d", what, len(got), len(want))
		}
		for i := range got {
			if got[i].Seq != want[i] {
				t.Fatalf("%s: message %d has seq %d, want %d", what, i, got[i].Seq, want[i])
			}
		}
	}
	for _, subj := range []string{"r.short", "r.long"} {
		all := seqs[subj]
		n := len(all)
		msgs, more, err := st.Range(ctx, subj, 0, 50)
		must(t, "Range", err)
		check(subj+" Range(0, 50)", msgs, all[:min(50, n)])
		if more != (n > 50) {
			t.Fatalf("%s Range(0, 50): more = %v", subj, more)
		}
		msgs, more, err = st.Range(ctx, subj, all[n-5], 100)
		must(t, "Range", err)
		check(subj+" Range(after 5th last)", msgs, all[n-4:])
		if more {
			t.Fatalf("%s Range at the end: more", subj)
		}
		msgs, _, err = st.Range(ctx, subj, all[n-1], 10)
		must(t, "Range", err)
		check(subj+" Range(after last)", msgs, nil)

		msgs, more, err = st.Last(ctx, subj, 20, 0)
		must(t, "Last", err)
		check(subj+" Last(20)", msgs, all[n-20:])
		if !more {
			t.Fatalf("%s Last(20): no more", subj)
		}
		mid := all[n/2]
		msgs, more, err = st.Last(ctx, subj, 7, mid)
		must(t, "Last", err)
		check(subj+" Last(7, before mid)", msgs, all[n/2-7:n/2])
		if !more {
			t.Fatalf("%s Last(7, before mid): no more", subj)
		}
		msgs, more, err = st.Last(ctx, subj, 10, all[3])
		must(t, "Last", err)
		check(subj+" Last(10, before 4th)", msgs, all[:3])
		if more {
			t.Fatalf("%s Last before the 4th: more", subj)
		}
		msgs, more, err = st.Last(ctx, subj, 5000, 0)
		must(t, "Last", err)
		check(subj+" Last(all)", msgs, all)
		if more {
			t.Fatalf("%s Last(all): more", subj)
		}
	}
	msgs, more, err := st.Last(ctx, "r.empty", 10, 0)
	if err != nil || len(msgs) != 0 || more {
		t.Fatalf("Last of an empty subject: %d messages, more %v, %v", len(msgs), more, err)
	}
}

// TestStreamMissingAndRecreated checks the error of a stream deleted
// behind a handle's back, and that Ensure makes it anew with a new
// creation time, so old sequences can be told apart.
func TestStreamMissingAndRecreated(t *testing.T) {
	ctx := context.Background()
	nc, _ := testBus(t)
	st := openStream(t, openStore(t, nc, service.StoreConfig{}), service.StreamConfig{Name: "gone", Subjects: []string{"gone.>"}})
	created := st.Created()
	if created.IsZero() {
		t.Fatal("Created is zero")
	}
	js, _ := jetstream.New(nc)
	must(t, "DeleteStream", js.DeleteStream(ctx, "gone"))
	_, err := st.Append(ctx, "gone.x", []byte("x"))
	wantErr(t, "Append", err, service.ErrNoStream)
	_, err = st.LastOf(ctx, "gone.x")
	wantErr(t, "LastOf", err, service.ErrNoStream)
	_, _, err = st.Range(ctx, "gone.x", 0, 10)
	wantErr(t, "Range", err, service.ErrNoStream)

	must(t, "Ensure", st.Ensure(ctx))
	if !st.Created().After(created) {
		t.Fatalf("Created after recreation %v, not after %v", st.Created(), created)
	}
	if _, err := st.Append(ctx, "gone.x", []byte("x")); err != nil {
		t.Fatalf("Append after Ensure: %v", err)
	}
}

// TestStreamLimitsUpdated checks that opening a stream with a new
// per-subject limit applies it, as a restart with a new --history does.
func TestStreamLimitsUpdated(t *testing.T) {
	ctx := context.Background()
	nc, _ := testBus(t)
	s := openStore(t, nc, service.StoreConfig{})
	cfg := service.StreamConfig{Name: "lim", Subjects: []string{"lim.>"}, MaxMsgsPerSubject: 10}
	st := openStream(t, s, cfg)
	for i := range 20 {
		if _, err := st.Append(ctx, "lim.a", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	msgs, _, err := st.Last(ctx, "lim.a", 100, 0)
	must(t, "Last", err)
	if len(msgs) != 10 || string(msgs[0].Data) != "10" {
		t.Fatalf("kept %d messages from %q, want the last 10", len(msgs), msgs[0].Data)
	}
	cfg.MaxMsgsPerSubject = 3
	st = openStream(t, s, cfg)
	msgs, _, err = st.Last(ctx, "lim.a", 100, 0)
	must(t, "Last", err)
	if len(msgs) != 3 {
		t.Fatalf("kept %d messages after lowering the limit, want 3", len(msgs))
	}
}

// TestStoreUnavailable checks that requests to a JetStream that went away
// fail with ErrUnavailable rather than hanging or blaming a bucket.
func TestStoreUnavailable(t *testing.T) {
	ctx := context.Background()
	srv := bustest.RunServer(t)
	nc := bustest.Connect(t, srv.ClientURL())
	s := openStore(t, nc, service.StoreConfig{})
	kv := openKV(t, s, "down")
	st := openStream(t, s, service.StreamConfig{Name: "down", Subjects: []string{"down.>"}})
	must(t, "DisableJetStream", srv.Server().DisableJetStream())
	// A JetStream that went away answers nothing: every request runs into
	// its deadline, which the test keeps short.
	short := func() context.Context {
		ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		t.Cleanup(cancel)
		return ctx
	}
	_, err := kv.Get(short(), "k")
	wantErr(t, "Get", err, service.ErrUnavailable)
	_, err = kv.Put(short(), "k", []byte("v"))
	wantErr(t, "Put", err, service.ErrUnavailable)
	_, err = st.Append(short(), "down.x", []byte("v"))
	wantErr(t, "Append", err, service.ErrUnavailable)
	_, _, err = st.Range(short(), "down.x", 0, 10)
	wantErr(t, "Range", err, service.ErrUnavailable)
	_, err = s.KV(short(), service.BucketConfig{Name: "new"})
	wantErr(t, "KV", err, service.ErrUnavailable)
}

// TestStoreManyConcurrent runs far more concurrent requests than the
// store lets fly at once; all must finish.
func TestStoreManyConcurrent(t *testing.T) {
	ctx := context.Background()
	nc, _ := testBus(t)
	s := openStore(t, nc, service.StoreConfig{MaxInFlight: 3})
	kv := openKV(t, s, "many")
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			key := "k" + strconv.Itoa(i%20)
			if _, err := kv.Put(ctx, key, []byte("v")); err != nil {
				t.Error(err)
			}
			if _, err := kv.Get(ctx, key); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

// TestReplicasSingleServer checks that a lone server gets one copy.
func TestReplicasSingleServer(t *testing.T) {
	nc, _ := testBus(t)
	s := openStore(t, nc, service.StoreConfig{})
	if r := s.Replicas(); r != 1 {
		t.Fatalf("Replicas() = %d on a single server, want 1", r)
	}
	st := openStream(t, s, service.StreamConfig{Name: "one", Subjects: []string{"one.>"}})
	if r := st.Replicas(); r != 1 {
		t.Fatalf("stream replicas %d, want 1", r)
	}
}

// TestReplicasCluster runs a three-node JetStream cluster in the test and
// checks that buckets and streams get three copies there.
func TestReplicasCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	ctx := context.Background()
	c := bustest.RunCluster(t, 3)
	nc := bustest.Connect(t, c.ClientURLs())
	s := openStore(t, nc, service.StoreConfig{Timeout: 20 * time.Second})
	if r := s.Replicas(); r != 3 {
		t.Fatalf("Replicas() = %d in a cluster of 3, want 3", r)
	}
	st := openStream(t, s, service.StreamConfig{Name: "three", Subjects: []string{"three.>"}})
	if r := st.Replicas(); r != 3 {
		t.Fatalf("stream replicas %d, want 3", r)
	}
	kv := openKV(t, s, "three")
	js, _ := jetstream.New(nc)
	info, err := js.Stream(ctx, "KV_three")
	must(t, "stream info", err)
	if r := info.CachedInfo().Config.Replicas; r != 3 {
		t.Fatalf("bucket replicas %d, want 3", r)
	}
	// The binding works the same on replicated storage.
	r1, err := kv.Create(ctx, "k", []byte("v"))
	must(t, "Create", err)
	_, err = kv.Update(ctx, "k", []byte("w"), r1+5)
	wantErr(t, "Update with a wrong revision", err, service.ErrRevisionConflict)
	if _, err := kv.Update(ctx, "k", []byte("w"), r1); err != nil {
		t.Fatal(err)
	}
	_, err = kv.Create(ctx, "k", []byte("again"))
	wantErr(t, "second Create", err, service.ErrKeyExists)
	a, err := st.Append(ctx, "three.x", []byte("1"), service.WithExpectLast(0))
	must(t, "Append", err)
	_, err = st.Append(ctx, "three.x", []byte("fork"), service.WithExpectLast(0))
	wantErr(t, "forking Append", err, service.ErrRevisionConflict)
	if last, err := st.LastOf(ctx, "three.x"); err != nil || last.Seq != a.Seq {
		t.Fatalf("LastOf = %v, %v", last.Seq, err)
	}

	// A stream and a bucket made with one copy (as when two of the three
	// servers could not take one) get their three at the next open, with
	// what they held.
	one := openStore(t, nc, service.StoreConfig{Replicas: 1, Timeout: 20 * time.Second})
	lone := openStream(t, one, service.StreamConfig{Name: "lone", Subjects: []string{"lone.>"}})
	if r := lone.Replicas(); r != 1 {
		t.Fatalf("stream made with one copy has %d", r)
	}
	kept, err := lone.Append(ctx, "lone.x", []byte("kept"))
	must(t, "Append", err)
	openKV(t, one, "lonekv")
	if r := openStream(t, s, service.StreamConfig{Name: "lone", Subjects: []string{"lone.>"}}).Replicas(); r != 3 {
		t.Fatalf("stream of one copy opened in a cluster of 3: %d copies, want 3", r)
	}
	if m, err := lone.Get(ctx, kept.Seq); err != nil || string(m.Data) != "kept" {
		t.Fatalf("after gaining copies: Get = %q, %v", m.Data, err)
	}
	openKV(t, s, "lonekv")
	info, err = js.Stream(ctx, "KV_lonekv")
	must(t, "stream info", err)
	if r := info.CachedInfo().Config.Replicas; r != 3 {
		t.Fatalf("bucket of one copy opened in a cluster of 3: %d copies, want 3", r)
	}
}

// TestKVWatchResumes restarts the NATS server (same store, same port)
// under a watch: the server forgets the watch's consumer, and the watch
// must resume after the last revision it delivered, with no write missed
// or repeated.
func TestKVWatchResumes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	start := func(port int) *bus.Embedded {
		e, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: port, StoreDir: dir, JetStream: true})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	srv := start(-1)
	t.Cleanup(func() { srv.Shutdown() })
	nc := bustest.Connect(t, srv.ClientURL())
	kv := openKV(t, openStore(t, nc, service.StoreConfig{}), "resumed")
	r1, err := kv.Put(ctx, "a", []byte("1"))
	must(t, "Put", err)
	w, err := kv.Watch(ctx, ">")
	must(t, "Watch", err)
	t.Cleanup(w.Stop)
	if e := recv(t, w.Updates(), "initial value"); e.Revision != r1 {
		t.Fatalf("initial %+v", e)
	}
	if e := recv(t, w.Updates(), "marker"); e.Key != "" {
		t.Fatalf("marker %+v", e)
	}
	r2, err := kv.Put(ctx, "b", []byte("2"))
	must(t, "Put", err)
	if e := recv(t, w.Updates(), "put before the restart"); e.Revision != r2 {
		t.Fatalf("before the restart: %+v", e)
	}

	port := srv.Server().Addr().(*net.TCPAddr).Port
	srv.Shutdown()
	srv = start(port)
	waitFor(t, "reconnected", func() bool { return nc.IsConnected() })
	var revs []uint64
	for i := range 3 {
		for {
			r, err := kv.Put(ctx, "c", []byte(strconv.Itoa(i)))
			if err == nil {
				revs = append(revs, r)
				break
			}
			if !errors.Is(err, service.ErrUnavailable) {
				t.Fatal(err)
			}
		}
	}
	// Revisions of c that a later one replaced before the watch resumed
	// are gone from the bucket (it keeps one per key): the watch may skip
	// them, but it ends with the latest, in order, and repeats nothing.
	prev := r2
	for {
		e := recv(t, w.Updates(), "put after the restart")
		if e.Key != "c" || e.Revision <= prev || !slices.Contains(revs, e.Revision) {
			t.Fatalf("after the restart: %+v, want c after %d, one of %v", e, prev, revs)
		}
		prev = e.Revision
		if e.Revision == revs[len(revs)-1] {
			break
		}
	}
	r3, err := kv.Put(ctx, "d", nil)
	must(t, "Put", err)
	if e := recv(t, w.Updates(), "last put"); e.Revision != r3 {
		t.Fatalf("last: %+v, want d at %d (a repeat or a second marker?)", e, r3)
	}
}
