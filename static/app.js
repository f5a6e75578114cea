// likeboard's page: a snapshot from the API, then live events over SSE, from
// one event stream that all this browser's tabs of the board share (see "the
// connection" below, and static/stream-worker.js).
// Modules, no framework, no build step. All user text goes into the page
// through textContent, never as markup (and the CSP forbids inline script).

import { SharedStream, randomToken } from "./stream-worker.js";

const $ = (id) => document.getElementById(id);
const list = $("comments");
const emptyNote = $("empty");
const badge = $("status");
const statusNote = $("status-note");
const statusNoteText = $("status-note-text");
const form = $("add");
const formError = $("form-error");
const counter = $("counter");
const viewers = $("viewers");
const viewerCount = $("viewer-count");
const viewerUnit = $("viewer-unit");

const MAX_CHARS = 1000;
const classroom = document.body.dataset.classroom === "on";
/** The board's name, for the moderator's routes. */
const boardName = document.body.dataset.board;
/** Whether the board is locked: nobody may comment or like (`event: locked`). */
let locked = document.body.dataset.locked === "1";
/** Whether this page shows the moderator's controls (/admin, ?moderate). */
const moderating = document.body.dataset.moderate === "1";
const reducedMotion = matchMedia("(prefers-reduced-motion: reduce)");
/** What the server's `retry:` field asks for; the wire view updates it. */
let retryMs = 3000;

/** id -> {id, nickname, content, score, created_at, liked} */
const comments = new Map();
/** id -> the <li> showing it; kept across renders so moves can be animated. */
const items = new Map();

// ---- the board --------------------------------------------------------------

function byRank(a, b) {
  return b.score - a.score || b.id - a.id;
}

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 45) return "just now";
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.round(m / 60);
  if (h < 24) return `${h} h ago`;
  return new Date(ms).toLocaleDateString();
}

function makeItem(c) {
  const li = document.createElement("li");
  li.className = "comment";
  li.dataset.id = c.id;
  const like = document.createElement("button");
  like.type = "button";
  like.className = "like";
  const heart = document.createElement("span");
  heart.className = "heart";
  heart.setAttribute("aria-hidden", "true");
  const score = document.createElement("span");
  score.className = "score";
  like.append(heart, score);
  like.addEventListener("click", () => toggleLike(c.id, like));
  const body = document.createElement("div");
  body.className = "body";
  const byline = document.createElement("div");
  byline.className = "byline";
  const nick = document.createElement("span");
  nick.className = "nickname";
  const time = document.createElement("time");
  byline.append(nick, time);
  const content = document.createElement("p");
  content.className = "content";
  body.append(byline, content);
  li.append(like, body);
  if (moderating) li.append(modControls(c.id));
  return li;
}

/** Brings one item's text and state up to date with its comment. */
function fill(li, c) {
  const like = li.querySelector(".like");
  const score = li.querySelector(".score");
  if (score.textContent !== String(c.score)) {
    if (score.textContent !== "") bump(score);
    score.textContent = c.score;
  }
  like.setAttribute("aria-pressed", String(Boolean(c.liked)));
  like.disabled = locked;
  const name = c.nickname || "anonymous";
  like.setAttribute(
    "aria-label",
    `${c.liked ? "Unlike" : "Like"} the comment by ${name} (${c.score} ${c.score === 1 ? "like" : "likes"})`,
  );
  li.querySelector(".nickname").textContent = name;
  const time = li.querySelector("time");
  time.dateTime = new Date(c.created_at).toISOString();
  time.textContent = ago(c.created_at);
  li.querySelector(".content").textContent = c.content;
}

function animate(el, keyframes, options) {
  if (!reducedMotion.matches && el.animate) el.animate(keyframes, options);
}

function bump(el) {
  animate(el, [{ transform: "scale(1.35)" }, { transform: "scale(1)" }], {
    duration: 250,
    easing: "ease-out",
  });
}

/**
 * Puts the list in rank order. FLIP: remember where each item was, move the
 * DOM nodes, then animate each from its old place to its new one.
 */
