package web_test

import (
	"encoding/json"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/shoal-gw/shoal/service/chat/web"
	"github.com/shoal-gw/shoal/service/chat/web/browsertest"
	"github.com/shoal-gw/shoal/shard"
)

// openPage serves the page and opens it in Chromium; with no chat service
// behind it, the page stays at its login form, trying to connect.
func openPage(t *testing.T) *browsertest.Browser {
	t.Helper()
	srv := httptest.NewServer(web.Handler())
	t.Cleanup(srv.Close)
	b := browsertest.New(t, 1024, 768)
	b.Do(chromedp.Navigate(srv.URL + "/"))
	return b
}

// timelineHarness is evaluated in the page before each case: mk() makes a Timeline
// that records what it shows, m() makes a message.
const timelineHarness = `
window.th = window.th || (async () => {
	const { Timeline } = await import("/order.js");
	const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
	const m = (seq, prev) => ({ type: "message", room: "r", user: "u", text: "t" + seq, seq, prev, ts: "2026-01-01T00:00:00Z" });
	const mk = () => {
		const o = { shown: [], older: [], fetches: [], resets: 0 };
		o.t = new Timeline({
			append: (ms) => o.shown.push(...ms.map((x) => x.seq)),
			prepend: (ms) => o.older.push(...ms.map((x) => x.seq)),
			reset: () => { o.resets++; o.shown = []; },
			fetch: (after) => o.fetches.push(after),
			gapWait: 30,
		});
		return o;
	};
	const out = (o, extra) => ({ shown: o.shown, older: o.older, fetches: o.fetches, resets: o.resets, ...extra });
	return { sleep, m, mk, out };
})();
`

