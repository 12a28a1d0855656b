// The chat page: log in, join rooms, talk. It speaks the chat protocol of
// service/chat over one WebSocket (conn.js), keeps each room's messages and
// members in order (order.js), shows a room's messages with log.js and the
// rest of the page with view.js.

import { Connection, parseServers } from "./conn.js";
import { Presence, Timeline } from "./order.js";
import { MessageLog } from "./log.js";
import { Outbox } from "./outbox.js";
import { avatar, byteLength, directoryItem, friendly, memberItem, roomItem, ROOM_RE, USER_RE } from "./view.js";

const root = document.documentElement;
const PATH = root.dataset.path || "/ws/chat";
const MAX_TEXT = parseInt(root.dataset.maxText, 10) || 4096;
const AUTH_KEY = "shoal.chat.auth";
const roomsKey = (user) => "shoal.chat.rooms." + user;

/** How often the room list is asked for while nothing else asks (ms). */
const ROOMS_EVERY = 15000;
/** How often the room on screen checks that nothing was missed (ms). */
const CHECK_EVERY = 60000;
/** How many older messages one "load older" brings. */
const OLDER_PAGE = 50;
/** Scroll distance from the bottom that still counts as "at the bottom" (px). */
const NEAR_BOTTOM = 120;
/** Retry delays after an error that says to try again (ms). */
const RETRY_LATER = { rate_limited: 1500, unavailable: 2500 };

const $ = (id) => document.getElementById(id);

// ---- storage

function loadJSON(key) {
  try {
    return JSON.parse(localStorage.getItem(key) || "null");
  } catch {
    return null;
  }
}

function saveJSON(key, v) {
  try {
    if (v === null) localStorage.removeItem(key);
    else localStorage.setItem(key, JSON.stringify(v));
  } catch {
    // Private mode or a full store: the page works, it just forgets on reload.
  }
}

// ---- state

const state = {
  auth: loadJSON(AUTH_KEY), // {user, token}; token null once it went stale
  me: null, // the user this socket speaks for, once welcomed
  welcomed: false,
  rooms: new Map(), // name -> Room, in the order joined
  current: null, // the room on screen
  directory: [], // [{room, members}] from the last rooms answer
  nextID: 1,
  reqs: new Map(), // id -> what the request was, for its answer or error
  login: null, // {action, user} while a login or register is out
  roomsTimer: 0,
};

const servers = parseServers(new URLSearchParams(location.search).get("servers") || root.dataset.servers || "");

const conn = new Connection({
  servers,
  path: PATH,
  token: () => (state.auth && state.auth.token) || null,
  onOpen,
  onClose,
  onFrame,
  onStaleToken,
  onStatus: showStatus,
});

function request(frame, what) {
  const id = state.nextID++;
  state.reqs.set(id, what);
  if (!conn.send({ ...frame, id })) {
    state.reqs.delete(id);
    return 0;
  }
  return id;
}

// ---- rooms

class Room {
  constructor(name) {
    this.name = name;
    this.members = new Presence();
    this.unread = 0;
    this.joined = false; // joined on the current socket
    this.caughtUp = false; // and its history is complete
    this.everJoined = false;
    this.scrollTop = -1; // where the reader left the room; -1: at the bottom
    this.loadingOlder = false;
    this.log = new MessageLog(name, () => loadOlder(this));
    this.outbox = new Outbox({
      send: (p) => request({ type: "say", room: name, text: p.text }, { kind: "say", room: name }),
      changed: (p) => this.log.mark(p),
      removed: (p) => this.log.removePending(p),
      check: () => {
        this.caughtUp = false;
        fetchAfter(this);
      },
    });
    this.tl = new Timeline({
      append: (msgs) => appendMessages(this, msgs),
      prepend: (msgs) => prependMessages(this, msgs),
      reset: () => this.log.clear(),
      fetch: (after) => fetchAfter(this, after),
    });
  }
}

