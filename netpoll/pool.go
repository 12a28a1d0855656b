package netpoll

import (
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
)

// Task is work for a Pool. It is an interface so that callers schedule a
// pointer they already hold, without an allocation per task.
type Task interface{ Run() }

// PoolConfig configures a Pool.
type PoolConfig struct {
	// Workers is the number of goroutines; default 4*GOMAXPROCS, at least 8.
	// More workers than CPUs keeps the CPUs busy while some tasks wait on a
	// lock or a short syscall.
	Workers int
	// Queue is the number of tasks waiting for a worker; default 4096.
	Queue int
	// Logger receives panics recovered from tasks; nil discards them.
	Logger *slog.Logger
}

// Pool runs tasks on a fixed set of goroutines fed by a bounded queue.
type Pool struct {
	tasks  chan Task
	done   chan struct{}
	mu     sync.RWMutex // held shared by senders, exclusively by Close
	closed bool
	once   sync.Once
	wg     sync.WaitGroup
	panics atomic.Uint64
	log    *slog.Logger
}

// NewPool starts a pool of workers goroutines with a queue of queue tasks;
// zero values pick the defaults of PoolConfig.
func NewPool(workers, queue int) *Pool {
	return NewPoolConfig(PoolConfig{Workers: workers, Queue: queue})
}

// NewPoolConfig starts a pool.
func NewPoolConfig(cfg PoolConfig) *Pool {
	if cfg.Workers <= 0 {
		cfg.Workers = max(4*runtime.GOMAXPROCS(0), 8)
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 4096
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Pool{
		tasks: make(chan Task, cfg.Queue),
		done:  make(chan struct{}),
		log:   cfg.Logger,
	}
	p.wg.Add(cfg.Workers)
	for range cfg.Workers {
		go p.work()
	}
	return p
}

// Schedule queues t. It blocks while the queue is full, which is the
// back-pressure on whoever produces tasks, and returns ErrPoolClosed once
// Close has begun.
func (p *Pool) Schedule(t Task) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrPoolClosed
	}
	select {
	case p.tasks <- t:
		return nil
	default:
	}
	select {
	case p.tasks <- t:
		return nil
	case <-p.done:
		return ErrPoolClosed
	}
}

// TrySchedule queues t without blocking; false if the queue is full or the
// pool is closed.
func (p *Pool) TrySchedule(t Task) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return false
	}
	select {
	case p.tasks <- t:
		return true
	default:
		return false
	}
}

// Close stops accepting tasks, lets the queued ones run and waits for the
// workers. Calling it twice is safe.
func (p *Pool) Close() {
	p.once.Do(func() {
		// Wake senders blocked on a full queue before taking the lock they hold.
		close(p.done)
		p.mu.Lock()
		p.closed = true
		close(p.tasks)
		p.mu.Unlock()
	})
	p.wg.Wait()
}

// Panics is the number of tasks that panicked.
func (p *Pool) Panics() uint64 { return p.panics.Load() }

// Len is the number of queued tasks.
func (p *Pool) Len() int { return len(p.tasks) }

func (p *Pool) work() {
	defer p.wg.Done()
	for t := range p.tasks {
		p.run(t)
	}
}

// run keeps one panicking task from taking the worker, and with it a
// share of the process's capacity, down.
func (p *Pool) run(t Task) {
	defer func() {
		if r := recover(); r != nil {
			p.panics.Add(1)
			buf := make([]byte, 4096)
			buf = buf[:runtime.Stack(buf, false)]
			p.log.Error("task panicked", "task", fmt.Sprintf("%T", t), "panic", r, "stack", string(buf))
		}
	}()
	t.Run()
}