// timelineCases drive order.js through the protocol's ordering rules.
var timelineCases = []jsCase{
	{"in order", `const o = mk(); o.t.joined("E", [m(1, 0), m(2, 1)], false); o.t.live(m(3, 2)); o.t.live(m(4, 3)); return out(o);`,
		map[string]any{"shown": []any{1., 2., 3., 4.}, "fetches": []any{}}},
	{"duplicates dropped", `const o = mk(); o.t.joined("E", [m(1, 0), m(2, 1)], false); o.t.live(m(2, 1)); o.t.live(m(3, 2)); o.t.live(m(3, 2)); o.t.live(m(1, 0)); return out(o);`,
		map[string]any{"shown": []any{1., 2., 3.}}},
	{"reordered within the wait", `const o = mk(); o.t.joined("E", [m(1, 0)], false); o.t.live(m(3, 2)); o.t.live(m(2, 1)); await sleep(100); return out(o);`,
		map[string]any{"shown": []any{1., 2., 3.}, "fetches": []any{}}},
	{"gap fetched after the wait", `const o = mk(); o.t.joined("E", [m(1, 0)], false); o.t.live(m(3, 2)); const early = o.shown.length; await sleep(100);
		o.t.after("E", [m(2, 1), m(3, 2)], false); return out(o, { early });`,
		map[string]any{"shown": []any{1., 2., 3.}, "fetches": []any{1.}, "early": 1.}},
	{"live before joined", `const o = mk(); o.t.live(m(3, 2)); o.t.live(m(2, 1)); const early = o.shown.length; o.t.joined("E", [m(1, 0), m(2, 1)], false); return out(o, { early });`,
		map[string]any{"shown": []any{1., 2., 3.}, "early": 0.}},
	{"resume after a drop", `const o = mk(); o.t.joined("E", [m(1, 0), m(2, 1)], false); o.t.suspend(); const r = o.t.resume();
		o.t.live(m(4, 3)); o.t.joined("E", [m(3, 2)], false); return out(o, { r });`,
		map[string]any{"shown": []any{1., 2., 3., 4.}, "r": map[string]any{"after": 2., "epoch": "E"}, "resets": 0.}},
	{"new epoch resets", `const o = mk(); o.t.joined("E", [m(7, 6), m(8, 7)], false); o.t.suspend(); o.t.joined("F", [m(1, 0)], false); return out(o, { r: o.t.resume() });`,
		map[string]any{"shown": []any{1.}, "resets": 1., "r": map[string]any{"after": 1., "epoch": "F"}}},
	{"new epoch in history", `const o = mk(); o.t.joined("E", [m(1, 0)], false); const more = o.t.after("F", [m(1, 0)], false); return out(o, { more, epoch: o.t.epoch });`,
		map[string]any{"shown": []any{}, "resets": 1., "more": false, "epoch": nil}},
	{"nothing left to wait for", `const o = mk(); o.t.joined("E", [m(1, 0)], false); o.t.live(m(5, 4)); await sleep(100); o.t.after("E", [], false); return out(o);`,
		map[string]any{"shown": []any{1., 5.}, "fetches": []any{1.}}},
	{"more history to fetch", `const o = mk(); o.t.joined("E", [m(1, 0)], false); const more = o.t.after("E", [m(2, 1)], true); return out(o, { more });`,
		map[string]any{"shown": []any{1., 2.}, "more": true}},
	{"own message confirmed, copy lost", `const o = mk(); o.t.joined("E", [m(1, 0)], false); o.t.known(2); o.t.known(1); await sleep(100);
		const behind = o.t.behind; o.t.after("E", [m(2, 1)], false); return out(o, { behind, after: o.t.behind });`,
		map[string]any{"shown": []any{1., 2.}, "fetches": []any{1.}, "behind": true, "after": false}},
	{"confirmed copy arrives", `const o = mk(); o.t.joined("E", [m(1, 0)], false); o.t.known(2); o.t.live(m(2, 1)); await sleep(100); return out(o);`,
		map[string]any{"shown": []any{1., 2.}, "fetches": []any{}}},
	{"no fetch while suspended", `const o = mk(); o.t.joined("E", [m(1, 0)], false); o.t.live(m(3, 2)); o.t.suspend(); await sleep(100); return out(o);`,
		map[string]any{"shown": []any{1.}, "fetches": []any{}}},
	{"older pages", `const o = mk(); o.t.joined("E", [m(5, 4), m(6, 5)], true); const a = o.t.hasOlder;
		o.t.before("E", [m(3, 2), m(4, 3)], true); const b = o.t.hasOlder; o.t.before("E", [m(1, 0), m(2, 1)], false); const c = o.t.hasOlder;
		return out(o, { a, b, c, first: o.t.first });`,
		map[string]any{"shown": []any{5., 6.}, "older": []any{3., 4., 1., 2.}, "a": true, "b": true, "c": false, "first": 1.}},
	{"older trimmed: the server's word wins", `const o = mk(); o.t.joined("E", [m(5, 4)], false); return out(o, { older: o.t.hasOlder });`,
		map[string]any{"older": false}},
	{"more of a resumed join is newer", `const o = mk(); o.t.joined("E", [m(1, 0)], true); const fresh = o.t.hasOlder; o.t.suspend();
		const more = o.t.joined("E", [m(2, 1)], true); return out(o, { fresh, more, older: o.t.hasOlder });`,
		map[string]any{"fresh": true, "more": true, "older": true, "shown": []any{1., 2.}}},
	{"older of another epoch ignored", `const o = mk(); o.t.joined("E", [m(5, 4)], false); o.t.before("F", [m(3, 2)]); return out(o);`,
		map[string]any{"older": []any{}}},
	{"malformed ignored", `const o = mk(); o.t.joined("E", [m(1, 0), { seq: "x" }, null, { seq: -1 }], false); o.t.live({ prev: 1 }); o.t.live({ seq: 0, prev: 1 }); o.t.live(null); return out(o);`,
		map[string]any{"shown": []any{1.}}},
}

