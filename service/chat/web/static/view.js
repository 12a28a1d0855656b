// Small DOM builders for the chat page. Everything a user wrote goes into
// the page as text nodes, never as markup.

/** h builds an element: h("li", {class: "x", "data-seq": 3}, child, "text"). */
export function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/** icon is an inline SVG that uses one of the page's symbols. */
export function icon(name) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "icon");
  svg.setAttribute("aria-hidden", "true");
  const use = document.createElementNS(ns, "use");
  use.setAttribute("href", "#i-" + name);
  svg.append(use);
  return svg;
}

/** AVATAR_COLORS is the number of .c0 ... classes in the style sheet. */
const AVATAR_COLORS = 8;

/** avatar is a round badge with the user's initial, colored by name. */
export function avatar(name) {
  let hash = 0;
  for (let i = 0; i < name.length; i++) hash = (hash * 31 + name.charCodeAt(i)) >>> 0;
  return h("span", { class: "avatar c" + (hash % AVATAR_COLORS), "aria-hidden": "true" }, name.slice(0, 1).toUpperCase());
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "short" });
const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: "long", month: "long", day: "numeric" });

function date(ts) {
  const d = new Date(ts);
  return isNaN(d) ? new Date() : d;
}

/** dayKey names the local calendar day of a timestamp. */
export function dayKey(ts) {
  const d = date(ts);
  return d.getFullYear() + "-" + (d.getMonth() + 1) + "-" + d.getDate();
}

/** dayLabel is "Today", "Yesterday" or the date. */
export function dayLabel(ts) {
  const d = date(ts);
  const now = new Date();
  const yesterday = new Date(now.getFullYear(), now.getMonth(), now.getDate() - 1);
  if (dayKey(d) === dayKey(now)) return "Today";
  if (dayKey(d) === dayKey(yesterday)) return "Yesterday";
  return dayFmt.format(d);
}

/** daySeparator is the line between messages of two days. */
export function daySeparator(ts) {
  return h("li", { class: "day", "data-day": dayKey(ts), role: "separator" }, h("span", {}, dayLabel(ts)));
}

/** GROUP_GAP: messages of one author closer than this share one header (ms). */
const GROUP_GAP = 5 * 60 * 1000;

/** follows tells whether message m continues the group of message p. */
export function follows(p, m) {
  return !!p && p.user === m.user && dayKey(p.ts) === dayKey(m.ts) && date(m.ts) - date(p.ts) < GROUP_GAP;
}

/**
 * messageItem is one message of the log. own marks the reader's own; cont
 * a message that continues its author's group (no avatar, no header).
 */
export function messageItem(m, own, cont) {
  const d = date(m.ts);
  const text = h("div", { class: "text" });
  linkify(text, m.text);
  const item = h(
    "li",
    { class: "msg" + (own ? " own" : "") + (cont ? " cont" : ""), "data-seq": m.seq, "data-user": m.user, "data-day": dayKey(m.ts) },
    avatar(m.user),
    h(
      "div",
      { class: "body" },
      h("div", { class: "meta" }, h("span", { class: "author" }, own ? "You" : m.user), h("time", { datetime: d.toISOString(), title: fullFmt.format(d) }, timeFmt.format(d))),
      h("div", { class: "bubble" }, text),
    ),
  );
  return item;
}

/** pendingItem is an own message on its way to the server. */
export function pendingItem(text, onRetry, onDiscard) {
  const body = h("div", { class: "text" });
  linkify(body, text);
  return h(
    "li",
    { class: "msg own pending" },
    h(
      "div",
      { class: "body" },
      h("div", { class: "bubble" }, body),
      h(
        "div",
        { class: "pending-state" },
        h("span", { class: "state-text", role: "status" }),
        h("button", { type: "button", class: "link retry", hidden: true, onclick: onRetry }, "Retry"),
        h("button", { type: "button", class: "link discard", hidden: true, onclick: onDiscard }, "Discard"),
      ),
    ),
  );
}

/** count99 writes a count for a badge. */
function count99(n) {
  return n > 99 ? "99+" : String(n);
}