function persistRooms() {
  if (!state.me) return;
  saveJSON(roomsKey(state.me), { rooms: [...state.rooms.keys()], current: state.current });
}

function restoreRooms(user) {
  const saved = loadJSON(roomsKey(user));
  if (!saved || !Array.isArray(saved.rooms)) return;
  for (const name of saved.rooms) {
    if (ROOM_RE.test(name) && !state.rooms.has(name)) state.rooms.set(name, new Room(name));
  }
  if (saved.current && state.rooms.has(saved.current)) state.current = saved.current;
  else state.current = state.rooms.keys().next().value || null;
}

/** openRoom joins a room (if not yet) and puts it on screen. */
function openRoom(name) {
  let room = state.rooms.get(name);
  if (!room) {
    room = new Room(name);
    state.rooms.set(name, room);
    sendJoin(room);
  }
  select(name);
  persistRooms();
  closeDrawers();
}

function sendJoin(room) {
  room.joined = false;
  room.caughtUp = false;
  room.outbox.setOpen(false, waitNote());
  if (!state.welcomed) return;
  request({ type: "join", room: room.name, ...room.tl.resume() }, { kind: "join", room: room.name });
}

function leaveRoom(name) {
  const room = state.rooms.get(name);
  if (!room) return;
  room.tl.suspend();
  state.rooms.delete(name);
  if (state.welcomed) request({ type: "leave", room: name }, { kind: "leave", room: name });
  if (state.current === name) state.current = state.rooms.keys().next().value || null;
  persistRooms();
  select(state.current);
  scheduleRooms(300);
}

function fetchAfter(room, after) {
  if (!state.welcomed || !room.joined) return;
  const epoch = room.tl.epoch ? { epoch: room.tl.epoch } : {};
  request({ type: "history", room: room.name, after: after ?? room.tl.last, limit: 1000, ...epoch }, { kind: "after", room: room.name });
}

function loadOlder(room) {
  if (room.loadingOlder || !state.welcomed || !room.tl.hasOlder) return;
  room.loadingOlder = true;
  room.log.top(true, true);
  const id = request({ type: "history", room: room.name, before: room.tl.first, limit: OLDER_PAGE }, { kind: "before", room: room.name });
  if (!id) olderDone(room);
}

function olderDone(room) {
  room.loadingOlder = false;
  room.log.top(room.tl.hasOlder, false);
}

// caughtUp: the room is joined and nothing is missing; what waited to be
// sent goes out now, after the history has shown what already arrived.
function caughtUp(room) {
  room.caughtUp = true;
  room.outbox.caughtUp(room.tl.last);
  room.outbox.setOpen(state.welcomed && room.joined, waitNote());
  olderDone(room);
}

// ---- the message log

function scroller() {
  return $("scroller");
}

function atBottom() {
  const s = scroller();
  return s.scrollHeight - s.scrollTop - s.clientHeight < NEAR_BOTTOM;
}

function toBottom() {
  const s = scroller();
  s.scrollTop = s.scrollHeight;
  $("jump").hidden = true;
}

function appendMessages(room, msgs) {
  const onScreen = room.name === state.current;
  const stick = onScreen && atBottom();
  const { own, others } = room.log.append(msgs, state.me);
  for (const m of msgs) if (m.user === state.me) room.outbox.arrived(m);
  room.log.top(room.tl.hasOlder, room.loadingOlder);
  if (room.everJoined && others > 0 && (!onScreen || document.hidden)) {
    room.unread += others;
    renderRooms();
    renderTitle();
  }
  if (onScreen) {
    if (stick || own) toBottom();
    else if (others > 0) $("jump").hidden = false;
  }
}

function prependMessages(room, msgs) {
  const s = scroller();
  const fromBottom = s.scrollHeight - s.scrollTop;
  room.log.prepend(msgs, state.me);
  if (room.name === state.current) s.scrollTop = s.scrollHeight - fromBottom;
}

