package netpoll

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

type countTask struct {
	n  *atomic.Int64
	wg *sync.WaitGroup
}

func (c *countTask) Run() { c.n.Add(1); c.wg.Done() }

func TestPoolRunsEverything(t *testing.T) {
	p := NewPool(4, 8)
	var n atomic.Int64
	var wg sync.WaitGroup
	task := &countTask{n: &n, wg: &wg}
	wg.Add(1000)
	for range 1000 {
		if err := p.Schedule(task); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	p.Close()
	p.Close()
	if n.Load() != 1000 {
		t.Fatalf("ran %d tasks, want 1000", n.Load())
	}
	if err := p.Schedule(task); !errors.Is(err, ErrPoolClosed) {
		t.Fatalf("Schedule after Close: %v", err)
	}
	if p.TrySchedule(task) {
		t.Fatal("TrySchedule after Close succeeded")
	}
}

type funcTask func()

func (f funcTask) Run() { f() }

func TestPoolQueuedTasksRunOnClose(t *testing.T) {
	p := NewPool(1, 16)
	gate := make(chan struct{})
	var ran atomic.Int64
	p.Schedule(funcTask(func() { <-gate }))
	for range 10 {
		if !p.TrySchedule(funcTask(func() { ran.Add(1) })) {
			t.Fatal("TrySchedule with room in the queue failed")
		}
	}
	closed := make(chan struct{})
	go func() { p.Close(); close(closed) }()
	close(gate)
	<-closed
	if ran.Load() != 10 {
		t.Fatalf("%d queued tasks ran, want 10", ran.Load())
	}
}

func TestPoolTryScheduleFull(t *testing.T) {
	p := NewPool(1, 1)
	defer p.Close()
	gate := make(chan struct{})
	started := make(chan struct{})
	p.Schedule(funcTask(func() { close(started); <-gate }))
	<-started
	if !p.TrySchedule(funcTask(func() {})) {
		t.Fatal("queue of 1 refused its first task")
	}
	if p.TrySchedule(funcTask(func() {})) {
		t.Fatal("TrySchedule on a full queue succeeded")
	}
	// A blocked Schedule is released by Close.
	errc := make(chan error)
	go func() { errc <- p.Schedule(funcTask(func() {})) }()
	go p.Close()
	close(gate)
	if err := <-errc; err != nil && !errors.Is(err, ErrPoolClosed) {
		t.Fatalf("blocked Schedule: %v", err)
	}
}

func TestPoolSurvivesPanic(t *testing.T) {
	p := NewPool(1, 4)
	p.Schedule(funcTask(func() { panic("boom") }))
	done := make(chan struct{})
	p.Schedule(funcTask(func() { close(done) }))
	<-done
	p.Close()
	if p.Panics() != 1 {
		t.Fatalf("Panics = %d, want 1", p.Panics())
	}
}

type nopTask struct{}

func (*nopTask) Run() {}

func BenchmarkPoolSchedule(b *testing.B) {
	p := NewPool(0, 0)
	defer p.Close()
	t := &nopTask{}
	b.ReportAllocs()
	for b.Loop() {
		p.Schedule(t)
	}
}
