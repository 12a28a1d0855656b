// Outbox sends one room's own messages: in the order they were written,
// one at a time, each exactly once.
//
// One at a time, because the server may make a message wait (rate_limited,
// unavailable): the next goes only when the last was confirmed, so a wait
// never lets a later message overtake an earlier one. Exactly once, because
// a message whose confirmation was lost with the socket may have been
// stored: after a reconnect the room's history is shown first, and a
// message of ours with the same text that arrives then settles it instead
// of a second send.
//
// Outbox holds no DOM and no socket: it calls its owner back.

/** How long a message may wait for its "sent" before the history is checked (ms). */
export const SENT_WITHIN = 15000;

export class Outbox {
  /**
   * @param {object} hooks
   * @param {(p: object) => number} hooks.send     sends p.text; the request id, 0 when it could not
   * @param {(p: object) => void} hooks.changed    p's state or note changed (p.state, p.note)
   * @param {(p: object) => void} hooks.removed    p is settled or discarded
   * @param {() => void} hooks.check               fetch the history: a "sent" did not come
   * @param {number} [hooks.sentWithin]
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.sentWithin = hooks.sentWithin ?? SENT_WITHIN;
    this.items = []; // {text, id, seq, state, sentOnce, note}, in the order written
    this.open = false; // the room can take messages now
    this.holdUntil = 0; // no send before this time
    this.holdTimer = 0;
  }

  /**
   * add queues a message. States: queued (waiting its turn), sending (out,
   * unconfirmed), sent (confirmed, its copy not shown yet), unsent (out when
   * the socket dropped), failed (refused; the user retries or discards).
   */
  add(text, why = "") {
    const p = { text, id: 0, seq: 0, state: "queued", sentOnce: false, note: this.open ? "" : why };
    this.items.push(p);
    this.pump();
    return p;
  }

  /**
   * setOpen says whether the room can take messages (connected, joined,
   * caught up); while it cannot, the waiting messages say why.
   */
  setOpen(open, why = "") {
    this.open = open;
    for (const p of this.items) {
      if (!open && p.state === "sending") this.set(p, "unsent", why);
      else if (p.state === "queued" || p.state === "unsent") this.set(p, p.state, open ? "" : why);
    }
    this.pump();
  }

  /** sent is the server's confirmation of request id: stored as seq. */
  sent(id, seq, lastShown) {
    const p = this.byID(id);
    if (!p) return;
    p.seq = seq || 0;
    if (p.seq && p.seq <= lastShown) this.remove(p);
    else this.set(p, "sent", "Sent");
    this.pump();
  }

  /** arrived settles the pending copy of own message m, now shown; true if there was one. */
  arrived(m) {
    let p = this.items.find((q) => q.seq && q.seq === m.seq);
    if (!p) p = this.items.find((q) => q.sentOnce && !q.seq && q.text === m.text);
    if (!p) return false;
    this.remove(p);
    this.pump();
    return true;
  }

  /** caughtUp: everything up to lastShown is shown; confirmed messages up to it are done. */
  caughtUp(lastShown) {
    for (const p of [...this.items]) if (p.state === "sent" && p.seq && p.seq <= lastShown) this.remove(p);
    this.pump();
  }

  /** later puts request id back in the queue, to go again after wait ms (0: when open). */
  later(id, note, wait) {
    const p = this.byID(id);
    if (!p) return;
    p.id = 0;
    p.sentOnce = false; // refused: it was not stored
    this.set(p, "queued", note);
    if (wait > 0) this.holdUntil = Math.max(this.holdUntil, Date.now() + wait);
    this.pump();
  }

  /**
   * unknown says request id failed in a way that may have stored it
   * (unavailable, or no answer): the history is checked before it goes
   * again, no sooner than wait ms from now.
   */
  unknown(id, note, wait) {
    const p = this.byID(id);
    if (!p) return;
    p.id = 0;
    this.set(p, "unsent", note);
    if (wait > 0) this.holdUntil = Math.max(this.holdUntil, Date.now() + wait);
    this.open = false; // until the owner has caught up and opens again
    this.hooks.check();
  }

  /** refuse marks request id as failed, for the user to retry or discard. */
  refuse(id, note) {
    const p = this.byID(id);
    if (!p) return;
    p.id = 0;
    p.sentOnce = false;
    this.set(p, "failed", note);
    this.pump();
  }

  retry(p) {
    if (p.state !== "failed") return;
    this.set(p, "queued", "");
    this.pump();
  }

  discard(p) {
    this.remove(p);
    this.pump();
  }

  /** waiting tells whether any message is not settled yet. */
  get waiting() {
    return this.items.length > 0;
  }

  // pump sends the next queued message when none is in flight.
  pump() {
    let next = null;
    for (const p of this.items) {
      if (p.state === "sending") return;
      if (!next && (p.state === "queued" || p.state === "unsent")) next = p;
    }
    if (!next || !this.open) return;
    const wait = this.holdUntil - Date.now();
    if (wait > 0) {
      clearTimeout(this.holdTimer);
      this.holdTimer = setTimeout(() => this.pump(), wait);
      return;
    }
    const id = this.hooks.send(next);
    if (!id) return;
    next.id = id;
    next.sentOnce = true;
    this.set(next, "sending", "Sending…");
    setTimeout(() => {
      if (next.id === id && next.state === "sending") this.unknown(id, "Checking…", 0);
    }, this.sentWithin);
  }

  set(p, state, note) {
    p.state = state;
    p.note = note;
    this.hooks.changed(p);
  }

  remove(p) {
    const i = this.items.indexOf(p);
    if (i < 0) return;
    this.items.splice(i, 1);
    p.state = "gone";
    this.hooks.removed(p);
  }

  byID(id) {
    return id ? this.items.find((p) => p.id === id) : undefined;
  }
}
