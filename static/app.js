// likeboard's page: a snapshot from the API, then live events over SSE.
// All user text goes into the page through textContent, never as markup.

const list = document.getElementById("comments");
const statusBadge = document.getElementById("status");
const form = document.getElementById("add");
const formError = document.getElementById("form-error");

/** id -> comment ({id, nickname, content, score, created_at, liked}) */
const comments = new Map();

function setStatus(text, cls) {
  statusBadge.textContent = text;
  statusBadge.className = "badge " + cls;
}

function byRank(a, b) {
  return b.score - a.score || b.id - a.id;
}

function render() {
  const items = [...comments.values()].sort(byRank).map((c) => {
    const li = document.createElement("li");
    li.dataset.id = c.id;
    const like = document.createElement("button");
    like.className = "like";
    like.setAttribute("aria-pressed", String(c.liked));
    like.setAttribute("aria-label", (c.liked ? "Unlike" : "Like") + " comment by " + c.nickname);
    like.textContent = "\u2665 " + c.score;
    like.addEventListener("click", () => toggleLike(c.id));
    const nick = document.createElement("span");
    nick.className = "nickname";
    nick.textContent = c.nickname;
    const content = document.createElement("p");
    content.className = "content";
    content.textContent = c.content;
    li.append(like, nick, content);
    return li;
  });
  list.replaceChildren(...items);
}

async function api(method, url, body) {
  const res = await fetch(url, {
    method,
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.error || res.statusText);
  return data;
}

async function toggleLike(id) {
  const c = comments.get(id);
  if (!c) return;
  try {
    const r = await api(c.liked ? "DELETE" : "POST", `/api/comments/${id}/like`);
    c.liked = r.liked;
    c.score = r.score;
    render();
  } catch (e) {
    formError.textContent = e.message;
  }
}

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  formError.textContent = "";
  const data = Object.fromEntries(new FormData(form));
  try {
    await api("POST", "/api/comments", data);
    form.content.value = "";
  } catch (e) {
    formError.textContent = e.message;
  }
});

let source = null;

async function start() {
  const snap = await api("GET", "/api/comments?limit=500");
  comments.clear();
  for (const c of snap.comments) comments.set(c.id, c);
  render();
  if (source) source.close();
  // Resume from the snapshot's id: nothing between the snapshot and the stream is lost.
  source = new EventSource(`/events?since=${encodeURIComponent(snap.last_event_id)}`);
  source.addEventListener("open", () => setStatus("live", "live"));
  source.addEventListener("error", (ev) => {
    if (ev.target.readyState === EventSource.CLOSED) {
      // The browser gave up on this stream (it only retries by itself after a
      // network error): start over later from a fresh snapshot.
      setStatus("offline", "offline");
      retryLater();
    } else {
      setStatus("reconnecting", "reconnecting");
    }
  });
  source.addEventListener("like", (ev) => {
    const { id, score } = JSON.parse(ev.data);
    const c = comments.get(id);
    if (c) { c.score = score; render(); }
  });
  source.addEventListener("comment", (ev) => {
    const c = JSON.parse(ev.data);
    const known = comments.get(c.id);
    comments.set(c.id, { ...c, liked: known ? known.liked : false });
    render();
  });
  // The history we asked for is gone: start over from a fresh snapshot.
  source.addEventListener("reset", restart);
}

let retryTimer = null;

function restart() {
  clearTimeout(retryTimer);
  retryTimer = null;
  start().catch(() => {
    setStatus("offline", "offline");
    retryLater();
  });
}

/** Tries again in 3-6 s (jittered, so a restarted server is not hit all at once). */
function retryLater() {
  if (retryTimer === null) retryTimer = setTimeout(restart, 3000 + Math.random() * 3000);
}

restart();