function render() {
  const sorted = [...comments.values()].sort(byRank);
  const before = new Map();
  for (const [id, li] of items) before.set(id, li.getBoundingClientRect().top);
  const fresh = [];
  let prev = null;
  for (const c of sorted) {
    let li = items.get(c.id);
    if (!li) {
      li = makeItem(c);
      items.set(c.id, li);
      fresh.push(li);
    }
    fill(li, c);
    const want = prev ? prev.nextSibling : list.firstChild;
    if (want !== li) list.insertBefore(li, want);
    prev = li;
  }
  for (const [id, li] of items) {
    if (!comments.has(id)) {
      li.remove();
      items.delete(id);
    }
  }
  // Server-rendered rows the script does not know (first render) go away.
  for (const li of [...list.children]) if (items.get(Number(li.dataset.id)) !== li) li.remove();
  emptyNote.hidden = comments.size > 0;
  for (const [id, li] of items) {
    const old = before.get(id);
    if (old === undefined) continue;
    const dy = old - li.getBoundingClientRect().top;
    if (Math.abs(dy) > 1) {
      animate(li, [{ transform: `translateY(${dy}px)` }, { transform: "none" }], {
        duration: 350,
        easing: "cubic-bezier(.2,.8,.2,1)",
      });
    }
  }
  return fresh;
}

function slideIn(li) {
  li.classList.add("fresh");
  animate(
    li,
    [
      { opacity: 0, transform: "translateY(-12px) scale(.98)" },
      { opacity: 1, transform: "none" },
    ],
    { duration: 400, easing: "ease-out" },
  );
  setTimeout(() => li.classList.remove("fresh"), 2500);
}

setInterval(() => {
  for (const [id, li] of items) {
    const c = comments.get(id);
    if (c) li.querySelector("time").textContent = ago(c.created_at);
  }
}, 30_000);

async function api(method, url, body) {
  const res = await fetch(url, {
    method,
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.error || `${res.status} ${res.statusText}`);
  return data;
}

async function toggleLike(id, button) {
  const c = comments.get(id);
  if (!c || locked || button.classList.contains("busy")) return;
  button.classList.add("busy");
  formError.textContent = "";
  try {
    const r = await api(c.liked ? "DELETE" : "POST", `${commentsUrl}/${id}/like`);
    c.liked = r.liked;
    c.score = r.score;
    render();
  } catch (e) {
    formError.textContent = `Could not like: ${e.message}`;
  } finally {
    button.classList.remove("busy");
  }
}

// ---- the form ---------------------------------------------------------------

const NICK_KEY = "likeboard.nickname";
function remembered() {
  try {
    return localStorage.getItem(NICK_KEY) || "";
  } catch {
    return "";
  }
}
function remember(nick) {
  try {
    localStorage.setItem(NICK_KEY, nick);
  } catch {
    /* private mode: not remembered, nothing else changes */
  }
}
form.nickname.value = remembered();
form.nickname.addEventListener("change", () => remember(form.nickname.value.trim()));

function updateCounter() {
  // Characters as the server counts them (code points), not UTF-16 units.
  const n = [...form.content.value.trim()].length;
  counter.textContent = `${n} / ${MAX_CHARS}`;
  counter.classList.toggle("over", n > MAX_CHARS);
}
form.content.addEventListener("input", updateCounter);
// Ctrl/Cmd+Enter posts from the text area.
form.content.addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) form.requestSubmit();
});

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  formError.textContent = "";
  form.content.removeAttribute("aria-invalid");
  const data = { nickname: form.nickname.value.trim(), content: form.content.value };
  remember(data.nickname);
  const button = $("post");
  button.disabled = true;
  try {
    // The server validates; whatever it objects to is shown here, as it said it.
    await api("POST", commentsUrl, data);
    form.content.value = "";
    updateCounter();
  } catch (e) {
    formError.textContent = e.message;
    form.content.setAttribute("aria-invalid", "true");
  } finally {
    button.disabled = false;
  }
});

// ---- a locked board -----------------------------------------------------------
// The server refuses comments and likes on a locked board (423); the page says
// so and disables the form and every like button, from the first render (the
// template sets data-locked and disables the fieldset) and live (`locked`).