// presenceCases drive order.js's Presence: the newest revision about each
// user wins, whatever the order of arrival.
var presenceCases = []struct {
	name string
	js   string // statements on p, a new Presence
	want []any  // the members after them, sorted
}{
	{"events in order", `p.snapshot(["a"], 10); p.event("b", "join", 11); p.event("a", "leave", 12);`, []any{"b"}},
	{"a stale leave after a join", `p.snapshot(["a"], 10); p.event("b", "join", 13); p.event("b", "leave", 12);`, []any{"a", "b"}},
	{"events older than the snapshot", `p.snapshot(["a", "b"], 20); p.event("b", "leave", 15); p.event("c", "join", 19);`, []any{"a", "b"}},
	{"an event that overtook its snapshot", `p.event("c", "join", 31); p.snapshot(["a"], 30);`, []any{"a", "c"}},
	{"an event the snapshot already holds", `p.event("c", "leave", 29); p.snapshot(["a", "c"], 30);`, []any{"a", "c"}},
	{"no revisions: as they come", `p.snapshot(["a"]); p.event("b", "join"); p.event("a", "leave");`, []any{"b"}},
	{"after a reset, small revisions count", `p.snapshot(["a"], 500); p.reset(); p.snapshot(["a"], 3); p.event("b", "join", 4);`, []any{"a", "b"}},
}

// TestPresence runs order.js's Presence in Chromium.
func TestPresence(t *testing.T) {
	b := openPage(t)
	for _, tc := range presenceCases {
		t.Run(tc.name, func(t *testing.T) {
			got := browsertest.Eval[[]any](b, `(async () => { const { Presence } = await import("/order.js"); const p = new Presence(); `+tc.js+` return [...p].sort(); })()`)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("members = %v, want %v", got, tc.want)
			}
		})
	}
}

// outboxHarness makes mk(): an Outbox whose hooks record what it sends
// (the texts, in order), what it removes and how often it checks; request
// ids count from 1.
const outboxHarness = `
window.oh = window.oh || (async () => {
	const { Outbox } = await import("/outbox.js");
	const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
	const mk = (open = true, sentWithin = 30) => {
		const o = { sends: [], removed: [], checks: 0, n: 0 };
		o.b = new Outbox({
			send: (p) => { o.sends.push(p.text); return ++o.n; },
			changed: () => {},
			removed: (p) => o.removed.push(p.text),
			check: () => o.checks++,
			sentWithin,
		});
		o.b.setOpen(open);
		return o;
	};
	const out = (o, extra) => ({ sends: o.sends, removed: o.removed, checks: o.checks, left: o.b.items.map((p) => p.text + ":" + p.state), ...extra });
	return { sleep, mk, out };
})();
`

// jsCase is a script run in the page and what its result must hold.
type jsCase struct {
	name string
	js   string // the body of an async function; its harness's names are in scope
	want map[string]any
}

// runJSCases runs each case after its harness, which leaves a promise of
// its helpers in the global named by global; use names those helpers.
func runJSCases(t *testing.T, b *browsertest.Browser, harness, global, use string, cases []jsCase) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			js := harness + `(async () => { const { ` + use + ` } = await window.` + global + `; ` + tc.js + ` })().then((v) => JSON.stringify(v))`
			var got map[string]any
			if err := json.Unmarshal([]byte(browsertest.Eval[string](b, js)), &got); err != nil {
				t.Fatal(err)
			}
			for k, want := range tc.want {
				if !reflect.DeepEqual(got[k], want) {
					t.Errorf("%s = %v, want %v (all: %v)", k, got[k], want, got)
				}
			}
		})
	}
}

