// likeboard's page: a snapshot from the API, then live events over SSE.
// One module, no framework, no build step. All user text goes into the page
// through textContent, never as markup (and the CSP forbids inline script).

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

const MAX_CHARS = 1000;
const classroom = document.body.dataset.classroom === "on";
const reducedMotion = matchMedia("(prefers-reduced-motion: reduce)");
/** What the server's `retry:` field asks for; the wire view updates it. */
let retryMs = 3000;

// A random token for this tab, sent on its stream URLs so the fault panel can
// address this one client (and nobody can guess another tab's).
const clientToken = [...crypto.getRandomValues(new Uint8Array(16))]
  .map((b) => b.toString(16).padStart(2, "0"))
  .join("");

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
  if (!c || button.classList.contains("busy")) return;
  button.classList.add("busy");
  formError.textContent = "";
  try {
    const r = await api(c.liked ? "DELETE" : "POST", `/api/comments/${id}/like`);
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
    await api("POST", "/api/comments", data);
    form.content.value = "";
    updateCounter();
  } catch (e) {
    formError.textContent = e.message;
    form.content.setAttribute("aria-invalid", "true");
  } finally {
    button.disabled = false;
  }
});

// ---- the connection ---------------------------------------------------------

let source = null;
let countdown = null;
/** Why the stream stopped for good, when the fault panel knows. */
let stopReason = "";

function setStatus(state, text, note = "") {
  badge.className = `badge ${state}`;
  badge.textContent = text;
  statusNote.hidden = !note;
  statusNoteText.textContent = note;
}

function reconnecting() {
  clearInterval(countdown);
  const until = Date.now() + retryMs;
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

function streamUrl(since) {
  const q = new URLSearchParams({ since, viewers: "1" });
  if (classroom) q.set("client", clientToken);
  return `/events?${q}`;
}

async function start() {
  clearInterval(countdown);
  if (source) source.close();
  const snap = await api("GET", "/api/comments?limit=500");
  comments.clear();
  for (const c of snap.comments) comments.set(c.id, c);
  render();
  // Resume from the snapshot's id: nothing between the snapshot and the stream is lost.
  const es = new EventSource(streamUrl(snap.last_event_id));
  source = es;
  es.addEventListener("open", () => {
    clearInterval(countdown);
    stopReason = "";
    setStatus("live", "live");
  });
  es.addEventListener("error", () => {
    if (es !== source) return;
    if (es.readyState === EventSource.CLOSED) {
      clearInterval(countdown);
      if (stopReason) {
        // The fault panel made the server say "stop": show what EventSource does.
        setStatus("offline", "offline", stopReason);
      } else {
        // EventSource gave up by itself (a non-200 answer, e.g. from a server
        // that was stopping): start over from a fresh snapshot a little later,
        // jittered so a restarted server is not hit by every page at once.
        setStatus(
          "offline",
          "offline",
          "The server refused the stream, so the browser stopped reconnecting; trying again shortly.",
        );
        setTimeout(() => es === source && restart(), 3000 + Math.random() * 3000);
      }
    } else {
      reconnecting();
    }
  });
  es.addEventListener("like", (ev) => {
    const { id, score } = JSON.parse(ev.data);
    const c = comments.get(id);
    if (c && c.score !== score) {
      c.score = score;
      render();
    }
  });
  es.addEventListener("comment", (ev) => {
    const c = JSON.parse(ev.data);
    const known = comments.get(c.id);
    comments.set(c.id, { ...c, liked: known ? known.liked : false });
    for (const li of render()) slideIn(li);
  });
  es.addEventListener("viewers", (ev) => {
    const { count } = JSON.parse(ev.data);
    viewerCount.textContent = count;
    viewers.hidden = false;
    viewers.title = `${count} open event ${count === 1 ? "stream" : "streams"} on this server`;
  });
  // The history we asked for is gone: start over from a fresh snapshot.
  es.addEventListener("reset", () => restart());
}

function restart() {
  start().catch(() => {
    setStatus("reconnecting", "reconnecting…");
    setTimeout(restart, retryMs);
  });
}

$("reconnect").addEventListener("click", async () => {
  if (classroom) await fault("clear").catch(() => {});
  restart();
  if (wire.open) wire.restart();
});
addEventListener("offline", () => setStatus("offline", "offline", "This device has no network."));
addEventListener("online", () => source && source.readyState !== EventSource.OPEN && reconnecting());

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
    const since = this.lastId ?? (await api("GET", "/api/comments?limit=1")).last_event_id;
    const q = new URLSearchParams({ since });
    if (classroom) q.set("client", clientToken);
    const url = `/events?${q}`;
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
  "buffer-on": "Buffering like a proxy: events are held until 4 KiB pile up. Like something: this tab will not see it.",
  "buffer-off": "Buffer released: everything held arrives in one lump.",
  "answer-204": "Dropped; the reconnect gets 204 No Content. EventSource stops for good: that is how a server says 'stop'.",
  "answer-500": "Dropped; the reconnect gets 500. EventSource treats any non-200 answer as final and stops too.",
  clear: "All faults cleared.",
};

async function fault(name) {
  await api("POST", `/api/classroom/${clientToken}/${name}`);
}

for (const button of document.querySelectorAll("[data-fault]")) {
  button.addEventListener("click", async () => {
    const name = button.dataset.fault;
    if (name === "answer-204") stopReason = "The server answered 204 No Content: EventSource has stopped for good.";
    if (name === "answer-500") stopReason = "The server answered 500: EventSource has stopped for good.";
    try {
      await fault(name);
      $("fault-note").textContent = EXPLAIN[name];
      if (wire.open) note(`fault panel: ${name}`, "fault");
    } catch (e) {
      $("fault-note").textContent = `The server refused: ${e.message}`;
    }
  });
}

// ---- go ---------------------------------------------------------------------

updateCounter();
if (new URLSearchParams(location.search).get("wire") === "1") wire.start();
start().catch(() => {
  setStatus("offline", "offline", "Could not load the board.");
  setTimeout(restart, retryMs);
});
