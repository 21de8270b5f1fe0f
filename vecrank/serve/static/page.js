// The vecrank search page: a search box and a user field call GET /recommendations; the results
// show their reasons and the response's arm, model and request id; a click on a result is posted
// to /events with that request id and position. Every call goes through api(), the one place that
// adds the Authorization header when a key is set (settings(): `vecrank serve --page-key` puts one
// in the vecrank-api-key meta tag). Items are rendered as text nodes only, never as HTML.
"use strict";

const K = 10;
const MAX_FIELDS = 6;
const MAX_VALUE = 80;
// Item fields not shown under a result: the title itself and what vecrank keeps for itself.
const HIDDEN = new Set(["title", "name", "item_id", "text", "embedding", "content_hash", "signals", "indexed_at",
                        "cf_vector"]);

let latest = 0;  // the newest search; answers to older ones are dropped

function pageSetting(name) {
  const meta = document.querySelector(`meta[name="vecrank-${name}"]`);
  return meta ? meta.content.trim() : "";
}

function settings() {
  let stored = "";
  try {
    stored = window.localStorage.getItem("vecrank.apiKey") || "";
  } catch (err) {  // storage disabled: the page setting alone
    stored = "";
  }
  return {apiKey: stored.trim() || pageSetting("api-key"), authScheme: pageSetting("auth-scheme") || "Bearer"};
}

class ApiError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

// All calls to the API. params: [name, value] pairs for the query string; body: JSON.
async function api(path, {method = "GET", params = [], body} = {}) {
  const url = new URL(path, document.baseURI);
  for (const [name, value] of params) url.searchParams.append(name, value);
  const headers = {"Accept": "application/json"};
  const {apiKey, authScheme} = settings();
  if (apiKey) headers["Authorization"] = `${authScheme} ${apiKey}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(url, {method, headers, credentials: "same-origin",
                             body: body === undefined ? undefined : JSON.stringify(body)});
  } catch (err) {
    throw new ApiError(0, "the service cannot be reached", null);
  }
  let data = null;
  try {
    data = await resp.json();
  } catch (err) {
    data = null;
  }
  if (!resp.ok) {
    const message = data && data.error && data.error.message ? data.error.message : `HTTP ${resp.status}`;
    throw new ApiError(resp.status, message, resp.headers.get("Retry-After"));
  }
  return data;
}

// What to tell the reader when the API refuses the page's key (or its lack of one).
function keyHint(err) {
  if (err.status === 401) return " (this page needs an API key: vecrank serve --page-key)";
  if (err.status === 403) return " (the page's API key lacks the scope)";
  return "";
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);  // strings become text nodes
  }
  return node;
}

function shorten(text) {
  return text.length > MAX_VALUE ? `${text.slice(0, MAX_VALUE - 1)}…` : text;
}

function scalar(value) {
  return ["string", "number", "boolean"].includes(typeof value);
}

function titleOf(item) {
  const fields = item.fields || {};
  for (const name of ["title", "name"]) {
    const value = Array.isArray(fields[name]) ? fields[name][0] : fields[name];
    if (scalar(value) && String(value).trim()) return String(value);
  }
  return item.item_id;
}

function fieldLine(fields) {
  const parts = [];
  for (const [name, value] of Object.entries(fields || {})) {
    if (HIDDEN.has(name) || name.startsWith("_") || parts.length >= MAX_FIELDS) continue;
    if (scalar(value)) parts.push(`${name}: ${shorten(String(value))}`);
    else if (Array.isArray(value) && value.length && value.every(scalar)) {
      parts.push(`${name}: ${shorten(value.join(", "))}`);
    }
  }
  return parts.join(" · ");
}

function setStatus(text, isError = false) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
  status.setAttribute("role", isError ? "alert" : "status");
}

function showMeta(body) {
  document.getElementById("meta-arm").textContent = body.arm === null ? "none" : body.arm;
  document.getElementById("meta-model").textContent = body.model_version;
  document.getElementById("meta-ranked").textContent = body.ranked_by === null ? "retrieval order" : body.ranked_by;
  document.getElementById("meta-path").textContent = body.path;
  document.getElementById("meta-request").textContent = body.request_id;
  document.getElementById("meta").hidden = false;
}

function resultItem(item, requestId, user) {
  const li = el("li", {"class": "result", "data-item-id": item.item_id, "data-position": String(item.position)});
  const details = fieldLine(item.fields);
  const button = el("button", {"type": "button", "class": "pick", "aria-pressed": "false"},
                    el("span", {"class": "title"}, titleOf(item)),
                    details ? el("span", {"class": "fields"}, details) : null);
  li.append(button);
  if (item.reasons && item.reasons.length) {
    li.append(el("ul", {"class": "reasons"},
                 ...item.reasons.map((r) => el("li", {"class": "reason", "data-code": r.code}, r.text))));
  }
  if (typeof item.score === "number") li.append(el("span", {"class": "score"}, `score ${item.score.toFixed(3)}`));
  li.append(el("span", {"class": "note", "aria-live": "polite"}));
  button.addEventListener("click", () => recordClick(li, button, item, requestId, user));
  return li;
}

async function recordClick(li, button, item, requestId, user) {
  const note = li.querySelector(".note");
  if (li.classList.contains("clicked") || li.classList.contains("sending")) return;
  if (!user) {
    note.textContent = "pick a user to record clicks";
    return;
  }
  li.classList.add("sending");
  try {
    await api("events", {method: "POST", body: {events: [
      {user, item: item.item_id, type: "click", request_id: requestId, position: item.position}]}});
    li.classList.add("clicked");
    button.setAttribute("aria-pressed", "true");
    note.textContent = "clicked";
  } catch (err) {
    note.textContent = `click not recorded: ${err.message}${keyHint(err)}`;
  } finally {
    li.classList.remove("sending");
  }
}

function render(body, user) {
  const results = document.getElementById("results");
  results.replaceChildren(...body.items.map((item) => resultItem(item, body.request_id, user)));
  showMeta(body);
  setStatus(body.items.length ? `${body.items.length} results` : "No results.");
}

async function search(event) {
  if (event) event.preventDefault();
  const user = document.getElementById("user").value.trim();
  const query = document.getElementById("query").value.trim();
  const params = [["k", String(K)], ["reasons", "true"]];
  if (user) params.push(["user", user]);
  if (query) params.push(["query", query]);
  const shown = new URLSearchParams();
  if (user) shown.set("user", user);
  if (query) shown.set("q", query);
  window.history.replaceState(null, "", shown.toString() ? `?${shown}` : window.location.pathname);
  const mine = ++latest;
  const results = document.getElementById("results");
  results.setAttribute("aria-busy", "true");
  setStatus("Searching…");
  try {
    const body = await api("recommendations", {params});
    if (mine === latest) render(body, user || null);
  } catch (err) {
    if (mine === latest) {
      const retry = err.retryAfter ? ` (retry in ${err.retryAfter} s)` : "";
      setStatus(`Search failed: ${err.message}${keyHint(err)}${retry}`, true);
    }
  } finally {
    if (mine === latest) results.removeAttribute("aria-busy");
  }
}

function start() {
  const form = document.getElementById("search");
  form.addEventListener("submit", search);
  const given = new URLSearchParams(window.location.search);
  document.getElementById("user").value = given.get("user") || "";
  document.getElementById("query").value = given.get("q") || "";
  if (given.has("user") || given.has("q")) search();
}

document.addEventListener("DOMContentLoaded", start);
