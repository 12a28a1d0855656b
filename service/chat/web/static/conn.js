// Connection keeps one WebSocket to one of the gateways open: it connects,
// reconnects with backoff and jitter when the socket drops, moves on to the
// next gateway in its list when one fails, and tells a token the gateway
// refuses from a gateway that is down.
//
// A browser never shows the status of a refused handshake: a 401 for a
// stale token and a server that is not there both end in a close before
// open. So when a connection with a token fails that way, Connection opens
// a second one without the token. If that one opens, the gateway is up and
// it was the token it refused; after a second such refusal in a row the
// token is reported stale.

/** Reconnect delays (ms): the first retry, and the cap of the doubling. */
export const BACKOFF_MIN = 500;
export const BACKOFF_MAX = 10000;

/** Silence after which a ping is sent, and how long its answer may take (ms). */
const PING_AFTER = 20000;
const PONG_WITHIN = 10000;

/** How long a connection with a token may wait for its welcome (ms). */
const WELCOME_WITHIN = 10000;

/** Close codes after which the next gateway is tried at once. */
const GOING_AWAY = new Set([1001, 1012, 1013]);

/**
 * parseServers reads a list of gateways: "host:port,host:port", each
 * optionally with ws://, wss://, http:// or https://. Empty parts are skipped.
 */
