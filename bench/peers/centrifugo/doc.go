// Package centrifugo is the module that pins the Centrifugo server which
// `shoal bench compare` measures as its centrifugo target.
//
// It holds no code of Centrifugo: go.mod names the server's main package
// as a tool (github.com/centrifugal/centrifugo/v6), and compare builds it
// from the module proxy with `go build` in this directory. It is a module
// of its own so that Centrifugo's many dependencies do not raise the
// versions the other peers in bench/peers build with; in one module, Go's
// minimal version selection would move gorilla's, nbio's and gws's shared
// dependencies (golang.org/x/sys, golang.org/x/crypto,
// klauspost/compress) to Centrifugo's.
package centrifugo
