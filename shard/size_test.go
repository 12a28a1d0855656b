package shard

import (
	"testing"
	"unsafe"
)

// The connection struct is what every idle connection costs besides its
// epoll registration and table entry; keep it from growing unnoticed.
func TestConnSize(t *testing.T) {
	const limit = 352
	if n := unsafe.Sizeof(conn{}); n > limit {
		t.Fatalf("conn is %d bytes, over %d", n, limit)
	} else {
		t.Logf("conn is %d bytes", n)
	}
}
