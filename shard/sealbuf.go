package shard

import "sync"

// The records a TLS connection's frames are sealed into are written once
// and then done with, like the plain frames they carry: their buffers come
// from pools, one per size class, for the length of one write. A pool
// holds array pointers, so that putting a buffer back allocates nothing:
// a slice whose capacity is a class's size converts back to its array.
var (
	seal512 = sync.Pool{New: func() any { return new([512]byte) }}
	seal2K  = sync.Pool{New: func() any { return new([2 << 10]byte) }}
	seal8K  = sync.Pool{New: func() any { return new([8 << 10]byte) }}
	seal32K = sync.Pool{New: func() any { return new([32 << 10]byte) }}
)

// sealBuf returns an empty buffer with room for n bytes.
func sealBuf(n int) []byte {
	switch {
	case n <= 512:
		return seal512.Get().(*[512]byte)[:0]
	case n <= 2<<10:
		return seal2K.Get().(*[2 << 10]byte)[:0]
	case n <= 8<<10:
		return seal8K.Get().(*[8 << 10]byte)[:0]
	case n <= 32<<10:
		return seal32K.Get().(*[32 << 10]byte)[:0]
	}
	return make([]byte, 0, n)
}

// releaseSealed gives back a buffer from sealBuf once it is written; one
// of another capacity (it grew, or was too large for a class) is left to
// the garbage collector.
func releaseSealed(b []byte) {
	switch cap(b) {
	case 512:
		seal512.Put((*[512]byte)(b[:512]))
	case 2 << 10:
		seal2K.Put((*[2 << 10]byte)(b[:2<<10]))
	case 8 << 10:
		seal8K.Put((*[8 << 10]byte)(b[:8<<10]))
	case 32 << 10:
		seal32K.Put((*[32 << 10]byte)(b[:32<<10]))
	}
}
