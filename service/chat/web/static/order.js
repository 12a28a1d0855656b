// Timeline puts one room's messages in order: each is shown once, in seq
// order, whatever order the socket delivered them in.
//
// The rules come from the chat protocol. Every message names the seq of
// the room's previous message (prev), so the messages form a chain. A live
// message whose prev is the last one shown follows at once; one at or below
// the last shown is a duplicate; one further ahead waits a short while for
// those before it, and if they do not come the timeline asks the server for
// the messages after the last one shown. History from the server is a
// complete slice of the room and is taken as it comes.
//
// Timeline holds no DOM: it calls its owner back.

/** How long a message ahead of a gap waits before the gap is fetched (ms). */
export const GAP_WAIT = 1000;

/** How long a fetch may stay unanswered before it may be sent again (ms). */
const FETCH_TIMEOUT = 5000;

export class Timeline {
  /**
   * @param {object} hooks
   * @param {(msgs: object[]) => void} hooks.append   messages to show after the last, in order
   * @param {(msgs: object[]) => void} hooks.prepend  older messages to show before the first, in order
   * @param {() => void} hooks.reset                  forget everything shown (a new epoch)
   * @param {(after: number) => void} hooks.fetch     ask for history after=after
   * @param {number} [hooks.gapWait]
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.gapWait = hooks.gapWait ?? GAP_WAIT;
    this.epoch = null; // the epoch the seqs below belong to
    this.last = 0; // seq of the newest message shown
    this.first = 0; // seq of the oldest message shown
    this.firstPrev = 0; // its prev: an older message existed while > 0
    this.older = null; // whether older ones exist, as the server last said (null: not said)
    this.ready = false; // a joined has been applied since the last (re)join
    this.waiting = new Map(); // seq -> live message ahead of a gap, or before joined
    this.expected = 0; // the highest seq known to exist, shown or not
    this.timer = 0;
    this.fetchedAt = 0; // when the last after= fetch went out, 0 when answered
  }

  /** True when older messages than the first shown exist. */
  get hasOlder() {
    // The server's word wins: a prev may name a message trimmed since.
    return this.older !== null ? this.older : this.firstPrev > 0;
  }

  /** The fields of a join that resumes where this timeline stands. */
  resume() {
    if (this.last > 0 && this.epoch) return { after: this.last, epoch: this.epoch };
    return {};
  }

  /** The socket is gone: what arrives next belongs to a new join. */
  suspend() {
    this.ready = false;
    this.fetchedAt = 0;
    this.clearTimer();
  }

  /**
   * A joined arrived. Returns true when more messages follow its history
   * (the caller fetches them with after=last). A joined that resumes (same
   * epoch, after the last shown) has more for newer messages; any other
   * has more for older ones.
   */
  joined(epoch, history, more) {
    const resumed = this.epoch !== null && epoch === this.epoch && this.last > 0;
    if (this.epoch !== null && epoch !== this.epoch) this.forget();
    this.epoch = epoch;
    this.ready = true;
    if (!resumed) this.older = !!more;
    this.take(history || []);
    this.settle(false);
    return resumed && !!more;
  }

  /**
   * known says a message with this seq exists (the server confirmed a
   * message of ours): if its copy does not come, it is fetched like a gap.
   */
  known(seq) {
    if (!Number.isSafeInteger(seq) || seq <= this.last) return;
    this.expected = Math.max(this.expected, seq);
    if (this.ready) this.armTimer();
  }

  /** True while messages are known to be missing. */
  get behind() {
    return this.waiting.size > 0 || this.expected > this.last;
  }

  /** A live message arrived. */
  live(msg) {
    if (!valid(msg) || msg.seq <= this.last) return;
    if (!this.ready) {
      this.waiting.set(msg.seq, msg);
      return;
    }
    if (msg.prev <= this.last) {
      // prev == last: the next one. prev < last < seq cannot happen in one
      // chain; showing it beats stalling on a message that will never come.
      this.show([msg]);
      this.settle(false);
      return;
    }
    this.waiting.set(msg.seq, msg);
    this.armTimer();
  }

  /**
   * A history answer to an after= fetch (or a resumed join's follow-up).
   * Returns true when more are left to fetch. A different epoch resets the
   * timeline and returns false: the caller joins afresh.
   */
  after(epoch, messages, more) {
    this.fetchedAt = 0;
    if (this.epoch !== null && epoch && epoch !== this.epoch) {
      this.forget();
      return false;
    }
    this.take(messages || []);
    // With nothing more on the server, whatever still waits has nothing
    // before it that will ever arrive: show it; and a message expected but
    // not there is gone (trimmed from the history).
    if (!more) this.expected = 0;
    this.settle(!more);
    return !!more;
  }