// ---- own messages

// waitNote says why an own message waits.
function waitNote() {
  return state.welcomed ? "Waiting to send…" : "Waiting for the connection…";
}

function sendText(room, text) {
  const p = room.outbox.add(text, waitNote());
  room.log.addPending(
    p,
    (p) => room.outbox.retry(p),
    (p) => room.outbox.discard(p),
  );
  toBottom();
}

// ---- socket events

function onOpen(anonymous) {
  state.welcomed = false;
  if (anonymous) {
    state.me = null;
    showLogin();
  }
}

function onClose() {
  state.welcomed = false;
  state.reqs.clear();
  for (const room of state.rooms.values()) {
    room.tl.suspend();
    room.members.reset();
    room.joined = false;
    room.caughtUp = false;
    room.outbox.setOpen(false, waitNote());
    if (room.loadingOlder) olderDone(room);
  }
  renderMembers();
  renderRooms();
  if (state.login) {
    state.login = null;
    loginBusy(false);
    loginError("The connection dropped. Try again.");
  }
}

function onStaleToken() {
  const user = state.auth && state.auth.user;
  state.auth = user ? { user, token: null } : null;
  saveJSON(AUTH_KEY, state.auth);
  forgetRooms();
  showLogin("Your session has expired. Please log in again.");
}

function onFrame(f) {
  const req = f.id !== undefined ? state.reqs.get(f.id) : undefined;
  if (f.id !== undefined && f.type !== "error") state.reqs.delete(f.id);
  switch (f.type) {
    case "welcome":
      return onWelcome(f);
    case "joined":
      return onJoined(f);
    case "message": {
      const room = state.rooms.get(f.room);
      if (!room) return;
      if (f.epoch && room.tl.ready && room.tl.epoch && f.epoch !== room.tl.epoch) {
        // The history was recreated: its seqs start over, so does the view.
        room.tl.forget();
        sendJoin(room);
        return;
      }
      room.tl.live(f);
      return;
    }
    case "sent":
      return onSent(f, req);
    case "history":
      return onHistory(f, req);
    case "presence":
      return onPresence(f);
    case "members": {
      const room = state.rooms.get(f.room);
      if (room && Array.isArray(f.members)) {
        room.members.snapshot(f.members, f.rev);
        renderMembers();
      }
      return;
    }
    case "rooms":
      state.directory = Array.isArray(f.rooms) ? f.rooms : [];
      renderRooms();
      return;
    case "left":
    case "pong":
      return;
    case "error":
      return onError(f, req);
  }
}

function onWelcome(f) {
  if (!USER_RE.test(f.user || "")) return;
  if (state.me && state.me !== f.user) forgetRooms();
  const fresh = !state.me;
  state.auth = { user: f.user, token: f.token || (state.auth && state.auth.token) };
  saveJSON(AUTH_KEY, state.auth);
  state.me = f.user;
  state.welcomed = true;
  const fromLogin = !!state.login;
  if (state.login) {
    state.login = null;
    loginBusy(false);
    $("login-pass").value = "";
  }
  if (fresh && state.rooms.size === 0) restoreRooms(f.user);
  showChat();
  if (fromLogin) {
    // The form that had the focus is gone: put it where the user goes next.
    const next = [$("text"), $("join-input"), $("empty-browse")].find((e) => e.offsetParent !== null);
    if (next) next.focus();
  }
  for (const room of state.rooms.values()) sendJoin(room);
  requestRooms();
}

function onJoined(f) {
  let room = state.rooms.get(f.room);
  if (!room) {
    // Left while the join was under way.
    request({ type: "leave", room: f.room }, { kind: "leave", room: f.room });
    return;
  }
  if (Array.isArray(f.members)) room.members.snapshot(f.members, f.rev);
  room.joined = true;
  const more = room.tl.joined(f.epoch, f.history, f.more);
  room.everJoined = true;
  if (more) fetchAfter(room);
  else caughtUp(room);
  if (room.name === state.current) {
    renderMembers();
    renderHeader();
  }
  renderRooms();
  scheduleRooms(500);
}

