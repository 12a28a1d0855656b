package chat

import (
	"sync"
	"time"
)

// limiter is a token bucket per key: rate tokens per second, at most
// burst, one per allowed action. It lives in one instance's memory: with
// several instances each counts the actions it handles (PROTOCOL.md says
// what that means for a user).
type limiter struct {
	rate, burst float64 // rate < 0: no limit

	mu      sync.Mutex
	buckets map[string]*tokens
	swept   time.Time
}

type tokens struct {
	n  float64
	at time.Time
}

// sweepEvery is how often full buckets are dropped: a full bucket is the
// same as none, so idle users cost no memory.
const sweepEvery = time.Minute

func newLimiter(rate, burst float64) *limiter {
	return &limiter{rate: rate, burst: burst, buckets: make(map[string]*tokens)}
}

// allow takes a token from key's bucket, reporting whether there was one.
func (l *limiter) allow(key string, now time.Time) bool {
	if l.rate < 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > sweepEvery {
		for k, b := range l.buckets {
			if l.fill(b, now) >= l.burst {
				delete(l.buckets, k)
			}
		}
		l.swept = now
	}
	b := l.buckets[key]
	if b == nil {
		b = &tokens{n: l.burst, at: now}
		l.buckets[key] = b
	}
	b.n, b.at = l.fill(b, now), now
	if b.n < 1 {
		return false
	}
	b.n--
	return true
}

// fill returns b's tokens at now.
func (l *limiter) fill(b *tokens, now time.Time) float64 {
	return min(l.burst, b.n+now.Sub(b.at).Seconds()*l.rate)
}
