package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// FuzzVerify feeds Verify any token: it must never panic, and whatever it
// accepts must be an HS256 token whose signature is the HMAC of its first
// two parts under the key, in the one canonical encoding, unexpired at the
// time given, for the service asked.
func FuzzVerify(f *testing.F) {
	k := testKey(f, 1)
	for _, c := range verifyCases() {
		f.Add(c.token(f, k), c.service, t0.Unix())
	}
	good, _, err := k.Sign("alice", []string{"chat"}, time.Hour, t0)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, "chat", t0.Add(2*time.Hour).Unix())
	f.Add(good+".", "chat", t0.Unix())
	f.Add(strings.Replace(good, ".", "..", 1), "", t0.Unix())
	f.Fuzz(func(t *testing.T, token, service string, unix int64) {
		now := time.Unix(unix, 0)
		user, err := k.Verify(token, service, now)
		if err != nil {
			if user != "" {
				t.Fatalf("error %v with user %q", err, user)
			}
			return
		}
		if ValidUser(user) != nil {
			t.Fatalf("accepted user %q", user)
		}
		p := strings.Split(token, ".")
		if len(p) != 3 {
			t.Fatalf("accepted %d parts", len(p))
		}
		mac := hmac.New(sha256.New, k)
		mac.Write([]byte(p[0] + "." + p[1]))
		if want := base64.RawURLEncoding.EncodeToString(mac.Sum(nil)); p[2] != want {
			t.Fatalf("accepted a signature that is not the key's: %q", token)
		}
		var head struct{ Alg string }
		if b, err := base64.RawURLEncoding.DecodeString(p[0]); err != nil || json.Unmarshal(b, &head) != nil || head.Alg != "HS256" {
			t.Fatalf("accepted header %q", p[0])
		}
		var claims struct {
			Sub string
			Exp *float64
			Aud any
		}
		b, err := base64.RawURLEncoding.DecodeString(p[1])
		if err != nil || json.Unmarshal(b, &claims) != nil {
			t.Fatalf("accepted claims %q", p[1])
		}
		if claims.Sub != user || claims.Exp == nil || float64(now.Unix()) >= *claims.Exp {
			t.Fatalf("accepted sub %q exp %v at %d, returned %q", claims.Sub, claims.Exp, now.Unix(), user)
		}
		if service != "" && !audienceHas(claims.Aud, service) {
			t.Fatalf("accepted audience %v for %q", claims.Aud, service)
		}
	})
}

func audienceHas(aud any, service string) bool {
	switch a := aud.(type) {
	case string:
		return a == service
	case []any:
		for _, s := range a {
			if s == service {
				return true
			}
		}
	}
	return false
}