function onSent(f, req) {
  const room = state.rooms.get(f.room || (req && req.room));
  if (room) room.outbox.sent(f.id, f.seq, room.tl.last);
  // A message of ours that the copy has not shown yet: if the copy does not
  // come, fetch it.
  if (room && f.seq > room.tl.last) room.tl.known(f.seq);
}

function onHistory(f, req) {
  const room = state.rooms.get(f.room);
  if (!room) return;
  // An answer without our id is told apart by what it holds.
  let kind = req && req.kind;
  if (!kind) {
    const msgs = f.messages || [];
    kind = msgs.length && msgs[0].seq < room.tl.first ? "before" : "after";
  }
  if (kind === "before") {
    room.tl.before(f.epoch, f.messages, f.more);
    olderDone(room);
    return;
  }
  const more = room.tl.after(f.epoch, f.messages, f.more);
  if (room.tl.epoch === null) sendJoin(room); // a new epoch: join afresh
  else if (more) fetchAfter(room);
  else caughtUp(room);
}

function onPresence(f) {
  const room = state.rooms.get(f.room);
  if (room && !room.members.event(f.user, f.event, f.rev)) return;
  if (room) {
    if (room.name === state.current) {
      renderMembers();
      renderHeader();
    }
  }
  const d = state.directory.find((r) => r.room === f.room);
  if (d) d.members = Math.max(0, (d.members || 0) + (f.event === "join" ? 1 : f.event === "leave" ? -1 : 0));
  renderRooms();
  scheduleRooms(1000);
}

function onError(f, req) {
  if (f.id !== undefined) state.reqs.delete(f.id);
  const kind = req ? req.kind : "";
  if (kind === "login" || (!req && state.login)) {
    state.login = null;
    loginBusy(false);
    loginError(friendly(f.code, "login", f.message));
    return;
  }
  if (f.code === "unauthorized" && !state.welcomed && state.auth && state.auth.token) {
    onStaleToken();
    conn.restart();
    return;
  }
  const room = state.rooms.get(f.room || (req && req.room));
  if (kind === "say" && room) return sayFailed(room, f);
  if (kind === "join" && room) {
    if (RETRY_LATER[f.code]) {
      setTimeout(() => state.rooms.get(room.name) === room && !room.joined && sendJoin(room), RETRY_LATER[f.code]);
      return;
    }
    if (!room.everJoined) {
      state.rooms.delete(room.name);
      if (state.current === room.name) state.current = state.rooms.keys().next().value || null;
      persistRooms();
      select(state.current);
      joinError(friendly(f.code, "room", f.message));
    }
    return;
  }
  if ((kind === "after" || kind === "before") && room) {
    if (kind === "before") olderDone(room);
    if (f.code === "not_member") sendJoin(room);
    else if (kind === "after" && RETRY_LATER[f.code]) setTimeout(() => fetchAfter(room), RETRY_LATER[f.code]);
    return;
  }
  if (f.code === "not_member" && room) sendJoin(room);
}

function sayFailed(room, f) {
  if (f.code === "unavailable") {
    // It may have been stored anyway: the history tells.
    room.outbox.unknown(f.id, friendly(f.code), RETRY_LATER[f.code]);
  } else if (RETRY_LATER[f.code]) {
    room.outbox.later(f.id, friendly(f.code), RETRY_LATER[f.code]);
  } else if (f.code === "not_member") {
    room.outbox.later(f.id, "Rejoining the room…", 0);
    sendJoin(room);
  } else {
    room.outbox.refuse(f.id, "Not sent. " + friendly(f.code, "say", f.message));
  }
}

function requestRooms() {
  clearTimeout(state.roomsTimer);
  state.roomsTimer = setTimeout(requestRooms, ROOMS_EVERY);
  if (state.welcomed) request({ type: "rooms" }, { kind: "rooms" });
}

