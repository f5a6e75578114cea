// One board's event stream, held once per browser and handed to every tab.
//
// Why: over HTTP/1.1 a browser opens at most 6 connections to one host, and an
// EventSource keeps one open for as long as its tab lives. Six tabs of the
// board, each with its own stream, use them all up: the seventh tab cannot even
// load the page. So the tabs of one browser share ONE stream per stream URL.
//
// This file is both halves of that:
// - `SharedStream`, the one EventSource and what it saw, knowing nothing of
//   how it talks to tabs (it is handed a `deliver` function). app.js imports it
//   to hold the stream itself when this browser has no SharedWorker (one tab,
//   elected with the Web Locks API, relays over BroadcastChannel).
// - when loaded as a SharedWorker (`new SharedWorker(this file, {type: "module"})`,
//   named after the stream URL so each board gets its own), the code at the
//   bottom connects the tabs' ports to one `SharedStream`.
//
// The conversation, one message kind each way per line:
//   tab -> stream  hello {tab, n, since, config}  "send me everything after `since`, then live"
//                  restart {}                     the Reconnect button: open the stream again
//                  stop-reason {text}             the fault panel armed a 204/500: say why we stop
//                  bye {tab}                      this tab is going away
//   stream -> tab  (every message carries `from`, the id of the SharedStream that sent it)
//                  sync {to, n, events, viewers, state, token}  the answer to hello `n`
//                  gap {to, n}    "I do not have everything after your `since`: refetch the board"
//                  event {type, id, data}         a like, comment, remove or locked, as the server sent it
//                  viewers {count}                the server's count of open streams (no id)
//                  state {state, note, at}        the badge: connecting, live, reconnecting, offline
//                  reset {}                       the server said `event: reset`: refetch the board
//                  holder {}                      (Web Locks only) a new tab holds the stream: hello again
//
// Ids tell whether anything was lost. The server's ids are increasing integers
// (`id: 42`), so a tab keeps the newest id it has applied and skips anything not
// newer; and the stream keeps its recent events, so a tab that arrives (or comes
// back) late is sent exactly what came after its own snapshot. Ids are compared
// as JavaScript numbers: exact up to 2^53, far beyond any board's event count.

/** How many recent events the shared stream keeps for tabs that join late. */
const RECENT_MAX = 1000;
/** What EventSource waits before reconnecting until the server's `retry:` says otherwise. */
const RETRY_MS = 3000;

/** 128 random bits in hex: the fault panel's client token (see src/classroom.rs). */
export function randomToken() {
  return [...crypto.getRandomValues(new Uint8Array(16))]
    .map((b) => b.toString(16).padStart(2, "0"))
    .join("");
}

/**
 * The one EventSource of a board, in whichever place holds it (a SharedWorker,
 * or the tab that holds the Web Lock, or each tab on its own).
 */
export class SharedStream {
  /**
   * @param {object} o
   * @param {string} o.events       the stream URL, from the page's `data-events`
   * @param {boolean} o.classroom   the fault panel is on: put `client=TOKEN` on the URL
   * @param {string} [o.token]      the token to keep (a tab taking over reuses the last holder's)
   * @param {(msg: object) => void} o.deliver  sends a message to one tab (`msg.to`) or to all
   */
  constructor({ events, classroom, token, deliver }) {
    this.events = events;
    this.classroom = classroom;
    // One token for the shared stream: the fault panel of any tab disturbs it,
    // and every tab's wire view (which puts the same token on its own stream).
    this.token = token || randomToken();
    this.deliver = deliver;
    /** Stamped on every message, so a tab can ignore a holder it is not synced with. */
    this.id = randomToken();
    /** The EventSource, once a first tab has said hello. */
    this.source = null;
    /** The newest id this stream has seen: where a new EventSource resumes. */
    this.lastId = 0;
    /** `recent` holds every event with an id after this one (up to `lastId`). */
    this.coveredFrom = 0;
    /** The newest events, oldest first: what a late tab is sent. */
    this.recent = [];
    /** The last viewers count, so a tab that joins shows it at once. */
    this.viewers = null;
    this.state = { kind: "state", state: "connecting", note: "", at: Date.now() };
    /** Why the stream stopped for good, when the fault panel knows. */
    this.stopReason = "";
    this.retryTimer = null;
  }

  /** A message from a tab. */
  receive(msg) {
    if (msg.kind === "hello") this.hello(msg);
    else if (msg.kind === "restart") this.restart();
    else if (msg.kind === "stop-reason") this.stopReason = msg.text;
  }