function setLocked(on) {
  locked = on;
  document.body.dataset.locked = on ? "1" : "0";
  $("add-fields").disabled = on;
  $("locked-note").hidden = !on;
  for (const li of items.values()) li.querySelector(".like").disabled = on;
  if (moderating) moderation.showLock();
}

// ---- the connection ---------------------------------------------------------
// Over HTTP/1.1 a browser opens at most 6 connections to one host, and every
// EventSource holds one for as long as its tab is open: with a stream per tab,
// the seventh tab of the board would never even load. So this browser holds ONE
// stream per stream URL and every tab of it gets its events from there
// (static/stream-worker.js holds it; its header lists the messages):
//
// 1. a SharedWorker, where the browser has one: a script that lives as long as
//    any tab uses it, shared by every tab that names it the same way;
// 2. else one tab elected with the Web Locks API: the tab that holds the lock
//    opens the stream and relays it over a BroadcastChannel; when it closes,
//    the browser hands the lock to a waiting tab, which takes over from the last
//    id it saw;
// 3. else (neither API) a stream of this tab's own, as before.
//
// Each tab still fetches its own snapshot of the board and then asks the shared
// stream for everything after the snapshot's id: ids decide what is new, so a
// tab neither misses an event nor applies one twice.
//
// `?share=` is a teaching and testing switch: `locks` skips the SharedWorker,
// `off` gives every tab its own stream again (open seven tabs and see).

const eventsUrl = document.body.dataset.events;
const commentsUrl = document.body.dataset.comments;
/** One name per stream URL (and origin, which scopes workers, locks and channels). */
const shareName = `likeboard stream ${eventsUrl}`;
/** Who this tab is, to the shared stream. */
const tabId = randomToken();

/** The shared stream's token for the fault panel and the wire view (it picks it). */
let token = null;
let tokenKnown;
const tokenReady = new Promise((resolve) => (tokenKnown = resolve));
/** The token, once the shared stream has answered a first time. */
async function streamToken() {
  await tokenReady;
  return token;
}
/** The newest event id applied here: the snapshot's at first. */
let applied = 0;
/** Which hello an answer must be for: each start and takeover says hello again. */
let helloN = 0;
let helloTimer = null;
/** The shared stream this tab is synced with (`from` of its answer); null while waiting. */
let holder = null;
/** The badge's last state from the stream, and the reconnect countdown. */
let streamState = "connecting";
let countdown = null;
/** How to talk to the shared stream: { send(msg) }. */
let stream = null;

function setStatus(state, text, note = "") {
  badge.className = `badge ${state}`;
  badge.textContent = text;
  statusNote.hidden = !note;
  statusNoteText.textContent = note;
}

/** Counts down to the reconnect EventSource does `retry:` ms after `at`. */
function reconnecting(at = Date.now()) {
  clearInterval(countdown);
  const until = at + retryMs;
  const tick = () => {
    const s = Math.ceil((until - Date.now()) / 1000);
    if (s > 0) setStatus("reconnecting", `reconnecting in ${s} s`);
    else {
      setStatus("reconnecting", "reconnecting…");
      clearInterval(countdown);
    }
  };
  tick();
  countdown = setInterval(tick, 250);
}

function showState({ state, note, at }) {
  streamState = state;
  clearInterval(countdown);
  if (state === "reconnecting") reconnecting(at);
  else setStatus(state, state, note);
}

/**
 * What the count means: the server counts the board's open event streams
 * (src/viewers.rs), and a browser now holds one for all its tabs of a board.
 * So it counts browsers, not tabs, plus any wire view or curl; the page says
 * "streams", and never "watching".
 */
function showViewers(count) {
  viewerCount.textContent = count;
  viewerUnit.textContent = count === 1 ? "stream" : "streams";
  viewers.hidden = false;
  viewers.title = `${count} open event ${count === 1 ? "stream" : "streams"} of this board on this server: one per browser, shared by all its tabs of the board (an open wire view, or a curl, is one more)`;
}