// outboxCases drive outbox.js: own messages go in order, one at a time,
// each once.
var outboxCases = []jsCase{
	{"one at a time, in order", `const o = mk(); o.b.add("a"); o.b.add("b"); o.b.add("c"); const first = [...o.sends];
		o.b.sent(1, 5, 4); o.b.arrived({ seq: 5, text: "a" }); o.b.sent(2, 6, 5); o.b.arrived({ seq: 6, text: "b" }); return out(o, { first });`,
		map[string]any{"first": []any{"a"}, "sends": []any{"a", "b", "c"}, "removed": []any{"a", "b"}, "left": []any{"c:sending"}}},
	{"the copy before its sent", `const o = mk(); o.b.add("a"); o.b.add("b"); o.b.arrived({ seq: 5, text: "a" }); o.b.sent(1, 5, 5); return out(o);`,
		map[string]any{"sends": []any{"a", "b"}, "removed": []any{"a"}, "left": []any{"b:sending"}}},
	{"told to wait, order kept", `const o = mk(true, 10000); o.b.add("a"); o.b.add("b"); o.b.later(1, "wait", 60); const during = [...o.sends]; await sleep(150); return out(o, { during });`,
		map[string]any{"during": []any{"a"}, "sends": []any{"a", "a"}, "left": []any{"a:sending", "b:queued"}}},
	{"dropped socket, stored: not sent again", `const o = mk(); o.b.add("a"); o.b.setOpen(false); const mid = o.b.items[0].state; o.b.arrived({ seq: 7, text: "a" }); o.b.setOpen(true); return out(o, { mid });`,
		map[string]any{"mid": "unsent", "sends": []any{"a"}, "removed": []any{"a"}, "left": []any{}}},
	{"dropped socket, not stored: sent again", `const o = mk(); o.b.add("a"); o.b.setOpen(false); o.b.caughtUp(3); o.b.setOpen(true); return out(o);`,
		map[string]any{"sends": []any{"a", "a"}, "left": []any{"a:sending"}}},
	{"a copy from elsewhere does not settle what never went", `const o = mk(false); o.b.add("hi"); o.b.arrived({ seq: 4, text: "hi" }); o.b.setOpen(true); return out(o);`,
		map[string]any{"sends": []any{"hi"}, "removed": []any{}, "left": []any{"hi:sending"}}},
	{"refused: the next goes, retry later", `const o = mk(); o.b.add("a"); o.b.add("b"); o.b.refuse(1, "no"); const mid = out(o).left;
		o.b.retry(o.b.items[0]); o.b.sent(2, 8, 7); return out(o, { mid });`,
		map[string]any{"mid": []any{"a:failed", "b:sending"}, "sends": []any{"a", "b", "a"}, "left": []any{"a:sending", "b:sent"}}},
	{"no sent: the history is checked first", `const o = mk(); o.b.add("a"); await sleep(100); const mid = out(o); o.b.setOpen(true); return out(o, { mid: mid.left, checks0: mid.checks });`,
		map[string]any{"mid": []any{"a:unsent"}, "checks0": 1., "sends": []any{"a", "a"}}},
	{"caught up past a confirmed one", `const o = mk(); o.b.add("a"); o.b.sent(1, 9, 3); const mid = out(o).left; o.b.caughtUp(9); return out(o, { mid });`,
		map[string]any{"mid": []any{"a:sent"}, "removed": []any{"a"}, "left": []any{}}},
	{"unavailable, stored: not sent again", `const o = mk(); o.b.add("a"); o.b.unknown(1, "busy", 0); const mid = out(o); o.b.arrived({ seq: 3, text: "a" }); o.b.setOpen(true);
		return out(o, { mid: mid.left, checks0: mid.checks });`,
		map[string]any{"mid": []any{"a:unsent"}, "checks0": 1., "sends": []any{"a"}, "left": []any{}}},
	{"unavailable, not stored: sent again after the check", `const o = mk(true, 10000); o.b.add("a"); o.b.unknown(1, "busy", 40); o.b.caughtUp(2); o.b.setOpen(true);
		const during = [...o.sends]; await sleep(120); return out(o, { during });`,
		map[string]any{"during": []any{"a"}, "sends": []any{"a", "a"}, "left": []any{"a:sending"}}},
	{"discard", `const o = mk(false); o.b.add("a"); o.b.add("b"); o.b.discard(o.b.items[0]); o.b.setOpen(true); return out(o);`,
		map[string]any{"sends": []any{"b"}, "removed": []any{"a"}}},
}

// TestOutbox runs outbox.js in Chromium.
func TestOutbox(t *testing.T) {
	runJSCases(t, openPage(t), outboxHarness, "oh", "sleep, mk, out", outboxCases)
}

// TestTimeline runs order.js in Chromium.
func TestTimeline(t *testing.T) {
	b := openPage(t)
	runJSCases(t, b, timelineHarness, "th", "sleep, m, mk, out", timelineCases)
	if errs := b.Errors(); len(errs) > 0 {
		t.Errorf("page errors: %v", errs)
	}
}

