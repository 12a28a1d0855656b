package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/shoal-gw/shoal/service/chat/web/browsertest"
)

// pageTimeout bounds what a page waits for: a message from the other
// browser, a reconnect after a restart.
const pageTimeout = 60 * time.Second

// chatPage is one user's browser on the chat page.
type chatPage struct {
	*browsertest.Browser
	t    *testing.T
	name string
}

func openChat(t *testing.T, url, name string, width, height int) *chatPage {
	t.Helper()
	p := &chatPage{Browser: browsertest.New(t, width, height), t: t, name: name}
	p.Do(chromedp.Navigate(url))
	return p
}

// js quotes s as a JavaScript string.
func js(s string) string { return strconv.Quote(s) }

func (p *chatPage) wait(what, cond string) {
	p.t.Helper()
	p.WaitFor(p.name+": "+what, cond, `document.body.innerText.slice(0, 600).replace(/\s+/g, " ")`, pageTimeout)
}

// register creates the account with the form's second button.
func (p *chatPage) register(password string) {
	p.t.Helper()
	p.wait("the login form", `!document.getElementById("login").hidden && !document.getElementById("register-btn").disabled`)
	p.Do(chromedp.SendKeys(chromedp.CSS("#login-user"), p.name),
		chromedp.SendKeys(chromedp.CSS("#login-pass"), password),
		chromedp.Click(chromedp.CSS("#register-btn")))
	p.wait("the chat after registering", `!document.getElementById("chat").hidden && document.getElementById("me-name").textContent === `+js(p.name))
}

// drawer opens the rooms drawer when the page shows it as one (a phone).
func (p *chatPage) drawer() {
	p.t.Helper()
	if browsertest.Eval[bool](p.Browser, `getComputedStyle(document.getElementById("side-open")).display !== "none"`) {
		p.Do(chromedp.Click(chromedp.CSS("#side-open")))
		// Clicks land where things are: wait for the drawer to finish sliding.
		p.wait("the rooms drawer", `document.getElementById("sidebar").getBoundingClientRect().left === 0`)
	}
}

func (p *chatPage) join(room string) {
	p.t.Helper()
	p.drawer()
	p.Do(chromedp.SendKeys(chromedp.CSS("#join-input"), room), browsertest.Enter(false))
	p.wait("to be in "+room, `document.getElementById("room-title").textContent === "#`+room+`" && /member/.test(document.getElementById("room-sub").textContent)`)
}

// say types text into the composer (a "\n" in it as Shift+Enter) and
// sends it with Enter.
func (p *chatPage) say(text string) {
	p.t.Helper()
	for i, line := range strings.Split(text, "\n") {
		if i > 0 {
			p.Do(browsertest.Enter(true))
		}
		p.Do(chromedp.SendKeys(chromedp.CSS("#text"), line))
	}
	p.Do(browsertest.Enter(false))
	p.wait("the composer to be empty", `document.getElementById("text").value === ""`)
}

// messagesJS lists the room's shown messages as [user, text, seq].
const messagesJS = `[...document.querySelectorAll("#scroller .msg:not(.pending)")].map((e) => [e.dataset.user, e.querySelector(".text").textContent, +e.dataset.seq])`

type shownMessage struct {
	user, text string
	seq        int
}

func (p *chatPage) messages() []shownMessage {
	p.t.Helper()
	var out []shownMessage
	for _, r := range browsertest.Eval[[][]any](p.Browser, messagesJS) {
		out = append(out, shownMessage{user: r[0].(string), text: r[1].(string), seq: int(r[2].(float64))})
	}
	return out
}

func (p *chatPage) waitMessage(user, text string) {
	p.t.Helper()
	p.wait(fmt.Sprintf("the message %q of %s", text, user),
		`[...document.querySelectorAll("#scroller .msg:not(.pending)")].some((e) => e.dataset.user === `+js(user)+` && e.querySelector(".text").textContent === `+js(text)+`)`)
}

func (p *chatPage) waitMember(user string, present bool) {
	p.t.Helper()
	cond := `!!document.querySelector('#member-list li[data-user="` + user + `"]')`
	if !present {
		cond = "!" + cond
	}
	p.wait(fmt.Sprintf("%s in the member list: %v", user, present), cond)
}

