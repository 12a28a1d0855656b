package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"
)

func get(t *testing.T, h http.Handler, method, target string, hdr ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func body(t *testing.T, r *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// assetRef matches the page's references to its files: "./app.css?v=...".
var assetRef = regexp.MustCompile(`"\./([a-z]+\.[a-z]+)\?v=([0-9a-f]+)"`)

func TestPage(t *testing.T) {
	h := Handler()
	r := get(t, h, "GET", "/")
	page := body(t, r)
	if r.StatusCode != 200 {
		t.Fatalf("GET / = %d", r.StatusCode)
	}
	for k, want := range map[string]string{
		"Content-Type":           "text/html; charset=utf-8",
		"Cache-Control":          "no-cache",
		"X-Content-Type-Options": "nosniff",
	} {
		if got := r.Header.Get(k); got != want {
			t.Errorf("GET / %s = %q, want %q", k, got, want)
		}
	}
	if csp := r.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("Content-Security-Policy = %q, want scripts from the page's origin only", csp)
	}
	if r.Header.Get("ETag") == "" {
		t.Error("GET / has no ETag")
	}
	if !strings.Contains(page, `id="login-form"`) {
		t.Error("the page has no login form")
	}

	refs := assetRef.FindAllStringSubmatch(page, -1)
	if len(refs) < 3 {
		t.Fatalf("the page names %d versioned files, want the style sheet, the script and the icon: %v", len(refs), refs)
	}
	types := map[string]string{"css": "text/css; charset=utf-8", "js": "text/javascript; charset=utf-8", "svg": "image/svg+xml"}
	for _, ref := range refs {
		name, hash := ref[1], ref[2]
		r := get(t, h, "GET", "/"+name+"?v="+hash)
		b := body(t, r)
		if r.StatusCode != 200 || len(b) == 0 {
			t.Errorf("GET /%s = %d with %d bytes", name, r.StatusCode, len(b))
			continue
		}
		if got, want := r.Header.Get("Content-Type"), types[name[strings.LastIndexByte(name, '.')+1:]]; got != want {
			t.Errorf("/%s Content-Type = %q, want %q", name, got, want)
		}
		if got := r.Header.Get("Cache-Control"); !strings.Contains(got, "immutable") {
			t.Errorf("/%s?v=<its hash> Cache-Control = %q, want immutable", name, got)
		}
		if got := r.Header.Get("ETag"); got != `"`+hash+`"` {
			t.Errorf("/%s ETag = %s, want the hash the page names, %q", name, got, hash)
		}
		// The same file without the hash, or with an old one, is revalidated.
		for _, target := range []string{"/" + name, "/" + name + "?v=0123"} {
			if got := get(t, h, "GET", target).Header.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("%s Cache-Control = %q, want no-cache", target, got)
			}
		}
	}
}

// TestModulesResolve: every module a script imports is served, so the page
// cannot ship with a broken import.
func TestModulesResolve(t *testing.T) {
	h := Handler()
	imp := regexp.MustCompile(`(?m)^import [^;]*? from "\./([a-z]+\.js)";`)
	seen := map[string]bool{}
	queue := []string{"app.js"}
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		if seen[name] {
			continue
		}
		seen[name] = true
		r := get(t, h, "GET", "/"+name)
		src := body(t, r)
		if r.StatusCode != 200 {
			t.Fatalf("GET /%s = %d", name, r.StatusCode)
		}
		for _, m := range imp.FindAllStringSubmatch(src, -1) {
			queue = append(queue, m[1])
		}
	}
	for _, want := range []string{"conn.js", "log.js", "order.js", "outbox.js", "view.js"} {
		if !seen[want] {
			t.Errorf("app.js does not reach %s through its imports (reached %v)", want, seen)
		}
	}
}

func TestConditionalAndHead(t *testing.T) {
	h := Handler()
	first := get(t, h, "GET", "/app.js")
	etag := first.Header.Get("ETag")
	if r := get(t, h, "GET", "/app.js", "If-None-Match", etag); r.StatusCode != http.StatusNotModified {
		t.Errorf("GET with If-None-Match of the current ETag = %d, want 304", r.StatusCode)
	}
	if r := get(t, h, "GET", "/app.js", "If-None-Match", `"stale"`); r.StatusCode != 200 {
		t.Errorf("GET with a stale If-None-Match = %d, want 200", r.StatusCode)
	}
	r := get(t, h, "HEAD", "/")
	if r.StatusCode != 200 || body(t, r) != "" {
		t.Errorf("HEAD / = %d with a body", r.StatusCode)
	}
	if r.Header.Get("Content-Length") == "" || r.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Errorf("HEAD / headers = %v", r.Header)
	}
}

func TestNotServed(t *testing.T) {
	h := Handler()
	for _, target := range []string{"/nope", "/static/index.html", "/app.js/", "/../web.go", "/web.go", "/ws"} {
		if r := get(t, h, "GET", target); r.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", target, r.StatusCode)
		}
	}
	r := get(t, h, "POST", "/")
	if r.StatusCode != http.StatusMethodNotAllowed || r.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST / = %d Allow %q, want 405 with Allow: GET, HEAD", r.StatusCode, r.Header.Get("Allow"))
	}
}

// TestNewBuildNewURLs: a change to a file changes its ETag and the URL the
// page names it by, so a browser that cached the old one loads the new one.
func TestNewBuildNewURLs(t *testing.T) {
	build := func(js string) site {
		t.Helper()
		s, err := load(fstest.MapFS{
			"static/index.html": {Data: []byte(`<script type="module" src="./app.js"></script>`)},
			"static/app.js":     {Data: []byte(js)},
			"static/notes.txt":  {Data: []byte("not served")},
		})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b := build("one()"), build("two()")
	if a["/app.js"].etag == b["/app.js"].etag {
		t.Error("two versions of app.js share an ETag")
	}
	pa, pb := string(a["/"].body), string(b["/"].body)
	if pa == pb || !strings.Contains(pa, "./app.js?v="+a["/app.js"].hash) || !strings.Contains(pb, "./app.js?v="+b["/app.js"].hash) {
		t.Errorf("the page does not name each build's script by its hash:\n%s\n%s", pa, pb)
	}
	if _, ok := a["/notes.txt"]; ok {
		t.Error("a file of a type the page does not use is served")
	}
	if _, err := load(fstest.MapFS{"static/app.js": {Data: []byte("x")}}); err == nil {
		t.Error("load without index.html succeeded")
	}
}