/** Applies events in id order, skipping any not newer than what this tab has. */
function applyEvents(events) {
  let changed = false;
  let moderated = false;
  for (const { type, id, data } of events) {
    if (id <= applied) continue;
    applied = id;
    if (type === "like") {
      const { id: cid, score } = JSON.parse(data);
      const c = comments.get(cid);
      if (c && c.score !== score) {
        c.score = score;
        changed = true;
      }
    } else if (type === "comment") {
      // A new comment, or a hidden one restored with its score.
      const c = JSON.parse(data);
      const known = comments.get(c.id);
      comments.set(c.id, { ...c, liked: known ? known.liked : false });
      changed = true;
    } else if (type === "remove") {
      // A moderator hid or deleted it: it leaves every page at once.
      changed = comments.delete(JSON.parse(data).id) || changed;
      moderated = true;
    } else if (type === "locked") {
      setLocked(JSON.parse(data).locked);
      moderated = true;
    }
  }
  if (changed) for (const li of render()) slideIn(li);
  if (moderated && moderating) moderation.refreshSoon();
}

/** Everything the shared stream tells this tab. */
function onStream(msg) {
  if (msg.to !== undefined && msg.to !== tabId) return;
  if (msg.kind === "sync") {
    if (msg.n !== helloN) return; // the answer to an older hello
    badge.title = SHARE_TITLES[document.documentElement.dataset.share];
    clearTimeout(helloTimer);
    holder = msg.from;
    token = msg.token;
    tokenKnown(token);
    applyEvents(msg.events);
    if (msg.viewers !== null) showViewers(msg.viewers);
    showState(msg.state);
  } else if (msg.kind === "gap") {
    if (msg.n === helloN) restart();
  } else if (msg.kind === "holder") {
    // A tab took the stream over (Web Locks): tell it what we already have.
    hello();
  } else if (msg.from !== holder) {
    // Not synced yet (the answer to our hello will include this), or from a
    // holder that has gone: nothing to do.
  } else if (msg.kind === "event") {
    applyEvents([msg]);
  } else if (msg.kind === "viewers") {
    showViewers(msg.count);
  } else if (msg.kind === "state") {
    showState(msg);
  } else if (msg.kind === "reset") {
    // The server's history after our id is gone: refetch the board.
    restart();
  }
}

/** Asks the shared stream for everything after `applied`, then live events. */
function hello() {
  helloN += 1;
  holder = null;
  // A hello sent while the lock changes hands can be lost: ask again if unanswered.
  clearTimeout(helloTimer);
  helloTimer = setTimeout(hello, 5000);
  stream.send({
    kind: "hello",
    tab: tabId,
    n: helloN,
    since: applied,
    config: { events: eventsUrl, classroom },
  });
}

/** Loads the board and joins the stream from the snapshot's id. */
async function start() {
  helloN += 1; // whatever comes for an earlier hello is out of date now
  holder = null;
  const snap = await api("GET", `${commentsUrl}?limit=500`);
  comments.clear();
  for (const c of snap.comments) comments.set(c.id, c);
  setLocked(Boolean(snap.locked));
  render();
  // Resume from the snapshot's id: nothing between the snapshot and the stream is lost.
  applied = Number(snap.last_event_id);
  hello();
}

function restart() {
  start().catch(() => {
    setStatus("reconnecting", "reconnecting…");
    setTimeout(restart, retryMs);
  });
}

/** 1. The stream in a SharedWorker; falls back to Web Locks if it cannot start. */
function viaWorker() {
  // A module worker, so the locks path can import the same code into the page.
  const worker = new SharedWorker(new URL("stream-worker.js", import.meta.url), {
    type: "module",
    name: shareName,
  });
  worker.port.addEventListener("message", ({ data }) => onStream(data));
  worker.port.start();
  worker.addEventListener("error", () => {
    // The script did not load (e.g. no module workers here): use a lock instead.
    stream = canLock() ? viaLocks() : ownStream();
    hello();
  });
  document.documentElement.dataset.share = "worker";
  return { send: (msg) => worker.port.postMessage(msg) };
}

/** Messages for the stream's holder; everything else on the channel is for tabs. */
const TO_HOLDER = new Set(["hello", "restart", "stop-reason", "bye"]);

