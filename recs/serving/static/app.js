// The page at `/`: every string from the service goes into the DOM through textContent (titles
// come from shop data), never through innerHTML.
"use strict";

const $ = (id) => document.getElementById(id);
let generation = 0; // answers for a user the page has since left are dropped

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function price(value) {
  return value === null || value === undefined ? "—" : Number(value).toFixed(2);
}

async function call(method, path, body) {
  const init = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (!response.ok) {
    const error = new Error((data && data.error) || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

function setStatus(text, kind) {
  const status = $("status");
  status.textContent = text || "";
  status.className = kind || "";
}

function note(id, text, kind) {
  const node = $(id);
  node.textContent = text || "";
  node.className = "note " + (kind || "");
}

function renderHistory(answer) {
  const body = $("history").tBodies[0];
  body.replaceChildren();
  for (const event of answer.events) {
    const row = el("tr", "event-" + event.event);
    row.dataset.itemId = event.item_id;
    row.append(
      el("td", "when", event.timestamp.slice(0, 10) + "\n" + event.timestamp.slice(11, 16)), // UTC
      el("td", "kind", event.event),
      el("td", "title", event.title),
      el("td", "num price", price(event.price)),
    );
    body.append(row);
  }
  const shown = answer.events.length;
  note("history-note", shown < answer.total ? `${shown} of ${answer.total} events` : `${answer.total} events`);
}

function renderItems(listId, answer, userId) {
  const list = $(listId);
  list.replaceChildren();
  for (const item of answer.items) {
    const li = el("li", "item");
    li.dataset.itemId = item.item_id;
    const head = el("div", "head");
    head.append(el("span", "title", item.title), el("span", "price", price(item.price)));
    const meta = el("div", "meta");
    meta.append(
      el("span", "reason", item.reason),
      el("span", "source muted", item.source),
      el("span", "score muted", "score " + Number(item.score).toFixed(3)),
    );
    const buy = el("button", "buy", "bought");
    buy.type = "button";
    buy.title = "Record a purchase of this item by this user (POST /events)";
    buy.addEventListener("click", () => bought(userId, item));
    li.append(head, meta, buy);
    list.append(li);
  }
  const degraded = answer.degraded ? " (degraded: the ranker's order, the cross-encoder missed its budget)" : "";
  note(listId + "-note", answer.items.length ? degraded : "nothing to show for these filters");
}

function renderBundle(answer) {
  const box = $("bundle");
  box.replaceChildren();
  if (!answer.bundles.length) {
    note("bundle-note", answer.reason || "no bundle fits");
    return;
  }
  note("bundle-note", "");
  for (const bundle of answer.bundles) {
    const card = el("div", "bundle");
    const list = el("ul", "items");
    for (const item of bundle.items) {
      const li = el("li", "item " + item.role);
      li.dataset.itemId = item.item_id;
      const head = el("div", "head");
      head.append(el("span", "title", item.title), el("span", "price", price(item.price)));
      li.append(head, el("div", "meta reason", item.reason));
      list.append(li);
    }
    card.append(list, el("div", "total", "total " + price(bundle.total_price)));
    box.append(card);
  }
}

async function show(userId, done) {
  const mine = ++generation;
  const k = Number($("k").value);
  document.body.dataset.state = "loading";
  document.body.dataset.user = userId;
  setStatus(`loading ${userId}…`);
  const ask = { user_id: userId, k, unknown_user: "fallback" };
  const [past, recs, discover, bundle] = await Promise.allSettled([
    call("GET", `/users/${encodeURIComponent(userId)}/history?limit=20`),
    call("POST", "/recommend", ask),
    call("POST", "/recommend", { ...ask, novelty: true }),
    call("POST", "/bundle", { user_id: userId, n: 3, unknown_user: "fallback" }),
  ]);
  if (mine !== generation) return;
  let message = "";
  if (past.status === "fulfilled") {
    renderHistory(past.value);
  } else {
    $("history").tBodies[0].replaceChildren();
    if (past.reason.status === 404) {
      message = `Unknown user '${userId}': no events in this model. Showing what a new visitor sees (popular items).`;
      note("history-note", "no history");
    } else {
      note("history-note", past.reason.message, "error");
    }
  }
  for (const [id, result] of [["recs", recs], ["discover", discover]]) {
    if (result.status === "fulfilled") {
      renderItems(id, result.value, userId);
    } else {
      $(id).replaceChildren();
      note(id + "-note", result.reason.message, "error");
    }
  }
  if (bundle.status === "fulfilled") {
    renderBundle(bundle.value);
  } else {
    $("bundle").replaceChildren();
    note("bundle-note", bundle.reason.message, "error");
  }
  if (message) setStatus(message, "warning");
  else setStatus(done || "", done ? "ok" : "");
  document.body.dataset.state = "ready";
  window.history.replaceState(null, "", "#user=" + encodeURIComponent(userId));
}

async function bought(userId, item) {
  document.body.dataset.state = "loading";
  try {
    const answer = await call("POST", "/events", { events: [{ user_id: userId, item_id: item.item_id, event: "purchase" }] });
    if (answer.accepted < 1) {
      const why = answer.skipped && answer.skipped.length ? answer.skipped[0].reason : "skipped";
      throw new Error(why);
    }
  } catch (error) {
    const why = error.status === 404 || error.status === 405
      ? "this service does not record events (no POST /events)"
      : error.message;
    setStatus(`Could not record the purchase of '${item.title}': ${why}`, "error");
    document.body.dataset.state = "ready";
    return;
  }
  await show(userId, `Recorded: ${userId} bought '${item.title}'. History and lists are updated.`);
}

async function loadUsers() {
  const select = $("user-list");
  try {
    const answer = await call("GET", "/users?limit=200");
    select.replaceChildren(el("option", "", `(${answer.total} users)`));
    select.options[0].value = "";
    for (const user of answer.users) {
      const option = el("option", "", user);
      option.value = user;
      select.append(option);
    }
  } catch (error) {
    select.replaceChildren(el("option", "", "(no users: " + error.message + ")"));
    select.options[0].value = "";
  }
}

async function loadModel() {
  try {
    const ready = await call("GET", "/ready");
    $("model").textContent = `model ${ready.version || "?"} (${ready.backend})`;
  } catch (error) {
    $("model").textContent = "model: " + error.message;
  }
}

function start() {
  $("pick").addEventListener("submit", (event) => {
    event.preventDefault();
    const userId = $("user-id").value.trim();
    if (userId) show(userId);
    else setStatus("Type a user id or pick one from the list.", "warning");
  });
  $("user-list").addEventListener("change", () => {
    const userId = $("user-list").value;
    if (!userId) return;
    $("user-id").value = userId;
    show(userId);
  });
  loadModel();
  loadUsers();
  fromHash();
  window.addEventListener("hashchange", fromHash);
}

// `/#user=U0042` opens that user (a link to share, or the back button).
function fromHash() {
  const match = /^#user=(.+)$/.exec(window.location.hash);
  if (!match) return;
  const userId = decodeURIComponent(match[1]);
  if (userId === document.body.dataset.user && document.body.dataset.state === "ready") return;
  $("user-id").value = userId;
  show(userId);
}

document.addEventListener("DOMContentLoaded", start);