// TestConnectionHelpers checks the parsers of conn.js in Chromium.
func TestConnectionHelpers(t *testing.T) {
	b := openPage(t)
	// The reasons a draining gateway worker sends, as it writes them.
	drained, _ := json.Marshal([]string{
		shard.ReconnectReason("server restarting", 881*time.Millisecond),
		shard.ReconnectReason("server shutting down", 3412*time.Millisecond),
	})
	js := `(async () => {
		const c = await import("/conn.js");
		const hints = ["reconnect in 2.5s", "Reconnect after 500ms", "reconnect_in=3", "restarting, reconnect in 1 min", "reconnect in 10 minutes", "going away", "", ...` + string(drained) + `].map(c.reconnectHint);
		const steps = [0, 1, 2, 3, 4, 5, 10, 30];
		const lows = steps.map((n) => c.backoff(n, () => 0));
		const highs = steps.map((n) => c.backoff(n, () => 1));
		const urls = [
			c.socketURL("h:1", "/ws/chat", null, "http:"),
			c.socketURL("h:1", "/ws/chat", "a b/c", "http:"),
			c.socketURL("h:1", "/ws/chat", null, "https:"),
			c.socketURL("wss://x:9", "/ws/chat", null, "http:"),
			c.socketURL("http://y/ignored/path", "/ws/chat", "t", "https:"),
		];
		return JSON.stringify({ hints, lows, highs, urls, servers: c.parseServers(" a:1, b:2,,c  d:4 "), none: c.parseServers(null) });
	})()`
	var got struct {
		Hints, Lows, Highs []float64
		URLs               []string
		Servers, None      []string
	}
	if err := json.Unmarshal([]byte(browsertest.Eval[string](b, js)), &got); err != nil {
		t.Fatal(err)
	}
	if want := []float64{2500, 500, 3000, 60000, 300000, -1, -1, 881, 3412}; !reflect.DeepEqual(got.Hints, want) {
		t.Errorf("reconnectHint = %v, want %v", got.Hints, want)
	}
	if want := []float64{250, 500, 1000, 2000, 4000, 5000, 5000, 5000}; !reflect.DeepEqual(got.Lows, want) {
		t.Errorf("backoff lows = %v, want %v", got.Lows, want)
	}
	if want := []float64{500, 1000, 2000, 4000, 8000, 10000, 10000, 10000}; !reflect.DeepEqual(got.Highs, want) {
		t.Errorf("backoff highs = %v, want %v", got.Highs, want)
	}
	wantURLs := []string{"ws://h:1/ws/chat", "ws://h:1/ws/chat?token=a%20b%2Fc", "wss://h:1/ws/chat", "wss://x:9/ws/chat", "ws://y/ws/chat?token=t"}
	if !reflect.DeepEqual(got.URLs, wantURLs) {
		t.Errorf("socketURL = %v, want %v", got.URLs, wantURLs)
	}
	if want := []string{"a:1", "b:2", "c", "d:4"}; !reflect.DeepEqual(got.Servers, want) || len(got.None) != 0 {
		t.Errorf("parseServers = %v and %v, want %v and []", got.Servers, got.None, want)
	}
}

// TestPageBoots: under its own Content-Security-Policy the page loads its
// modules, shows the login form, and says it is trying to connect.
func TestPageBoots(t *testing.T) {
	b := openPage(t)
	b.WaitFor("the login form", `!document.getElementById("login").hidden && document.getElementById("boot").hidden`, `document.body.innerText.slice(0, 200)`, 10*time.Second)
	b.WaitFor("the connection state", `document.querySelector("#login .conn-dot").dataset.state === "reconnecting"`,
		`document.getElementById("login-conn").textContent`, 10*time.Second)
	if disabled := browsertest.Eval[bool](b, `document.getElementById("login-btn").disabled`); !disabled {
		t.Error("the log in button is enabled with no connection")
	}
	if errs := b.Errors(); len(errs) > 0 {
		t.Errorf("page errors: %v", errs)
	}
}
