// The console page. Everything shown comes from the JSON API and is written as text (never as
// markup), so a key or an error that looks like HTML stays what it is.
"use strict";

const state = {
  session: null,
  page: 1,
  selection: new Map(), // "partition:offset" -> the entry as listed, for the confirmation
  pending: null, // the action awaiting confirmation
  overviewTimer: null,
  overviewLoading: false,
};

const $ = (id) => document.getElementById(id);

function el(tag, props, children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const child of children || []) node.append(child);
  return node;
}

function showError(message) {
  const box = $("page-error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function api(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    throw new Error("the console did not answer (" + e.message + ")");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = null;
  }
  if (!response.ok) {
    throw new Error((body && body.error) || ("HTTP " + response.status));
  }
  return body;
}

// ---- navigation ----

function route() {
  const view = location.hash === "#dead-letters" ? "dead-letters" : "overview";
  for (const name of ["overview", "dead-letters"]) {
    $(name).hidden = name !== view;
    $("nav-" + name).classList.toggle("active", name === view);
  }
  showError("");
  clearInterval(state.overviewTimer);
  if (view === "overview") {
    loadOverview();
    state.overviewTimer = setInterval(loadOverview, 5000);
  } else {
    loadDeadLetters();
  }
}

// ---- overview ----

function rate(value) {
  if (value === null || value === undefined) return "–";
  return (value >= 10 ? value.toFixed(0) : value.toFixed(2)) + "/s";
}

async function loadOverview() {
  // A broker that does not answer makes a request last seconds: never pile them up.
  if (state.overviewLoading) return;
  state.overviewLoading = true;
  let o;
  try {
    o = await api("api/overview");
  } catch (e) {
    showError("Overview: " + e.message);
    return;
  } finally {
    state.overviewLoading = false;
  }
  showError("");
  const running = o.consumer === "running";
  $("consumer-state").textContent = o.consumer;
  $("consumer-state").className = "value " + (running ? "good" : "bad");
  const reachable = o.redis === "reachable";
  $("redis-state").textContent = o.redis;
  $("redis-state").className = "value " + (reachable ? "good" : "bad");
  for (const [id, key] of [["applied", "applied"], ["retried", "retried"], ["dead-lettered", "dead_lettered"]]) {
    $("rate-" + id).textContent = rate(o.rates[key]);
    $("total-" + id).textContent = o.totals[key] + " since start";
  }
  const kafkaError = $("kafka-error");
  kafkaError.textContent = o.kafka_error || "";
  kafkaError.hidden = !o.kafka_error;

  const body = $("lag-table").tBodies[0];
  body.replaceChildren();
  for (const t of o.topics || []) {
    for (const p of t.partitions) {
      body.append(el("tr", {}, [
        el("td", { class: "mono", text: t.topic }),
        el("td", { class: "mono", text: t.group }),
        el("td", { class: "num", text: String(p.partition) }),
        el("td", { class: "num", text: String(p.end) }),
        el("td", { class: "num", text: p.committed === null ? "–" : String(p.committed) }),
        el("td", { class: "num" + (p.lag > 0 ? " lagging" : ""), text: String(p.lag) }),
      ]));
    }
  }
  if (!(o.topics || []).length) {
    body.append(el("tr", { class: "empty" }, [el("td", { colspan: "6", text: o.kafka_error ? "No data: Kafka did not answer." : "No topics." })]));
  }

  $("group-state").textContent = o.group + (o.group_state ? " · " + o.group_state : "");
  const members = $("members").tBodies[0];
  members.replaceChildren();
  for (const m of o.members || []) {
    members.append(el("tr", {}, [
      el("td", { class: "mono", text: m.client_id || "–" }),
      el("td", { class: "mono", text: m.host || "–" }),
      el("td", { class: "mono small", text: m.member_id }),
    ]));
  }
  if (!(o.members || []).length) {
    const text = o.members_error || (o.kafka_error ? "No data: Kafka did not answer." : "No members.");
    members.append(el("tr", { class: "empty" }, [el("td", { colspan: "3", text })]));
  }
  const interval = o.rates.interval_secs ? " · rates over the last " + Math.round(o.rates.interval_secs) + " s" : "";
  $("overview-updated").textContent = "Updated " + new Date().toLocaleTimeString() + interval;
}

// ---- dead letters ----

function filterQuery() {
  const q = new URLSearchParams();
  for (const name of ["reason", "source", "key", "command"]) {
    const v = $("filter-" + name).value.trim();
    if (v) q.set(name, v);
  }
  const age = $("filter-age").value.trim();
  if (age) q.set("age", $("filter-age-op").value + age);
  q.set("page", String(state.page));
  return q;
}

