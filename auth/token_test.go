package auth

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// t0 is a fixed clock: tokens are judged against the time passed in, so
// no test depends on the wall clock.
var t0 = time.Date(2026, 1, 12, 9, 41, 7, 0, time.UTC)

func testKey(t testing.TB, fill byte) Key {
	t.Helper()
	k := make(Key, KeySize)
	for i := range k {
		k[i] = fill + byte(i)
	}
	return k
}

// craft signs arbitrary claims with any method, for tokens Sign would never
// make.
func craft(t testing.TB, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// goodClaims are the claims of a token Sign would make, as a map to tamper
// with.
func goodClaims() jwt.MapClaims {
	return jwt.MapClaims{"sub": "alice", "aud": []string{"chat"}, "iat": t0.Unix(), "exp": t0.Add(time.Hour).Unix()}
}

func TestSignVerifyRoundTrip(t *testing.T) {
	k := testKey(t, 1)
	tok, exp, err := k.Sign("alice", []string{"chat", "echo"}, 24*time.Hour, t0.Add(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if want := t0.Add(24 * time.Hour); !exp.Equal(want) {
		t.Fatalf("expires %s, want %s", exp, want)
	}
	for _, service := range []string{"chat", "echo", ""} {
		user, err := k.Verify(tok, service, t0.Add(time.Hour))
		if err != nil || user != "alice" {
			t.Fatalf("verify for %q: %q, %v", service, user, err)
		}
	}
	// The last second of its life, and the one after.
	if _, err := k.Verify(tok, "chat", exp.Add(-time.Second)); err != nil {
		t.Fatalf("a second before expiry: %v", err)
	}
	if _, err := k.Verify(tok, "chat", exp); !errors.Is(err, ErrExpired) {
		t.Fatalf("at expiry: %v, want ErrExpired", err)
	}
	// Any user a token may carry comes back unchanged.
	for _, user := range []string{"u-77", "Zoë Ünal", "a@example.com", strings.Repeat("x", MaxUser)} {
		tok, _, err := k.Sign(user, []string{"chat"}, time.Minute, t0)
		if err != nil {
			t.Fatalf("sign %q: %v", user, err)
		}
		if got, err := k.Verify(tok, "chat", t0); err != nil || got != user {
			t.Fatalf("user %q came back as %q, %v", user, got, err)
		}
	}
}

func TestSignRefuses(t *testing.T) {
	k := testKey(t, 1)
	for _, user := range []string{"", "a\nb", "tab\there", "nul\x00", "\x7f", "bad\xffutf8", strings.Repeat("x", MaxUser+1)} {
		if _, _, err := k.Sign(user, []string{"chat"}, time.Hour, t0); !errors.Is(err, ErrBadUser) {
			t.Errorf("user %q: %v, want ErrBadUser", user, err)
		}
	}
	if _, _, err := k.Sign("alice", nil, 0, t0); err == nil {
		t.Error("ttl 0 accepted")
	}
	if _, _, err := Key("short").Sign("alice", nil, time.Hour, t0); !errors.Is(err, ErrBadKey) {
		t.Errorf("short key: %v, want ErrBadKey", err)
	}
}

// verifyCase is one token and the error Verify must return for it.
type verifyCase struct {
	name    string
	token   func(t testing.TB, k Key) string
	service string
	want    error
}

func verifyCases() []verifyCase {
	hs := func(claims jwt.MapClaims) func(testing.TB, Key) string {
		return func(t testing.TB, k Key) string { return craft(t, jwt.SigningMethodHS256, []byte(k), claims) }
	}
	with := func(edit func(jwt.MapClaims)) jwt.MapClaims {
		c := goodClaims()
		edit(c)
		return c
	}
	return []verifyCase{
		{name: "good", token: hs(goodClaims()), service: "chat"},
		{name: "good for any service", token: hs(goodClaims())},
		{name: "audience as one string", token: hs(with(func(c jwt.MapClaims) { c["aud"] = "chat" })), service: "chat"},
		{name: "expired", token: hs(with(func(c jwt.MapClaims) { c["exp"] = t0.Add(-time.Second).Unix() })), service: "chat", want: ErrExpired},
		{name: "not yet valid", token: hs(with(func(c jwt.MapClaims) { c["nbf"] = t0.Add(time.Minute).Unix() })), service: "chat", want: ErrNotYetValid},
		{name: "valid since", token: hs(with(func(c jwt.MapClaims) { c["nbf"] = t0.Add(-time.Minute).Unix() })), service: "chat"},
		{name: "no expiry", token: hs(with(func(c jwt.MapClaims) { delete(c, "exp") })), service: "chat", want: ErrInvalidToken},
		{name: "expiry not a number", token: hs(with(func(c jwt.MapClaims) { c["exp"] = "tomorrow" })), service: "chat", want: ErrInvalidToken},
		{name: "wrong audience", token: hs(goodClaims()), service: "echo", want: ErrAudience},
		{name: "wrong audience and expired", token: hs(with(func(c jwt.MapClaims) { c["exp"] = t0.Add(-time.Second).Unix() })), service: "echo", want: ErrAudience},
		{name: "no audience", token: hs(with(func(c jwt.MapClaims) { delete(c, "aud") })), service: "chat", want: ErrAudience},
		{name: "no audience, any service", token: hs(with(func(c jwt.MapClaims) { delete(c, "aud") }))},
		{name: "no sub", token: hs(with(func(c jwt.MapClaims) { delete(c, "sub") })), service: "chat", want: ErrInvalidToken},
		{name: "empty sub", token: hs(with(func(c jwt.MapClaims) { c["sub"] = "" })), service: "chat", want: ErrInvalidToken},
		{name: "sub with a newline", token: hs(with(func(c jwt.MapClaims) { c["sub"] = "alice\r\nShoal-User: root" })), service: "chat", want: ErrInvalidToken},
		{name: "sub not a string", token: hs(with(func(c jwt.MapClaims) { c["sub"] = 42 })), service: "chat", want: ErrInvalidToken},
		{name: "wrong key", token: func(t testing.TB, _ Key) string {
			return craft(t, jwt.SigningMethodHS256, []byte(testKey(t, 99)), goodClaims())
		}, service: "chat", want: ErrInvalidToken},
		{name: "alg none", token: func(t testing.TB, _ Key) string {
			return craft(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, goodClaims())
		}, service: "chat", want: ErrInvalidToken},
		{name: "HS384 with the right key", token: func(t testing.TB, k Key) string {
			return craft(t, jwt.SigningMethodHS384, []byte(k), goodClaims())
		}, service: "chat", want: ErrInvalidToken},
		{name: "HS512 with the right key", token: func(t testing.TB, k Key) string {
			return craft(t, jwt.SigningMethodHS512, []byte(k), goodClaims())
		}, service: "chat", want: ErrInvalidToken},
		{name: "RS256", token: func(t testing.TB, _ Key) string {
			rk, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				t.Fatal(err)
			}
			return craft(t, jwt.SigningMethodRS256, rk, goodClaims())
		}, service: "chat", want: ErrInvalidToken},
		{name: "header says HS256 over an HS384 signature", token: func(t testing.TB, k Key) string {
			good := craft(t, jwt.SigningMethodHS256, []byte(k), goodClaims())
			other := craft(t, jwt.SigningMethodHS384, []byte(k), goodClaims())
			p, q := strings.Split(good, "."), strings.Split(other, ".")
			return p[0] + "." + p[1] + "." + q[2]
		}, service: "chat", want: ErrInvalidToken},
		{name: "tampered payload", token: func(t testing.TB, k Key) string {
			p := strings.Split(craft(t, jwt.SigningMethodHS256, []byte(k), goodClaims()), ".")
			forged := strings.Split(craft(t, jwt.SigningMethodHS256, []byte("another key of 32 bytes at least!"),
				jwt.MapClaims{"sub": "root", "aud": []string{"chat"}, "exp": t0.Add(time.Hour).Unix()}), ".")
			return p[0] + "." + forged[1] + "." + p[2]
		}, service: "chat", want: ErrInvalidToken},
		{name: "tampered signature bits", token: func(t testing.TB, k Key) string {
			tok := craft(t, jwt.SigningMethodHS256, []byte(k), goodClaims())
			// The last of 43 base64 characters carries 2 unused bits:
			// flipping one decodes to the same bytes unless decoding is
			// strict.
			last := tok[len(tok)-1]
			i := strings.IndexByte(b64, last)
			return tok[:len(tok)-1] + string(b64[i^1])
		}, service: "chat", want: ErrInvalidToken},
		{name: "empty", token: func(testing.TB, Key) string { return "" }, service: "chat", want: ErrInvalidToken},
		{name: "garbage", token: func(testing.TB, Key) string { return "a.b.c" }, service: "chat", want: ErrInvalidToken},
		{name: "two parts", token: func(testing.TB, Key) string { return "eyJhbGciOiJIUzI1NiJ9.e30" }, service: "chat", want: ErrInvalidToken},
	}
}

const b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

func TestVerify(t *testing.T) {
	k := testKey(t, 1)
	sentinels := []error{ErrInvalidToken, ErrExpired, ErrNotYetValid, ErrAudience, ErrBadKey}
	for _, c := range verifyCases() {
		t.Run(c.name, func(t *testing.T) {
			user, err := k.Verify(c.token(t, k), c.service, t0)
			if c.want == nil {
				if err != nil || user != "alice" {
					t.Fatalf("got %q, %v; want alice", user, err)
				}
				return
			}
			if !errors.Is(err, c.want) || user != "" {
				t.Fatalf("got %q, %v; want %v", user, err, c.want)
			}
			if !strings.HasPrefix(err.Error(), "auth: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
			n := 0
			for _, s := range sentinels {
				if errors.Is(err, s) {
					n++
				}
			}
			if n != 1 {
				t.Errorf("error %q matches %d sentinels, want exactly 1", err, n)
			}
		})
	}
}

func TestVerifyBadKey(t *testing.T) {
	tok, _, err := testKey(t, 1).Sign("alice", []string{"chat"}, time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []Key{nil, Key(make([]byte, KeySize-1))} {
		if _, err := k.Verify(tok, "chat", t0); !errors.Is(err, ErrBadKey) {
			t.Errorf("key of %d bytes: %v, want ErrBadKey", len(k), err)
		}
	}
}

// The signature check is real: the token's bytes are the ones the HMAC
// covered, in one encoding only.
func TestVerifyStrictEncoding(t *testing.T) {
	k := testKey(t, 1)
	tok, _, err := k.Sign("alice", []string{"chat"}, time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	p := strings.Split(tok, ".")
	for _, variant := range []string{
		p[0] + "=." + p[1] + "." + p[2],
		p[0] + "." + p[1] + "." + p[2] + "=",
		base64.StdEncoding.EncodeToString(mustDecode(t, p[0])) + "." + p[1] + "." + p[2],
	} {
		if variant == tok {
			continue
		}
		if _, err := k.Verify(variant, "chat", t0); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("variant %q: %v, want ErrInvalidToken", variant, err)
		}
	}
}

func mustDecode(t testing.TB, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