/** 2. One tab holds the stream (the Web Lock), the others listen on a BroadcastChannel. */
function viaLocks() {
  const channel = new BroadcastChannel(shareName);
  /** The SharedStream, while this tab holds the lock. */
  let held = null;
  // A channel does not deliver to its own sender: this tab gets its messages directly.
  const deliver = (msg) => {
    if (msg.to === undefined || msg.to === tabId) onStream(msg);
    if (msg.to !== tabId) channel.postMessage(msg);
  };
  channel.addEventListener("message", ({ data }) => {
    if (TO_HOLDER.has(data.kind)) held?.receive(data);
    else onStream(data);
  });
  document.documentElement.dataset.share = "locks";
  // Waits while another tab holds the lock; the browser releases a lock when
  // the tab holding it closes (or crashes), and grants it to the next in line.
  navigator.locks.request(shareName, () => {
    // Keep the fault panel's token, so a fault armed for the stream still applies.
    held = new SharedStream({ events: eventsUrl, classroom, token, deliver });
    document.documentElement.dataset.holdsStream = "true";
    // Every tab says hello again, with the id it has: the new stream opens
    // from this tab's id and answers the others from there (or says `gap`).
    held.send({ kind: "holder" });
    return new Promise(() => {}); // held for the rest of this tab's life
  });
  return { send: (msg) => (held ? held.receive(msg) : channel.postMessage(msg)) };
}

/** 3. A stream of this tab's own. */
function ownStream() {
  const own = new SharedStream({ events: eventsUrl, classroom, deliver: onStream });
  document.documentElement.dataset.share = "tab";
  return { send: (msg) => own.receive(msg) };
}

function canLock() {
  return "locks" in navigator && "BroadcastChannel" in window;
}

function connect() {
  const share = new URLSearchParams(location.search).get("share");
  if (share !== "off" && share !== "locks" && "SharedWorker" in window) return viaWorker();
  if (share !== "off" && canLock()) return viaLocks();
  return ownStream();
}

/** What the badge's tooltip says about where this tab's events come from. */
const SHARE_TITLES = {
  worker: "One event stream for all this browser's tabs of this board, held by a SharedWorker.",
  locks: "One event stream for all this browser's tabs of this board, held by one of them (Web Locks) and relayed over BroadcastChannel.",
  tab: "This tab has an event stream of its own.",
};

$("reconnect").addEventListener("click", async () => {
  if (classroom) await fault("clear").catch(() => {});
  stream.send({ kind: "restart" });
  restart();
  if (wire.open) wire.restart();
});
addEventListener("offline", () => setStatus("offline", "offline", "This device has no network."));
addEventListener("online", () => streamState !== "live" && reconnecting());
// A port has no "closed" event: tell the worker this tab is going.
addEventListener("pagehide", () => stream.send({ kind: "bye", tab: tabId }));
addEventListener("pageshow", (ev) => ev.persisted && restart());

// ---- the wire view ----------------------------------------------------------
// EventSource hides the raw stream (and all comments), so the wire view reads
// its own connection with fetch() and shows every byte. It reconnects the way
// EventSource does: after `retry:` ms, sending Last-Event-ID.

const wireLog = $("wire-log");
const wireToggle = $("wire-toggle");
const WIRE_MAX = 400;

function stamp() {
  const d = new Date();
  return `${d.toLocaleTimeString([], { hour12: false })}.${String(d.getMilliseconds()).padStart(3, "0")}`;
}

/** Appends a row: a time, a kind, and pieces of [text, class]. */
function wireRow(kind, pieces) {
  const li = document.createElement("li");
  li.className = `row ${kind}`;
  const t = document.createElement("time");
  t.textContent = stamp();
  const pre = document.createElement("pre");
  for (const [text, cls] of pieces) {
    const span = document.createElement("span");
    if (cls) span.className = cls;
    span.textContent = text;
    pre.append(span);
  }
  li.append(t, pre);
  const atBottom = wireLog.scrollTop + wireLog.clientHeight >= wireLog.scrollHeight - 8;
  wireLog.append(li);
  while (wireLog.children.length > WIRE_MAX) wireLog.firstChild.remove();
  if (atBottom) wireLog.scrollTop = wireLog.scrollHeight;
  return li;
}

function note(text, cls = "") {
  wireRow(`note ${cls}`, [[text, ""]]);
}

