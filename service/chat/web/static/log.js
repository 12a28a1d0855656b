// MessageLog is the DOM of one room's messages: the list in seq order with
// day separators and author groups, a "load older" button above it, and the
// reader's own messages still on their way (outbox.js) below it.

import { h, messageItem, pendingItem, daySeparator, dayKey, follows } from "./view.js";

export class MessageLog {
  /** @param {string} room  @param {() => void} onOlder  asks for older messages */
  constructor(room, onOlder) {
    this.pending = new Map(); // Outbox item -> its element, in the order written
    this.last = null; // the newest message shown, for grouping
    this.first = null; // the oldest
    this.older = h("button", { type: "button", class: "older btn ghost small", hidden: true, onclick: onOlder }, "Load older messages");
    this.list = h("ol", { class: "messages", role: "log", "aria-live": "polite", "aria-label": "Messages in " + room });
    this.start = h("li", { class: "room-start", hidden: true }, h("strong", {}, "#" + room), " starts here.");
    this.list.append(this.start);
    this.view = h("div", { class: "room-view" }, this.older, this.list);
  }

  /**
   * append shows messages after the newest, above the pending ones.
   * Returns how many were the reader's own and how many others'.
   */
  append(msgs, me) {
    let own = 0;
    const frag = document.createDocumentFragment();
    for (const m of msgs) {
      const day = dayKey(m.ts);
      if (!this.last || this.last.day !== day) frag.append(daySeparator(m.ts));
      frag.append(messageItem(m, m.user === me, follows(this.last && this.last.m, m)));
      this.last = { m, day };
      if (!this.first) this.first = { m, day };
      if (m.user === me) own++;
    }
    const below = this.pending.values().next().value;
    this.list.insertBefore(frag, below || null);
    return { own, others: msgs.length - own };
  }

  /** prepend shows older messages before the oldest. */
  prepend(msgs, me) {
    const frag = document.createDocumentFragment();
    let prev = null;
    for (const m of msgs) {
      const day = dayKey(m.ts);
      if (!prev || prev.day !== day) frag.append(daySeparator(m.ts));
      frag.append(messageItem(m, m.user === me, follows(prev && prev.m, m)));
      prev = { m, day };
    }
    // The old first message may now continue a group, and its day may
    // already have its separator.
    const sep = this.start.nextElementSibling;
    if (sep && sep.classList.contains("day") && sep.dataset.day === prev.day) {
      sep.remove();
      const item = this.start.nextElementSibling;
      if (item && this.first && follows(prev.m, this.first.m)) item.classList.add("cont");
    }
    this.first = { m: msgs[0], day: dayKey(msgs[0].ts) };
    this.start.after(frag);
  }

  /** clear removes every message shown; pending ones stay. */
  clear() {
    for (const e of [...this.list.children]) if (e !== this.start && !e.classList.contains("pending")) e.remove();
    this.last = this.first = null;
    this.top(false, false);
  }

  /** top shows "load older" while older messages exist, else where the room starts. */
  top(hasOlder, loading) {
    this.older.textContent = loading ? "Loading…" : "Load older messages";
    this.older.hidden = !hasOlder;
    this.start.hidden = hasOlder || !this.first;
  }

  /** addPending shows an own message on its way (an Outbox item). */
  addPending(p, onRetry, onDiscard) {
    const el = pendingItem(
      p.text,
      () => onRetry(p),
      () => onDiscard(p),
    );
    this.pending.set(p, el);
    this.list.append(el);
    this.mark(p);
  }

  /** mark shows a pending message's state and note. */
  mark(p) {
    const el = this.pending.get(p);
    if (!el) return;
    const failed = p.state === "failed";
    el.querySelector(".state-text").textContent = p.note;
    el.classList.toggle("failed", failed);
    el.querySelector(".retry").hidden = !failed;
    el.querySelector(".discard").hidden = !failed;
  }

  /** removePending takes a pending message off the page. */
  removePending(p) {
    const el = this.pending.get(p);
    if (el) el.remove();
    this.pending.delete(p);
  }
}