function scheduleRooms(delay) {
  clearTimeout(state.roomsTimer);
  state.roomsTimer = setTimeout(requestRooms, delay);
}

function forgetRooms() {
  for (const room of state.rooms.values()) room.tl.suspend();
  state.rooms.clear();
  state.current = null;
  state.me = null;
}

// ---- screens

function showLogin(notice) {
  $("boot").hidden = true;
  $("chat").hidden = true;
  $("login").hidden = false;
  const user = state.auth && state.auth.user;
  if (user && !$("login-user").value) $("login-user").value = user;
  if (notice) loginError(notice);
  loginBusy(!!state.login);
  const focus = $("login-user").value ? $("login-pass") : $("login-user");
  if (document.activeElement === document.body || !document.activeElement) focus.focus();
}

function showChat() {
  $("boot").hidden = true;
  $("login").hidden = true;
  $("chat").hidden = false;
  const name = state.me || (state.auth && state.auth.user) || "";
  $("me-name").textContent = name;
  const av = avatar(name || "?");
  $("me-avatar").className = av.className;
  $("me-avatar").textContent = av.textContent;
  select(state.current);
}

function loginBusy(busy) {
  const ready = conn.open && !state.welcomed;
  $("login-btn").disabled = busy || !ready;
  $("register-btn").disabled = busy || !ready;
  $("login-form").setAttribute("aria-busy", busy ? "true" : "false");
}

function loginError(text) {
  const e = $("login-error");
  e.textContent = text || "";
  e.hidden = !text;
}

function joinError(text) {
  const e = $("join-error");
  e.textContent = text || "";
  e.hidden = !text;
}

/** select puts a room (or nothing) on screen. */
function select(name) {
  const old = state.rooms.get(state.current);
  if (old && old.log.view.isConnected) old.scrollTop = atBottom() ? -1 : scroller().scrollTop;
  const room = name ? state.rooms.get(name) : null;
  state.current = room ? name : null;
  const s = scroller();
  for (const c of [...s.children]) if (c.id !== "empty") c.remove();
  $("empty").hidden = !!room;
  $("composer").hidden = !room;
  $("leave").hidden = !room;
  $("members-toggle").hidden = !room;
  $("jump").hidden = true;
  if (room) {
    s.append(room.log.view);
    room.unread = 0;
    if (room.scrollTop < 0) toBottom();
    else s.scrollTop = room.scrollTop;
    $("text-label").textContent = "Message #" + room.name;
    $("text").placeholder = "Message #" + room.name;
  }
  persistRooms();
  renderHeader();
  renderRooms();
  renderMembers();
  renderTitle();
  updateComposer();
}

function renderHeader() {
  const room = state.rooms.get(state.current);
  $("room-title").textContent = room ? "#" + room.name : "shoal chat";
  let sub = "";
  if (room) {
    const n = room.members.size;
    sub = room.joined ? n + (n === 1 ? " member" : " members") : state.welcomed ? "Joining…" : "Waiting for the connection…";
  }
  $("room-sub").textContent = sub;
  $("members-count").textContent = room && room.joined ? String(room.members.size) : "";
}

function renderRooms() {
  const joined = $("joined-list");
  joined.replaceChildren();
  let unread = 0;
  for (const room of state.rooms.values()) {
    unread += room.unread;
    const active = room.name === state.current;
    joined.append(
      roomItem(room.name, {
        active,
        unread: room.unread,
        count: room.joined ? room.members.size : null,
        onOpen: () => openRoom(room.name),
        onLeave: () => leaveRoom(room.name),
      }),
    );
  }
  $("joined-empty").hidden = state.rooms.size > 0;
  const badge = $("side-badge");
  badge.hidden = unread === 0;
  badge.textContent = unread > 99 ? "99+" : String(unread);

  const dir = $("room-list");
  dir.replaceChildren();
  const listed = state.directory.filter((r) => r && ROOM_RE.test(r.room || ""));
  for (const r of listed) dir.append(directoryItem(r.room, Math.max(0, r.members | 0), state.rooms.has(r.room), () => openRoom(r.room)));
  $("rooms-empty").hidden = listed.length > 0;
}