/** One SSE block as coloured lines, exactly as received. */
function frameRow(block, replayed) {
  const pieces = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) pieces.push([line, "f-comment"]);
    else {
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const cls = ["id", "event", "data", "retry"].includes(field) ? `f-${field}` : "f-other";
      pieces.push([field, cls], [colon < 0 ? "" : line.slice(colon), "f-value"]);
    }
    pieces.push(["\n", ""]);
  }
  // The blank line that ends every block is the row's bottom edge.
  pieces.pop();
  const row = wireRow(replayed ? "frame replayed" : "frame", pieces);
  if (replayed) row.title = "replayed after Last-Event-ID";
}

const wire = {
  open: false,
  abort: null,
  lastId: null,
  timer: null,
  async connect() {
    const ctrl = new AbortController();
    this.abort = ctrl;
    const since = this.lastId ?? (await api("GET", `${commentsUrl}?limit=1`)).last_event_id;
    const q = new URLSearchParams({ since });
    // The shared stream's token, so the fault panel disturbs this view too.
    if (classroom) q.set("client", await streamToken());
    const url = `${eventsUrl}?${q}`;
    const headers = { Accept: "text/event-stream" };
    const resuming = this.lastId !== null;
    if (resuming) headers["Last-Event-ID"] = this.lastId;
    note(
      resuming ? `GET ${url}  Last-Event-ID: ${this.lastId}` : `GET ${url}`,
      resuming ? "reconnect" : "connect",
    );
    const res = await fetch(url, { headers, cache: "no-store", signal: ctrl.signal });
    const type = res.headers.get("Content-Type") || "";
    if (res.status !== 200 || !type.startsWith("text/event-stream")) {
      note(
        `HTTP ${res.status} ${res.statusText || ""}${type ? `, ${type}` : ""}: EventSource stops here for good`,
        "bad",
      );
      return false;
    }
    note(`HTTP 200, ${type}`, "ok");
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    // The server sends the whole replay in one write, just after `retry:`:
    // events in the first read that carries ids, soon after opening, are it.
    const opened = performance.now();
    let replayCheck = resuming;
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      const blocks = buffer.split("\n\n");
      buffer = blocks.pop();
      const inReplay = replayCheck && performance.now() - opened < 500;
      const replayed = [];
      for (const block of blocks) {
        const id = /^id: ?(.*)$/m.exec(block);
        const retry = /^retry: ?(\d+)$/m.exec(block);
        if (retry) retryMs = Number(retry[1]);
        if (id) {
          this.lastId = id[1];
          if (inReplay) replayed.push(id[1]);
        }
        frameRow(block, inReplay && id !== null);
      }
      if (replayed.length) {
        note(
          `replayed ${replayed.length} event${replayed.length === 1 ? "" : "s"} after Last-Event-ID (ids ${replayed[0]}\u2013${replayed.at(-1)})`,
          "replay",
        );
      }
      if (blocks.some((b) => /^(id|data)/m.test(b))) replayCheck = false;
    }
    note("the server closed the stream", "bad");
    return true;
  },
  async loop() {
    while (this.open) {
      let again = true;
      try {
        again = await this.connect();
      } catch (e) {
        if (!this.open) return;
        note(`connection failed: ${e.message}`, "bad");
      }
      if (!again || !this.open) return;
      note(`waiting ${retryMs} ms (retry:) before reconnecting`);
      await new Promise((r) => {
        this.timer = setTimeout(r, retryMs);
      });
    }
  },
  start() {
    this.open = true;
    $("wire").hidden = false;
    document.body.classList.add("wire-open");
    wireToggle.setAttribute("aria-expanded", "true");
    wireToggle.textContent = "Hide the wire";
    this.loop();
  },
  stop() {
    this.open = false;
    clearTimeout(this.timer);
    if (this.abort) this.abort.abort();
    $("wire").hidden = true;
    document.body.classList.remove("wire-open");
    wireToggle.setAttribute("aria-expanded", "false");
    wireToggle.textContent = "Show the wire";
  },
  restart() {
    this.stop();
    this.lastId = null;
    this.start();
  },
};