function actionsAllowed() {
  return state.session && state.session.actions_enabled;
}

function updateButtons() {
  const n = state.selection.size;
  const allowed = actionsAllowed() && n > 0;
  $("replay-selected").disabled = !allowed;
  $("purge-selected").disabled = !allowed;
  $("replay-selected").textContent = "Replay selected" + (n ? " (" + n + ")" : "");
  $("purge-selected").textContent = "Purge selected" + (n ? " (" + n + ")" : "");
}

async function loadDeadLetters() {
  const body = $("dlq-table").tBodies[0];
  let r;
  $("dlq-summary").textContent = "Loading…";
  try {
    r = await api("api/dead-letters?" + filterQuery().toString());
  } catch (e) {
    $("dlq-summary").textContent = "";
    body.replaceChildren(el("tr", { class: "empty" }, [el("td", { colspan: "9", text: "Could not load the dead letters." })]));
    showError("Dead letters: " + e.message);
    return;
  }
  showError("");
  state.page = r.page;
  body.replaceChildren();
  for (const e of r.entries) {
    const box = el("input", { type: "checkbox", class: "select-entry", "data-at": e.at, title: "Select " + e.at });
    box.checked = state.selection.has(e.at);
    box.disabled = !actionsAllowed();
    box.addEventListener("change", () => {
      if (box.checked) state.selection.set(e.at, e);
      else state.selection.delete(e.at);
      row.classList.toggle("selected", box.checked);
      updateButtons();
    });
    const link = el("a", { href: "#dead-letters", class: "position", text: e.at });
    link.addEventListener("click", (ev) => {
      ev.preventDefault();
      showDetail(e.at);
    });
    const row = el("tr", { "data-at": e.at, class: box.checked ? "selected" : "" }, [
      el("td", {}, [box]),
      el("td", {}, [link]),
      el("td", { text: e.age || "–" }),
      el("td", {}, [el("span", { class: "reason " + e.reason, text: e.reason })]),
      el("td", { class: "mono", text: e.source }),
      el("td", { class: "mono", text: e.command }),
      el("td", { class: "mono", text: e.key === null ? "–" : e.key }),
      el("td", { class: "num", text: String(e.attempts) }),
      el("td", { class: "error-text", text: e.error }),
    ]);
    body.append(row);
  }
  if (!r.entries.length) {
    body.append(el("tr", { class: "empty" }, [el("td", { colspan: "9", text: "No dead letters match." })]));
  }
  $("dlq-summary").textContent = r.scan_limit_reached
    ? r.matching + " matching among the first " + r.scanned + " dead letters (the console reads no further; `redis-retry dlq list` reads them all)"
    : r.matching + " matching of " + r.scanned + " dead letter(s)";
  $("page-info").textContent = "Page " + r.page + " of " + r.pages;
  $("prev-page").disabled = r.page <= 1;
  $("next-page").disabled = r.page >= r.pages;
  $("select-all").disabled = !actionsAllowed();
  $("select-all").checked = false;
  updateButtons();
}

async function showDetail(at) {
  const panel = $("detail");
  let d;
  try {
    d = await api("api/dead-letters/entry?at=" + encodeURIComponent(at));
  } catch (e) {
    showError("Entry " + at + ": " + e.message);
    return;
  }
  $("detail-at").textContent = d.at;
  const fields = [
    ["Reason", d.reason], ["Last error", d.error], ["Source", d.source], ["Command", d.command],
    ["Key", d.key === null ? "–" : d.key], ["Attempts", String(d.attempts)], ["Age", d.age || "–"],
    ["Dead-lettered at", d.dead_lettered_at || "–"],
  ];
  if (d.task) {
    fields.push(["Task id", d.task.id], ["Kind", d.task.kind], ["Mode", d.task.mode],
      ["Captured at", d.task.captured_at], ["Retries", d.task.retry_count + " of " + d.task.max_retries],
      ["Trace id", d.task.trace_id || "–"]);
  } else {
    fields.push(["Payload", d.envelope ? "an envelope for a task too large for the topic (purge only)" : "not a task (cannot be replayed)"]);
  }
  const dl = $("detail-fields");
  dl.replaceChildren();
  for (const [k, v] of fields) dl.append(el("dt", { text: k }), el("dd", { text: v }));
  panel.hidden = false;
  panel.scrollIntoView({ block: "nearest" });
}