function renderMembers() {
  const room = state.rooms.get(state.current);
  const list = $("member-list");
  const names = room ? [...room.members].sort((a, b) => (a === state.me ? -1 : b === state.me ? 1 : a.localeCompare(b))) : [];
  // Keep the items that stay, so a screen reader hears only who came or went.
  const have = new Map([...list.children].map((li) => [li.dataset.user, li]));
  list.replaceChildren(...names.map((n) => have.get(n) || memberItem(n, n === state.me)));
  $("members-title").textContent = room ? "Members · " + names.length : "Members";
  // Until the room is joined again the list is what it was: say so.
  list.classList.toggle("stale", !!room && !room.joined);
}

function renderTitle() {
  let unread = 0;
  for (const room of state.rooms.values()) unread += room.unread;
  const room = state.current ? "#" + state.current + " · " : "";
  document.title = (unread ? "(" + unread + ") " : "") + room + "shoal chat";
}

function updateComposer() {
  const text = $("text").value;
  const n = byteLength(text.trim());
  const counter = $("counter");
  counter.textContent = n > MAX_TEXT * 0.8 || n > MAX_TEXT ? n + " / " + MAX_TEXT : "";
  counter.classList.toggle("over", n > MAX_TEXT);
  $("send").disabled = n === 0 || n > MAX_TEXT || !state.current;
  // Grow with the text, up to a limit; a hidden box has no height to measure.
  const t = $("text");
  t.style.height = "";
  if (t.offsetParent !== null) t.style.height = Math.min(t.scrollHeight, 200) + "px";
}

// ---- connection state

let statusTick = 0;

function showStatus(s) {
  clearInterval(statusTick);
  const paint = () => {
    let text = "Connected";
    if (s.state === "connecting") text = "Connecting…";
    else if (s.state === "offline") text = "Offline";
    else if (s.state === "reconnecting") {
      const left = Math.ceil((s.retryAt - Date.now()) / 1000);
      text = s.retryAt && left > 0 ? "Reconnecting in " + left + "s…" : "Reconnecting…";
    }
    for (const id of ["conn-state", "conn-dot"]) $(id).dataset.state = s.state;
    document.querySelector("#login .conn-dot").dataset.state = s.state;
    $("conn-state").textContent = text;
    $("login-conn").textContent = s.state === "connected" ? "Connected to " + s.server : text;
    const banner = $("banner");
    banner.hidden = s.state === "connected" || !state.me;
    $("banner-text").textContent =
      s.state === "reconnecting" ? "Connection lost. " + text + " Messages you send will go out once it is back." : text;
    $("retry").hidden = s.state !== "reconnecting";
  };
  paint();
  if (s.state === "reconnecting" && s.retryAt) statusTick = setInterval(paint, 1000);
  loginBusy(!!state.login);
  renderHeader();
}

// ---- drawers (phone and tablet)

function openDrawer(which) {
  closeDrawers();
  $(which).classList.add("open");
  $("scrim").hidden = false;
  const btn = which === "sidebar" ? $("side-open") : $("members-toggle");
  btn.setAttribute("aria-expanded", "true");
  const first = $(which).querySelector("button, input");
  if (first) first.focus();
}

function closeDrawers() {
  const wasOpen = document.querySelector(".sidebar.open, .members.open");
  for (const id of ["sidebar", "members"]) $(id).classList.remove("open");
  $("scrim").hidden = true;
  $("side-open").setAttribute("aria-expanded", "false");
  $("members-toggle").setAttribute("aria-expanded", "false");
  if (wasOpen) (wasOpen.id === "sidebar" ? $("side-open") : $("members-toggle")).focus({ preventScroll: true });
}