wireToggle.addEventListener("click", () => (wire.open ? wire.stop() : wire.start()));
$("wire-clear").addEventListener("click", () => wireLog.replaceChildren());

// ---- the fault panel (--classroom) ------------------------------------------

const EXPLAIN = {
  drop: "Dropped. EventSource waits retry: ms, reconnects and sends Last-Event-ID; the server replays what was missed.",
  "heartbeats-off": "No more heartbeats. EventSource cannot tell a quiet stream from a dead one; a proxy would soon cut it.",
  "heartbeats-on": "Heartbeats are back.",
  "buffer-on": "Buffering like a proxy: events are held until 4 KiB pile up. Like something: no tab of this browser will see it.",
  "buffer-off": "Buffer released: everything held arrives in one lump.",
  "answer-204": "Dropped; the reconnect gets 204 No Content. EventSource stops for good: that is how a server says 'stop'.",
  "answer-500": "Dropped; the reconnect gets 500. EventSource treats any non-200 answer as final and stops too.",
  clear: "All faults cleared.",
};

async function fault(name) {
  // The shared stream's token: a fault disturbs the stream every tab of this
  // board in this browser uses (and every open wire view), not just this tab.
  await api("POST", `/api/classroom/${await streamToken()}/${name}`);
}

for (const button of document.querySelectorAll("[data-fault]")) {
  button.addEventListener("click", async () => {
    const name = button.dataset.fault;
    // Told to the stream before the server answers its reconnect, so it knows why it stops.
    const stopped = {
      "answer-204": "The server answered 204 No Content: EventSource has stopped for good.",
      "answer-500": "The server answered 500: EventSource has stopped for good.",
    }[name];
    if (stopped) stream.send({ kind: "stop-reason", text: stopped });
    try {
      await fault(name);
      $("fault-note").textContent = EXPLAIN[name];
      if (wire.open) note(`fault panel: ${name}`, "fault");
    } catch (e) {
      $("fault-note").textContent = `The server refused: ${e.message}`;
    }
  });
}

// ---- moderation (/admin, ?moderate) -------------------------------------------
// The token is asked for once per tab and kept in sessionStorage: it lives as
// long as the tab, is never shared with other tabs or sites, and is sent only
// as an `Authorization: Bearer` header to /api/admin/..., never as a cookie
// (a cookie would go with every request, cross-site ones included). Every
// action's effect on the board arrives like everyone else's, as events.

const TOKEN_KEY = "likeboard.admin-token";

function modControls(id) {
  const box = document.createElement("div");
  box.className = "mod-controls";
  for (const [label, action] of [
    ["Hide", "hide"],
    ["Delete", "delete"],
    ["Block", "block"],
  ]) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = `mod-${action}`;
    b.textContent = label;
    b.addEventListener("click", () => moderation.act(action, id));
    box.append(b);
  }
  return box;
}