/**
 * roomItem is a joined room in the sidebar: its name, its unread messages
 * or else its member count (null: not known yet), and a leave button.
 */
export function roomItem(name, { active, unread, count, onOpen, onLeave }) {
  return h(
    "li",
    { class: "room-item" + (active ? " active" : "") + (unread ? " unread" : ""), "data-room": name },
    h(
      "button",
      { type: "button", class: "room-open", "aria-current": active ? "page" : false, onclick: onOpen },
      icon("hash"),
      h("span", { class: "room-name" }, name),
      unread ? h("span", { class: "badge", "aria-label": unread + " unread" }, count99(unread)) : null,
      count !== null && !unread ? h("span", { class: "count", title: count + " members" }, String(count)) : null,
    ),
    h("button", { type: "button", class: "icon-btn small leave-btn", "aria-label": "Leave " + name, title: "Leave", onclick: onLeave }, icon("close")),
  );
}

/** directoryItem is a room of the server's list, with its member count. */
export function directoryItem(name, members, mine, onOpen) {
  const label = name + ", " + members + (members === 1 ? " member" : " members") + (mine ? ", joined" : "");
  return h(
    "li",
    { class: "room-item" + (mine ? " mine" : ""), "data-room": name },
    h(
      "button",
      { type: "button", class: "room-open", onclick: onOpen, "aria-label": label },
      icon("hash"),
      h("span", { class: "room-name" }, name),
      h("span", { class: "count" }, String(members)),
    ),
  );
}

/** memberItem is one member in a room's member list. */
export function memberItem(name, me) {
  return h(
    "li",
    { class: "member" + (me ? " me" : ""), "data-user": name },
    avatar(name),
    h("span", { class: "member-name" }, name),
    me ? h("span", { class: "you" }, "you") : null,
    h("span", { class: "online", title: "online", "aria-label": "online" }),
  );
}

const urlRe = /\bhttps?:\/\/[^\s<>"']+[^\s<>"'.,;:!?)\]]/gi;

/** linkify appends text to parent, with web addresses as links. */
export function linkify(parent, text) {
  let at = 0;
  for (const m of text.matchAll(urlRe)) {
    if (m.index > at) parent.append(document.createTextNode(text.slice(at, m.index)));
    const a = h("a", { href: m[0], target: "_blank", rel: "noopener noreferrer nofollow" }, m[0]);
    parent.append(a);
    at = m.index + m[0].length;
  }
  if (at < text.length) parent.append(document.createTextNode(text.slice(at)));
}

const encoder = new TextEncoder();

/** byteLength is the length of s in UTF-8, which the server's limit counts. */
export function byteLength(s) {
  return encoder.encode(s).length;
}

/** Names the server accepts (the protocol's rules). */
export const USER_RE = /^[A-Za-z0-9_-]{1,32}$/;
export const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;

/** friendly turns an error code into a sentence for the user. */
export function friendly(code, context, detail) {
  switch (code) {
    case "bad_credentials":
      return "That user name and password do not match.";
    case "user_taken":
      return "That user name is taken. Log in instead, or pick another name.";
    case "bad_request":
      if (context === "login") return "User names are 1–32 letters, digits, _ or -, and passwords 8–72 characters.";
      if (context === "room") return "Room names are 1–64 letters, digits, _ or -.";
      return "The server did not accept that" + (detail ? ": " + detail : ".");
    case "unauthorized":
      return "Please log in again.";
    case "no_such_room":
      return "There is no such room.";
    case "not_member":
      return "You are not in this room any more.";
    case "too_long":
      return "That message is too long to send.";
    case "rate_limited":
      if (context === "login") return "Too many attempts. Wait a moment, then try again.";
      return "You are sending too fast. Wait a moment.";
    case "unavailable":
      if (context === "login") return "The chat is briefly unavailable. Try again in a moment.";
      return "The chat is briefly unavailable. Trying again…";
    case "offline":
      return "Not connected to the server yet. Try again in a moment.";
    default:
      return "Something went wrong" + (code ? " (" + code + ")" : "") + ". Try again.";
  }
}