  /** A history answer to a before= fetch: older messages; more: older still exist. */
  before(epoch, messages, more) {
    if (this.epoch !== null && epoch && epoch !== this.epoch) return;
    if (more !== undefined) this.older = !!more;
    const older = (messages || []).filter((m) => valid(m) && (this.first === 0 || m.seq < this.first));
    older.sort((a, b) => a.seq - b.seq);
    if (older.length === 0) {
      this.firstPrev = 0; // nothing older is left
      this.older = false;
      return;
    }
    if (this.first === 0) {
      this.take(older);
      return;
    }
    this.first = older[0].seq;
    this.firstPrev = older[0].prev;
    this.hooks.prepend(older);
  }

  // take shows history messages newer than the last shown, in seq order.
  take(messages) {
    const fresh = messages.filter((m) => valid(m) && m.seq > this.last);
    fresh.sort((a, b) => a.seq - b.seq);
    if (fresh.length > 0) this.show(fresh);
  }

  show(msgs) {
    if (this.first === 0) {
      this.first = msgs[0].seq;
      this.firstPrev = msgs[0].prev;
    }
    this.last = msgs[msgs.length - 1].seq;
    for (const m of msgs) this.waiting.delete(m.seq);
    this.hooks.append(msgs);
  }

  // settle drops waiting duplicates and shows the waiting messages that
  // now follow on; with flush, it shows all of them.
  settle(flush) {
    for (;;) {
      let next = null;
      for (const [seq, m] of this.waiting) {
        if (seq <= this.last) this.waiting.delete(seq);
        else if (m.prev <= this.last || flush) {
          if (!next || seq < next.seq) next = m;
        }
      }
      if (!next) break;
      this.show([next]);
    }
    if (!this.behind) this.clearTimer();
    else if (this.ready) this.armTimer();
  }

  armTimer() {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = 0;
      if (!this.ready || !this.behind) return;
      const now = Date.now();
      if (this.fetchedAt && now - this.fetchedAt < FETCH_TIMEOUT) {
        this.armTimer();
        return;
      }
      this.fetchedAt = now;
      this.hooks.fetch(this.last);
    }, this.gapWait);
  }

  clearTimer() {
    if (this.timer) clearTimeout(this.timer);
    this.timer = 0;
  }

  forget() {
    this.clearTimer();
    this.waiting.clear();
    this.expected = 0;
    this.epoch = null;
    this.last = 0;
    this.first = 0;
    this.firstPrev = 0;
    this.older = null;
    this.fetchedAt = 0;
    this.ready = false;
    this.hooks.reset();
  }
}

// valid accepts a message with a positive seq, filling in a missing prev.
function valid(m) {
  if (!m || !Number.isSafeInteger(m.seq) || m.seq <= 0) return false;
  m.prev = Number.isSafeInteger(m.prev) ? m.prev : 0;
  return true;
}

// Presence keeps one room's member list. Presence events of one user can
// arrive out of order (instances race), and a snapshot (joined, members)
// can cross events on the way; each carries the revision of the presence
// store it reflects, so the newest word about each user wins. Events and
// snapshots without a revision are taken as they come.
export class Presence {
  constructor() {
    this.members = new Set();
    this.rev = 0; // revision of the last snapshot
    this.latest = new Map(); // user -> {rev, event} of the newest event seen
  }

  /** snapshot replaces the list with the server's, as of revision rev. */
  snapshot(members, rev) {
    this.members = new Set(members);
    this.rev = Number.isSafeInteger(rev) ? rev : 0;
    for (const [user, e] of this.latest) {
      if (e.rev > this.rev) this.apply(user, e.event);
      else this.latest.delete(user);
    }
  }

  /** reset forgets the revisions: a new connection may reach a new store. */
  reset() {
    this.rev = 0;
    this.latest.clear();
  }

  /** event applies a join or leave; false when it was stale. */
  event(user, event, rev) {
    if (Number.isSafeInteger(rev) && rev > 0) {
      const seen = this.latest.get(user);
      if (rev <= this.rev || (seen && rev <= seen.rev)) return false;
      this.latest.set(user, { rev, event });
    }
    this.apply(user, event);
    return true;
  }

  apply(user, event) {
    if (event === "join") this.members.add(user);
    else if (event === "leave") this.members.delete(user);
  }

  get size() {
    return this.members.size;
  }

  [Symbol.iterator]() {
    return this.members[Symbol.iterator]();
  }
}