  /**
   * A tab has its snapshot up to `since` and wants the rest. The first hello
   * opens the stream from there; later ones are answered from `recent`, and in
   * the same turn of the event loop the tab starts getting live events, so
   * nothing falls between the two.
   */
  hello({ tab, n, since }) {
    since = Number(since);
    if (!this.source) this.open(since);
    if (since < this.coveredFrom) {
      // Older than what we kept (or than where this stream started): only a
      // fresh snapshot can fill that hole.
      this.send({ kind: "gap", to: tab, n });
      return;
    }
    this.send({
      kind: "sync",
      to: tab,
      n,
      events: this.recent.filter((e) => e.id > since),
      viewers: this.viewers,
      state: this.state,
      token: this.token,
    });
  }

  url(since) {
    const q = new URLSearchParams({ since, viewers: "1" });
    if (this.classroom) q.set("client", this.token);
    return `${this.events}?${q}`;
  }

  /** Opens the EventSource after `since`. EventSource itself then reconnects with Last-Event-ID. */
  open(since) {
    clearTimeout(this.retryTimer);
    if (this.source) this.source.close();
    if (since !== this.lastId) {
      this.recent = [];
      this.coveredFrom = since;
      this.lastId = since;
    }
    const es = new EventSource(this.url(since));
    this.source = es;
    this.setState("connecting");
    es.addEventListener("open", () => {
      this.stopReason = "";
      this.setState("live");
    });
    es.addEventListener("error", () => {
      if (es !== this.source) return;
      if (es.readyState !== EventSource.CLOSED) {
        // EventSource reconnects by itself after `retry:`, sending Last-Event-ID.
        this.setState("reconnecting");
      } else if (this.stopReason) {
        // The fault panel made the server say "stop": show what EventSource does.
        this.setState("offline", this.stopReason);
      } else {
        // EventSource gave up by itself (a non-200 answer, e.g. from a server
        // that was stopping): open it again from our last id a little later,
        // jittered so a restarted server is not hit by every browser at once.
        this.setState(
          "offline",
          "The server refused the stream, so the browser stopped reconnecting; trying again shortly.",
        );
        this.retryTimer = setTimeout(() => this.restart(), RETRY_MS + Math.random() * RETRY_MS);
      }
    });
    // Every event of the board's log: the moderator's too (`remove`, `locked`).
    for (const type of ["like", "comment", "remove", "locked"]) {
      es.addEventListener(type, (ev) => this.record(type, ev));
    }
    es.addEventListener("viewers", (ev) => {
      // No id: the count is the server's presence, not part of its log.
      this.viewers = JSON.parse(ev.data).count;
      this.send({ kind: "viewers", count: this.viewers });
    });
    es.addEventListener("reset", (ev) => {
      // The history after our id is gone (or never was, e.g. the server lost an
      // in-memory board). The stream carries on from the server's newest id;
      // every tab refetches the board and says hello again from its snapshot.
      const id = Number(JSON.parse(ev.data).last_event_id);
      this.recent = [];
      this.coveredFrom = id;
      this.lastId = id;
      this.send({ kind: "reset" });
    });
  }

  /** Keeps an event for late tabs and hands it to every tab now. */
  record(type, ev) {
    const e = { kind: "event", type, id: Number(ev.lastEventId), data: ev.data };
    if (e.id <= this.lastId) return; // already seen (cannot happen on one stream; cheap to check)
    this.lastId = e.id;
    this.recent.push(e);
    if (this.recent.length > RECENT_MAX) this.coveredFrom = this.recent.shift().id;
    this.send(e);
  }

  /** Hands `msg` to one tab (`msg.to`) or to all, signed with this stream's id. */
  send(msg) {
    this.deliver({ ...msg, from: this.id });
  }

  /** The Reconnect button, or a retry after EventSource gave up: a new EventSource from our last id. */
  restart() {
    this.open(this.lastId);
  }

  setState(state, note = "") {
    this.state = { kind: "state", state, note, at: Date.now() };
    this.send(this.state);
  }
}

// ---- run as a SharedWorker ----------------------------------------------------
// Every tab of this browser that asks for a worker of this script AND this name
// gets a port to this one global scope. A port has no "closed" event, so a tab
// says `bye` as it goes; posting to a port whose tab has gone does nothing.

if (typeof SharedWorkerGlobalScope !== "undefined" && self instanceof SharedWorkerGlobalScope) {
  /** tab id -> its port */
  const ports = new Map();
  let stream = null;
  const deliver = (msg) => {
    if (msg.to !== undefined) ports.get(msg.to)?.postMessage(msg);
    else for (const port of ports.values()) port.postMessage(msg);
  };
  self.addEventListener("connect", (ev) => {
    const port = ev.ports[0];
    port.addEventListener("message", ({ data }) => {
      if (data.kind === "bye") {
        ports.delete(data.tab);
        return;
      }
      if (data.kind === "hello") {
        ports.set(data.tab, port);
        // The first tab's page says where the stream is; the worker's name
        // (which includes that URL) guarantees every other tab agrees.
        stream ??= new SharedStream({ ...data.config, deliver });
      }
      stream?.receive(data);
    });
    port.start();
  });
}