func (p *chatPage) waitState(state string) {
	p.t.Helper()
	p.wait("connection state "+state, `document.getElementById("conn-state").dataset.state === `+js(state))
}

// checkLog: the page shows exactly want, in order, each once, with rising
// seqs.
func (p *chatPage) checkLog(want []shownMessage) {
	p.t.Helper()
	got := p.messages()
	same := len(got) == len(want)
	for i := 0; same && i < len(got); i++ {
		same = got[i].user == want[i].user && got[i].text == want[i].text
	}
	if !same {
		p.t.Fatalf("%s shows %v, want %v", p.name, got, want)
	}
	for i := 1; i < len(got); i++ {
		if got[i].seq <= got[i-1].seq {
			p.t.Fatalf("%s shows seq %d after %d: %v", p.name, got[i].seq, got[i-1].seq, got)
		}
	}
}

func (p *chatPage) noErrors() {
	p.t.Helper()
	if errs := p.Errors(); len(errs) > 0 {
		p.t.Errorf("%s: page errors: %v", p.name, errs)
	}
}

// TestChatInBrowsers runs the chat page in two real headless Chromium
// browsers against `shoal serve` with the chat service: a laptop and a
// phone register, meet in a room, talk both ways, reload, and live through
// a restart of the whole server without losing or doubling a message.
func TestChatInBrowsers(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary and Chromium")
	}
	if _, err := browsertest.ExecPath(); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	serve := func(addr string) *fleet {
		return startServe(t, "--workers", "2", "--services", "chat", "--data", data, "--addr", addr, "--drain-timeout", "3s")
	}
	f := serve("127.0.0.1:0")
	hostport := strings.TrimPrefix(f.ws, "ws://")
	url := "http://" + hostport + "/"

	// The page is the gateway's own, beside /healthz.
	for path, want := range map[string]string{"/": `id="login-form"`, "/healthz": "ok "} {
		resp, err := http.Get("http://" + hostport + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
			t.Fatalf("GET %s = %d %.80q, want 200 with %q", path, resp.StatusCode, b, want)
		}
	}

	// Alice's page is given a list of gateways whose first is down: it
	// moves on to the next.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()

	shots := browsertest.ScreenshotDir(t)
	alice := openChat(t, url+"?servers="+down+","+hostport, "alice", 1366, 820)
	bob := openChat(t, url, "bob", 390, 844)
	t.Logf("screenshot %s", bob.Screenshot(shots, "login-phone"))
	const password = "correct horse"
	alice.register(password)
	bob.register(password)

	const room = "harbour"
	alice.join(room)
	bob.join(room)
	alice.waitMember("bob", true)
	bob.waitMember("alice", true)

	// Text is shown as text: markup in a message stays characters.
	hello := `hello bob <img src=x onerror="document.title='owned'"> & welcome`
	alice.say(hello)
	bob.waitMessage("alice", hello)
	if n := browsertest.Eval[int](bob.Browser, `document.querySelectorAll("#scroller .msg .text img").length`); n != 0 {
		t.Fatalf("a message's markup became %d elements on bob's page", n)
	}
	reply := "hi alice\nthe tide is in"
	bob.say(reply)
	alice.waitMessage("bob", reply)
	bob.waitMessage("bob", reply)
	log := []shownMessage{{user: "alice", text: hello}, {user: "bob", text: reply}}
	alice.checkLog(log)
	bob.checkLog(log)
	if own := browsertest.Eval[bool](alice.Browser, `document.querySelector('#scroller .msg[data-user="alice"]').classList.contains("own")`); !own {
		t.Error("alice's own message is not marked as hers")
	}
	for _, msg := range []string{"the harbour master says the boats are in", "nets are mended, we sail at six"} {
		alice.say(msg)
		bob.waitMessage("alice", msg)
		log = append(log, shownMessage{user: "alice", text: msg})
	}
	t.Logf("screenshot %s", alice.Screenshot(shots, "chat-laptop"))
	t.Logf("screenshot %s", bob.Screenshot(shots, "chat-phone"))

	// A reload comes back logged in, in the room, with its history once.
	bob.Do(chromedp.Reload())
	bob.wait("the room after the reload", `document.getElementById("room-title").textContent === "#`+room+`" && /member/.test(document.getElementById("room-sub").textContent)`)
	bob.waitMessage("alice", log[len(log)-1].text)
	bob.checkLog(log)

	// Members come and go, live.
	bob.drawer()
	bob.Do(chromedp.Click(chromedp.CSS(`#joined-list li[data-room="` + room + `"] .leave-btn`)))
	alice.waitMember("bob", false)
	bob.join(room)
	alice.waitMember("bob", true)
	bob.waitMessage("alice", log[len(log)-1].text)
	bob.checkLog(log)

	// The whole server restarts on the same port and data; the pages
	// reconnect by themselves. What is said before, during and after the
	// restart shows once on both pages.
	alice.say("before the restart")
	bob.waitMessage("alice", "before the restart")
	log = append(log, shownMessage{user: "alice", text: "before the restart"})
	if err := f.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-f.exit; err != nil {
		t.Fatalf("shoal serve exited with %v, want 0", err)
	}
	alice.waitState("reconnecting")
	bob.waitState("reconnecting")
	alice.say("while the server was away")
	alice.wait("the message to wait for the connection", `!!document.querySelector("#scroller .msg.pending")`)
	t.Logf("screenshot %s", alice.Screenshot(shots, "reconnecting-laptop"))
	f = serve(hostport)
	if got := strings.TrimPrefix(f.ws, "ws://"); got != hostport {
		t.Fatalf("restarted on %s, want %s", got, hostport)
	}
	alice.waitState("connected")
	bob.waitState("connected")
	log = append(log, shownMessage{user: "alice", text: "while the server was away"})
	bob.waitMessage("alice", "while the server was away")
	bob.say("back again")
	alice.waitMessage("bob", "back again")
	bob.waitMessage("bob", "back again")
	log = append(log, shownMessage{user: "bob", text: "back again"})
	alice.wait("no message left pending", `!document.querySelector("#scroller .msg.pending")`)
	alice.checkLog(log)
	bob.checkLog(log)
	t.Logf("screenshot %s", alice.Screenshot(shots, "after-restart-laptop"))

	// The members drawer on the phone.
	bob.Do(chromedp.Click(chromedp.CSS("#members-toggle")))
	bob.wait("the members drawer", `document.getElementById("members").getBoundingClientRect().right === window.innerWidth`)
	bob.waitMember("alice", true)
	t.Logf("screenshot %s", bob.Screenshot(shots, "members-phone"))

	// A token the gateway refuses (401 at the handshake) sends the page
	// back to its login form; logging in again brings the room back.
	bob.Do(chromedp.Evaluate[chromedp.Void](`(() => { const a = JSON.parse(localStorage.getItem("shoal.chat.auth")); a.token = "not-a-token"; localStorage.setItem("shoal.chat.auth", JSON.stringify(a)); })()`, chromedp.EvalIgnoreExceptions))
	bob.Do(chromedp.Reload())
	bob.wait("the login form after a refused token", `!document.getElementById("login").hidden && /expired/.test(document.getElementById("login-error").textContent)`)
	bob.Do(chromedp.SendKeys(chromedp.CSS("#login-pass"), password), chromedp.Click(chromedp.CSS("#login-btn")))
	bob.wait("the room after logging in again", `document.getElementById("room-title").textContent === "#`+room+`" && /member/.test(document.getElementById("room-sub").textContent)`)
	bob.waitMessage("bob", "back again")
	bob.checkLog(log)

	alice.noErrors()
	bob.noErrors()
	// Bob's reload closed his connection and his login opened another:
	// alice may have seen him leave, and sees him back once his join's
	// presence reaches her.
	alice.waitMember("bob", true)
	if users := alice.members(); !slices.Equal(users, []string{"alice", "bob"}) {
		t.Errorf("alice's member list = %v, want [alice bob]", users)
	}
}

func (p *chatPage) members() []string {
	p.t.Helper()
	return browsertest.Eval[[]string](p.Browser, `[...document.querySelectorAll("#member-list li")].map((e) => e.dataset.user)`)
}