// ---- wiring

function wire() {
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const action = e.submitter && e.submitter.value === "register" ? "register" : "login";
    const user = $("login-user").value.trim();
    const password = $("login-pass").value;
    if (!USER_RE.test(user)) return loginError("User names are 1–32 letters, digits, _ or -.");
    const n = byteLength(password);
    if (n < 8 || n > 72) return loginError("Passwords are 8 to 72 characters.");
    if (!conn.open || state.welcomed) return loginError(friendly("offline"));
    loginError("");
    const id = request({ type: action, user, password }, { kind: "login" });
    if (!id) return loginError(friendly("offline"));
    state.login = { action, user };
    loginBusy(true);
  });

  $("join-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $("join-input").value.trim().replace(/^#/, "");
    if (!ROOM_RE.test(name)) return joinError(friendly("bad_request", "room"));
    joinError("");
    $("join-input").value = "";
    openRoom(name);
  });
  $("join-input").addEventListener("input", () => joinError(""));
  for (const id of ["login-user", "login-pass"]) $(id).addEventListener("input", () => loginError(""));

  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const room = state.rooms.get(state.current);
    const text = $("text").value.trim();
    if (!room || !text || byteLength(text) > MAX_TEXT) return;
    $("text").value = "";
    updateComposer();
    sendText(room, text);
  });
  $("text").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("text").addEventListener("input", updateComposer);

  scroller().addEventListener("scroll", () => {
    if (atBottom()) $("jump").hidden = true;
    const room = state.rooms.get(state.current);
    if (room && scroller().scrollTop < 40 && room.tl.hasOlder && room.caughtUp) loadOlder(room);
  });
  $("jump").addEventListener("click", toBottom);
  $("leave").addEventListener("click", () => state.current && leaveRoom(state.current));
  $("logout").addEventListener("click", () => {
    const user = state.me;
    state.auth = user ? { user, token: null } : null;
    saveJSON(AUTH_KEY, state.auth);
    forgetRooms();
    showLogin();
    conn.restart();
  });
  $("retry").addEventListener("click", () => conn.retryNow());
  $("rooms-refresh").addEventListener("click", () => requestRooms());
  $("side-open").addEventListener("click", () => openDrawer("sidebar"));
  $("empty-browse").addEventListener("click", () => openDrawer("sidebar"));
  $("side-close").addEventListener("click", closeDrawers);
  $("members-toggle").addEventListener("click", () => {
    if ($("members").classList.contains("open")) closeDrawers();
    else {
      openDrawer("members");
      requestWho();
    }
  });
  $("members-close").addEventListener("click", closeDrawers);
  $("scrim").addEventListener("click", closeDrawers);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") closeDrawers();
  });
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) return;
    checkRoom();
    const room = state.rooms.get(state.current);
    if (room && room.unread) {
      room.unread = 0;
      renderRooms();
      renderTitle();
    }
    conn.retryNow();
  });
  window.addEventListener("online", () => conn.retryNow());
  setInterval(() => document.hidden || checkRoom(), CHECK_EVERY);
}

// checkRoom asks for what came after the last message shown in the room
// on screen. Live copies are not stored on the way, so one lost at the very
// end of a quiet room would otherwise wait for the next message to be
// noticed.
function checkRoom() {
  const room = state.rooms.get(state.current);
  if (room && state.welcomed && room.caughtUp && !room.tl.behind) fetchAfter(room);
}

function requestWho() {
  const room = state.rooms.get(state.current);
  if (room && room.joined) request({ type: "who", room: room.name }, { kind: "who", room: room.name });
}

function boot() {
  wire();
  if (state.auth && state.auth.token) {
    // Show the rooms at once; the socket catches up behind them.
    restoreRooms(state.auth.user);
    showChat();
  } else {
    showLogin();
  }
  conn.start();
}

boot();