function askConfirmation(action) {
  const entries = [...state.selection.values()];
  state.pending = { action, at: entries.map((e) => e.at) };
  const n = entries.length;
  const where = action === "replay"
    ? "back to " + state.session.topic + " as fresh tasks; the consumer will apply them"
    : "for good (they cannot be recovered)";
  $("confirm-text").textContent = (action === "replay" ? "Replay " : "Purge ") + n + " dead letter(s) " + where + ":";
  const list = $("confirm-list");
  list.replaceChildren();
  for (const e of entries) {
    const stays = action === "replay" && !e.replayable ? "  — not a task: it stays a dead letter" : "";
    list.append(el("li", { class: "mono", text: e.at + "  " + e.command + "  (" + e.reason + ", " + e.source + ")" + stays }));
  }
  $("confirm").classList.toggle("danger", action === "purge");
  $("confirm-action").textContent = action === "replay" ? "Confirm replay" : "Confirm purge";
  $("confirm-action").className = action === "purge" ? "danger" : "";
  $("confirm").hidden = false;
}

async function runPending() {
  const pending = state.pending;
  if (!pending) return;
  $("confirm-action").disabled = true;
  const result = $("action-result");
  result.textContent = (pending.action === "replay" ? "Replaying" : "Purging") +
    "… every dead letter after the cursor is read and the kept ones written again, which takes a while for a large set.";
  result.className = "notice";
  result.hidden = false;
  try {
    const r = await api("api/dead-letters/" + pending.action, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        "Authorization": "Bearer " + $("token").value.trim(),
      },
      body: JSON.stringify({ at: pending.at, operator: $("operator").value.trim() }),
    });
    const done = (r.action === "replay" ? "Replayed " : "Purged ") + r.chosen + ".";
    const missing = r.missing.length
      ? " Not in the dead-letter set any more (acted on meanwhile), nothing done to them: " + r.missing.join(", ") + "."
      : "";
    result.textContent = done + missing + " The list was reloaded: kept entries have new positions.";
    result.className = "notice " + (r.missing.length ? "" : "success");
    state.selection.clear();
  } catch (e) {
    result.textContent = (pending.action === "replay" ? "Replay" : "Purge") + " refused: " + e.message;
    result.className = "notice error";
  }
  result.hidden = false;
  state.pending = null;
  $("confirm").hidden = true;
  $("confirm-action").disabled = false;
  $("detail").hidden = true;
  await loadDeadLetters();
}

// ---- start ----

async function start() {
  const token = $("token");
  token.value = sessionStorage.getItem("redis-retry-token") || "";
  token.addEventListener("input", () => sessionStorage.setItem("redis-retry-token", token.value));
  const operator = $("operator");
  operator.value = localStorage.getItem("redis-retry-operator") || "";
  operator.addEventListener("input", () => localStorage.setItem("redis-retry-operator", operator.value));
  $("auth-form").addEventListener("submit", (ev) => ev.preventDefault());

  $("filters").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.page = 1;
    loadDeadLetters();
  });
  $("clear-filters").addEventListener("click", () => {
    for (const name of ["reason", "source", "key", "command", "age"]) $("filter-" + name).value = "";
    state.page = 1;
    loadDeadLetters();
  });
  $("prev-page").addEventListener("click", () => { state.page -= 1; loadDeadLetters(); });
  $("next-page").addEventListener("click", () => { state.page += 1; loadDeadLetters(); });
  $("select-all").addEventListener("change", (ev) => {
    for (const box of document.querySelectorAll("input.select-entry")) {
      if (box.checked !== ev.target.checked) {
        box.checked = ev.target.checked;
        box.dispatchEvent(new Event("change"));
      }
    }
  });
  $("replay-selected").addEventListener("click", () => askConfirmation("replay"));
  $("purge-selected").addEventListener("click", () => askConfirmation("purge"));
  $("confirm-action").addEventListener("click", runPending);
  $("cancel-action").addEventListener("click", () => { state.pending = null; $("confirm").hidden = true; });
  $("close-detail").addEventListener("click", () => { $("detail").hidden = true; });
  window.addEventListener("hashchange", route);

  try {
    state.session = await api("api/session");
    $("pipeline").textContent = "topic " + state.session.topic + " · group " + state.session.group + " · v" + state.session.version;
    $("read-only").hidden = state.session.actions_enabled;
    $("token").disabled = !state.session.actions_enabled;
  } catch (e) {
    showError("The console could not start: " + e.message);
  }
  route();
}

document.addEventListener("DOMContentLoaded", start);
