// Package web is the chat's browser client: a page, a style sheet and a few
// plain JavaScript modules, embedded in the binary so that the gateway
// serves a working chat at its own address with nothing else installed.
//
// The files need no build step and load nothing from elsewhere (no fonts,
// no CDN): the page works on a network with no way out. It speaks the chat
// protocol (service/chat/PROTOCOL.md) over ws(s)://<host>/ws/chat.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// versionQuery is the query parameter that names an asset's content hash.
// A URL that carries the current hash may be cached for good: a new build
// changes the hash in the page, and so the URL.
const versionQuery = "v"

// contentTypes are the types of the files the page is made of; a file of
// another kind is not served.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
}

// policy is the page's Content-Security-Policy: everything from here, and
// sockets to any gateway, since a page may be told to use several hosts.
// Without inline script, a message rendered by mistake as HTML still could
// not run code.
const policy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// file is one embedded file, ready to serve.
type file struct {
	body  []byte
	ctype string
	etag  string // strong, quoted: the first bytes of the SHA-256 of body
	hash  string // the same hash, unquoted, for ?v=
}

// site is the set of files, by URL path.
type site map[string]*file

// Handler serves the chat's page at / and its files beside it. GET and HEAD
// only; any other path is a 404.
//
// Every answer has a strong ETag (the content's hash), so a browser
// revalidates cheaply and a restart with a new build is picked up at once.
// The page itself is never cached without revalidation; it names its style
// sheet and entry script with ?v=<hash>, and those URLs may be cached for a
// year.
func Handler() http.Handler {
	return mustLoad(static)
}

func mustLoad(fsys fs.FS) site {
	s, err := load(fsys)
	if err != nil {
		// The files are embedded at build time; failing here means the
		// binary itself is broken, which no caller can recover from.
		panic("web: " + err.Error())
	}
	return s
}

// load reads every file under static/. index.html is rewritten so that
// its references to the other files carry their hash.
func load(fsys fs.FS) (site, error) {
	s := make(site)
	err := fs.WalkDir(fsys, "static", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ctype, ok := contentTypes[path.Ext(name)]
		if !ok {
			return nil
		}
		body, err := fs.ReadFile(fsys, name)
		if err != nil {
			return err
		}
		s["/"+strings.TrimPrefix(name, "static/")] = newFile(body, ctype)
		return nil
	})
	if err != nil {
		return nil, err
	}
	index, ok := s["/index.html"]
	if !ok {
		return nil, fs.ErrNotExist
	}
	body := index.body
	for p, f := range s {
		if p == "/index.html" {
			continue
		}
		// The page names its files as "./name" in src and href attributes.
		old := []byte(`".` + p + `"`)
		body = bytes.ReplaceAll(body, old, []byte(`".`+p+"?"+versionQuery+"="+f.hash+`"`))
	}
	s["/index.html"] = newFile(body, index.ctype)
	s["/"] = s["/index.html"]
	return s, nil
}

func newFile(body []byte, ctype string) *file {
	sum := sha256.Sum256(body)
	h := hex.EncodeToString(sum[:8])
	return &file{body: body, ctype: ctype, etag: `"` + h + `"`, hash: h}
}

func (s site) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f, ok := s[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h := w.Header()
	h.Set("Content-Type", f.ctype)
	h.Set("ETag", f.etag)
	h.Set("X-Content-Type-Options", "nosniff")
	switch {
	case f.ctype == contentTypes[".html"]:
		h.Set("Cache-Control", "no-cache")
		h.Set("Content-Security-Policy", policy)
		h.Set("Referrer-Policy", "no-referrer")
	case r.URL.Query().Get(versionQuery) == f.hash:
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	default:
		// Modules imported by other modules are named without a hash:
		// the browser asks again each time and gets a 304 while the
		// build is the same.
		h.Set("Cache-Control", "no-cache")
	}
	// ServeContent answers HEAD, ranges and If-None-Match against the
	// ETag set above; the zero time leaves Last-Modified out, since the
	// embedded files carry none.
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
}
