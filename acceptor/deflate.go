package acceptor

import (
	"bytes"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws/wsflate"
)

// deflateNegotiation accepts the first permessage-deflate offer (RFC 7692)
// that can be served without context takeover, which the response imposes
// in both directions: no compressor or decompressor state outlives a
// message, so an idle connection holds none.
type deflateNegotiation struct {
	// window is log2 of the largest back-reference the client can take
	// (server_max_window_bits, 15 when not asked); 0 until an offer is
	// accepted.
	window uint8
}

// negotiate is the upgrader's Negotiate callback.
func (d *deflateNegotiation) negotiate(opt httphead.Option) (httphead.Option, error) {
	if d.window != 0 || !bytes.Equal(opt.Name, wsflate.ExtensionNameBytes) {
		return httphead.Option{}, nil
	}
	var offer wsflate.Parameters
	if err := offer.Parse(opt); err != nil {
		// An offer with unknown, repeated or invalid parameters is
		// declined (RFC 7692 7.1); a later one may still do.
		return httphead.Option{}, nil
	}
	accept := wsflate.Parameters{ServerNoContextTakeover: true, ClientNoContextTakeover: true}
	d.window = 15
	if offer.ServerMaxWindowBits.Defined() {
		// The compressor's window cannot be narrowed, but a message no
		// longer than the window never refers past it: the connection
		// gets compressed frames only for such messages.
		accept.ServerMaxWindowBits = offer.ServerMaxWindowBits
		d.window = uint8(offer.ServerMaxWindowBits)
	}
	return accept.Option(), nil
}