const moderation = {
  timer: null,
  token() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch {
      return this.memoryToken ?? null;
    }
  },
  keep(token) {
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      this.memoryToken = token; // no sessionStorage: kept in this page only
    }
  },
  async call(method, path, body) {
    const headers = { Authorization: `Bearer ${this.token()}` };
    if (body) headers["Content-Type"] = "application/json";
    const res = await fetch(`/api/admin${path}`, {
      method,
      headers,
      body: body ? JSON.stringify(body) : undefined,
      credentials: "omit",
      cache: "no-store",
    });
    const data = await res.json().catch(() => ({}));
    if (res.status === 401) this.signedOut("The token was refused; enter it again.");
    if (!res.ok) throw new Error(data.error || `${res.status} ${res.statusText}`);
    return data;
  },
  board: () => `/boards/${encodeURIComponent(boardName)}`,
  signedIn() {
    $("mod-login").hidden = true;
    $("mod-panel").hidden = false;
    document.body.classList.add("moderating");
    this.showLock();
    this.refresh();
  },
  signedOut(why = "") {
    this.keep(null);
    $("mod-login").hidden = false;
    $("mod-panel").hidden = true;
    document.body.classList.remove("moderating");
    $("mod-login-error").textContent = why;
  },
  showLock() {
    $("mod-lock").textContent = locked ? "Unlock this board" : "Lock this board";
  },
  say(text) {
    $("mod-note").textContent = text;
  },
  async act(action, id) {
    const path = `${this.board()}/comments/${id}`;
    try {
      if (action === "hide") await this.call("POST", `${path}/hide`);
      else if (action === "restore") await this.call("POST", `${path}/restore`);
      else if (action === "delete") await this.call("DELETE", path);
      else if (action === "block") {
        const minutes = $("mod-block-for").value;
        const body = { hide_all: $("mod-hide-all").checked };
        if (minutes) body.minutes = Number(minutes);
        const r = await this.call("POST", `${path}/block-author`, body);
        this.say(`Blocked the author of comment ${id}; ${r.hidden.length} of their comments hidden.`);
      }
      if (action !== "block") this.say(`Comment ${id}: ${action} done.`);
    } catch (e) {
      this.say(`Comment ${id}: ${e.message}`);
    }
    this.refresh();
  },
  refreshSoon() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refresh(), 300);
  },
  async refresh() {
    if (!this.token()) return;
    try {
      const [hidden, blocked, audit] = await Promise.all([
        this.call("GET", `${this.board()}/hidden`),
        this.call("GET", "/blocked"),
        this.call("GET", "/audit?limit=20"),
      ]);
      this.list($("mod-hidden"), hidden.hidden, (c) => [
        `${c.nickname}: ${c.content} (${c.score} likes)`,
        [
          ["Restore", () => this.act("restore", c.id)],
          ["Delete", () => this.act("delete", c.id)],
        ],
      ]);
      this.list($("mod-blocked"), blocked.blocked, (b) => [
        `${b.ref} ${b.until ? `until ${new Date(b.until).toLocaleString()}` : "for good"} (comment ${b.comment} on ${b.board})`,
        [["Unblock", () => this.unblock(b.ref)]],
      ]);
      this.list($("mod-audit"), audit.audit, (a) => [
        `${new Date(a.at).toLocaleTimeString()} ${a.action}${a.board ? ` ${a.board}` : ""}${a.comment ? ` #${a.comment}` : ""}${a.detail ? ` (${a.detail})` : ""} from ${a.ip}`,
        [],
      ]);
    } catch (e) {
      this.say(e.message);
    }
  },
  /** Fills a list, one row per item: its text and its buttons (all as text). */
  list(ol, items, row) {
    ol.replaceChildren();
    if (!items.length) {
      const li = document.createElement("li");
      li.className = "none";
      li.textContent = "none";
      ol.append(li);
    }
    for (const item of items) {
      const [text, buttons] = row(item);
      const li = document.createElement("li");
      const span = document.createElement("span");
      span.textContent = text;
      li.append(span);
      for (const [label, onClick] of buttons) {
        const b = document.createElement("button");
        b.type = "button";
        b.className = "link";
        b.textContent = label;
        b.addEventListener("click", onClick);
        li.append(" ", b);
      }
      ol.append(li);
    }
  },
  async unblock(ref) {
    try {
      await this.call("DELETE", `/blocked/${ref}`);
      this.say("Unblocked.");
    } catch (e) {
      this.say(e.message);
    }
    this.refresh();
  },
  async toggleLock() {
    try {
      await this.call(locked ? "DELETE" : "POST", `${this.board()}/lock`);
    } catch (e) {
      this.say(e.message);
    }
    this.refresh();
  },
  init() {
    $("mod-login").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const token = $("mod-token").value.trim();
      $("mod-token").value = "";
      this.keep(token);
      try {
        // Checked at once, so a mistyped token is said here, not later.
        await this.call("GET", "/audit?limit=1");
        this.signedIn();
      } catch (e) {
        this.signedOut(e.message);
      }
    });
    $("mod-logout").addEventListener("click", () => this.signedOut());
    $("mod-lock").addEventListener("click", () => this.toggleLock());
    if (this.token()) this.signedIn();
  },
};

// ---- go ---------------------------------------------------------------------

updateCounter();
if (moderating) moderation.init();
stream = connect();
if (new URLSearchParams(location.search).get("wire") === "1") wire.start();
start().catch(() => {
  setStatus("offline", "offline", "Could not load the board.");
  setTimeout(restart, retryMs);
});