export function parseServers(list) {
  return String(list || "")
    .split(/[\s,]+/)
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

/** socketURL is the WebSocket URL of path on server, with the token if any. */
export function socketURL(server, path, token, pageProtocol) {
  const secure = pageProtocol === "https:";
  let scheme = secure ? "wss:" : "ws:";
  let host = server;
  const m = /^(wss?|https?):\/\/(.*)$/i.exec(server);
  if (m) {
    const s = m[1].toLowerCase();
    scheme = s === "wss" || s === "https" ? "wss:" : "ws:";
    host = m[2];
  }
  host = host.replace(/\/.*$/, "");
  let url = scheme + "//" + host + path;
  if (token) url += "?token=" + encodeURIComponent(token);
  return url;
}

/**
 * reconnectHint reads a delay the server asks for in a close reason, such as
 * "reconnect in 2.5s", "reconnect after 500ms" or "reconnect_in=3". Returns
 * milliseconds, or -1 when the reason names none.
 */
export function reconnectHint(reason) {
  const m = /reconnect\D{0,12}?(\d+(?:\.\d+)?)\s*(ms|msec|milliseconds?|s|secs?|seconds?|m|mins?|minutes?)?\b/i.exec(
    String(reason || ""),
  );
  if (!m) return -1;
  const n = parseFloat(m[1]);
  const unit = (m[2] || "s").toLowerCase();
  let ms = n * 1000;
  if (unit.startsWith("ms") || unit.startsWith("milli")) ms = n;
  else if (unit.startsWith("m")) ms = n * 60000;
  // A hint is advice, not a promise: keep it within reason.
  return Math.min(Math.max(ms, 0), 5 * 60000);
}

/** backoff is the delay before retry number attempt (0-based), with jitter. */
export function backoff(attempt, random = Math.random) {
  const ceil = Math.min(BACKOFF_MAX, BACKOFF_MIN * 2 ** Math.min(attempt, 20));
  // Half fixed, half random: clients dropped together do not come back
  // together, and none waits much less than the step.
  return Math.round(ceil / 2 + (random() * ceil) / 2);
}

export class Connection {
  /**
   * @param {object} o
   * @param {string[]} o.servers            gateways, tried in turn
   * @param {string} o.path                 e.g. "/ws/chat"
   * @param {() => string|null} o.token     the token to connect with, if any
   * @param {(frame: object) => void} o.onFrame
   * @param {(anonymous: boolean) => void} o.onOpen
   * @param {() => void} o.onClose          the socket is gone (before a retry)
   * @param {() => void} o.onStaleToken     the gateways refuse the token
   * @param {(s: object) => void} o.onStatus {state, server, retryAt}
   */
  constructor(o) {
    this.o = o;
    this.servers = o.servers.length ? o.servers : [location.host];
    this.index = 0;
    this.ws = null;
    this.attempt = 0;
    this.refusals = 0; // token refusals in a row, seen through the probe
    this.timer = 0;
    this.pingTimer = 0;
    this.lastFrame = 0;
    this.welcomed = false;
    this.stopped = true;
    this.state = "offline";
  }

  /** start connects (again). */
  start() {
    this.stopped = false;
    this.connect();
  }

  /** stop closes the socket for good. */
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.drop(1000, "bye");
    this.status("offline");
  }

  /** restart drops the socket and connects again at once (a new token). */
  restart() {
    clearTimeout(this.timer);
    this.drop(1000, "reconnecting");
    this.attempt = 0;
    if (!this.stopped) this.connect();
  }

  /** retryNow cuts a reconnect wait short. */
  retryNow() {
    if (this.stopped || this.ws) return;
    clearTimeout(this.timer);
    this.connect();
  }

  /** send writes one frame; false when there is no open socket. */
  send(obj) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }

  get open() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  get server() {
    return this.servers[this.index];
  }

  connect() {
    clearTimeout(this.timer);
    const token = this.o.token();
    const server = this.server;
    this.status(this.attempt === 0 && this.state !== "reconnecting" ? "connecting" : "reconnecting");
    let ws;
    try {
      ws = new WebSocket(socketURL(server, this.o.path, token, location.protocol));
    } catch {
      this.failed(null, false, !!token);
      return;
    }
    this.ws = ws;
    this.welcomed = false;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.lastFrame = Date.now();
      if (token) {
        this.refusals = 0;
        this.armWelcome();
      } else {
        this.healthy();
      }
      this.armPing();
      this.o.onOpen(!token);
    };
    ws.onmessage = (e) => {
      this.lastFrame = Date.now();
      let frame;
      try {
        frame = JSON.parse(e.data);
      } catch {
        return;
      }
      if (!frame || typeof frame !== "object") return;
      if (frame.type === "welcome") {
        this.welcomed = true;
        this.healthy();
      }
      this.o.onFrame(frame);
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.clearPing();
      this.o.onClose();
      this.failed(e, opened, !!token);
    };
  }

  // failed decides what follows a socket that closed (or never opened).
  failed(e, opened, hadToken) {
    if (this.stopped) return;
    if (!opened && hadToken) {
      this.probe(this.server);
      return;
    }
    this.retry(e, opened);
  }

  // probe opens a connection without a token to tell a refused token from
  // a gateway that is down.
  probe(server) {
    this.status("reconnecting");
    let ws;
    try {
      ws = new WebSocket(socketURL(server, this.o.path, null, location.protocol));
    } catch {
      this.retry(null, false);
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      ws.onclose = null;
      ws.close(1000, "probe");
      if (this.ws === ws) this.ws = null;
      if (this.stopped) return;
      this.refusals++;
      if (this.refusals >= 2) {
        this.refusals = 0;
        this.attempt = 0;
        this.o.onStaleToken();
        if (!this.stopped) this.connect();
        return;
      }
      // Once more with the token: the gateway may have come up between
      // the two connections.
      this.connect();
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.retry(null, false);
    };
  }

  // retry schedules the next connection, to the next gateway when this one
  // failed or is going away.
  retry(e, opened) {
    const code = e ? e.code : 0;
    let delay = reconnectHint(e ? e.reason : "");
    if (delay >= 0) {
      delay += Math.random() * Math.min(1000, delay * 0.2);
    } else if (GOING_AWAY.has(code) && opened) {
      delay = 200 + Math.random() * 800;
    } else {
      delay = backoff(this.attempt);
    }
    this.attempt++;
    if (!opened || GOING_AWAY.has(code)) this.index = (this.index + 1) % this.servers.length;
    const retryAt = Date.now() + delay;
    this.status("reconnecting", retryAt);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  // healthy marks a connection that works: the next failure starts the
  // backoff afresh.
  healthy() {
    this.attempt = 0;
    this.status("connected");
  }

  armWelcome() {
    const ws = this.ws;
    setTimeout(() => {
      if (this.ws === ws && !this.welcomed) this.abandon();
    }, WELCOME_WITHIN);
  }

  // armPing checks the socket now and then: a connection whose peer
  // vanished without a close would otherwise look open for minutes.
  armPing() {
    this.clearPing();
    const ws = this.ws;
    const tick = () => {
      if (this.ws !== ws) return;
      const idle = Date.now() - this.lastFrame;
      if (idle >= PING_AFTER + PONG_WITHIN) {
        this.abandon();
        return;
      }
      if (idle >= PING_AFTER) this.send({ type: "ping" });
      this.pingTimer = setTimeout(tick, PONG_WITHIN / 2);
    };
    this.pingTimer = setTimeout(tick, PONG_WITHIN / 2);
  }

  clearPing() {
    clearTimeout(this.pingTimer);
    this.pingTimer = 0;
  }

  // abandon gives up on the socket without waiting for its close handshake.
  abandon() {
    const ws = this.ws;
    if (!ws) return;
    this.drop(4000, "no answer");
    this.o.onClose();
    this.retry(null, true);
  }

  drop(code, reason) {
    const ws = this.ws;
    this.ws = null;
    this.clearPing();
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = null;
    try {
      ws.close(code, reason);
    } catch {
      // already closing
    }
  }

  status(state, retryAt = 0) {
    this.state = state;
    this.o.onStatus({ state, server: this.server, retryAt });
  }
}
