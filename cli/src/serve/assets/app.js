// crewq serve's dashboard: polls /api/stats every 2 s and drives the JSON
// API (api.rs). Plain JS, no build step; everything comes from the binary.
"use strict";

const REFRESH_MS = 2000;
let previous = null; // the last stats and when they were read, for rates
let dlqTotal = null; // dead letters when the list was last drawn

const $ = (selector) => document.querySelector(selector);

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (className) td.className = className;
  return td;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.appendChild(c);
  return tr;
}

function duration(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return `${ms}ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${Math.floor(s % 60)}s`;
  return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
}

function say(text, bad) {
  const message = $("#message");
  message.textContent = text;
  message.className = bad ? "message bad" : "message";
}

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function post(path, body) {
  return api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

// Entries delivered to the groups so far: appended minus lag.
function delivered(agent) {
  const lag = agent.summary.lag;
  return lag === null ? null : agent.tasks.entries_added - lag;
}

function rate(now, before, seconds) {
  if (now === null || before === null || seconds <= 0) return null;
  return ((now - before) / seconds).toFixed(1);
}

// The rate limit's cell: running permits and starts in the window against
// their limits, and a "paused" badge while a handler's slow-down holds the
// agent type. "–" for an agent type without one.
function rateCell(rate) {
  const td = cell(null, "rate");
  if (!rate) return td;
  const of = (n, limit) => (limit === null || limit === undefined ? `${n}` : `${n}/${limit}`);
  const use = document.createElement("span");
  use.className = "use";
  use.textContent = `${of(rate.running, rate.running_limit)} running, ${of(rate.starts_in_window, rate.starts_limit)} starts`;
  td.replaceChildren(use);
  td.title = `rate limit: ${rate.limit}` + (rate.window_ms ? ` (starts in the last ${duration(rate.window_ms)})` : "");
  if (rate.paused_ms !== null && rate.paused_ms !== undefined) {
    const badge = document.createElement("span");
    badge.className = "badge paused";
    badge.textContent = `paused ${duration(rate.paused_ms)}`;
    td.append(" ", badge);
  }
  return td;
}

function showStats(agents, readAt) {
  const queues = $("#queues tbody");
  const consumers = $("#consumers tbody");
  queues.replaceChildren();
  consumers.replaceChildren();
  const before = previous && new Map(previous.agents.map((a) => [a.agent_type, a]));
  const seconds = previous ? (readAt - previous.readAt) / 1000 : 0;
  for (const agent of agents) {
    const s = agent.summary;
    const old = before && before.get(agent.agent_type);
    const tr = row([
      cell(agent.agent_type),
      cell(agent.tasks.length, "num"),
      cell(s.lag === null ? "?" : s.lag, "num"),
      cell(s.pending, "num"),
      cell(s.consumers, "num"),
      cell(s.pending > 0 ? duration(s.oldest_pending_idle_ms) : "–", "num"),
      cell(agent.dlq_length, "num"),
      cell(agent.delayed_length, "num"),
      cell(old ? rate(agent.tasks.entries_added, old.tasks.entries_added, seconds) : null, "num"),
      cell(old ? rate(delivered(agent), delivered(old), seconds) : null, "num"),
      rateCell(agent.rate),
    ]);
    tr.dataset.agent = agent.agent_type;
    // Named cells, for scripts and tests that read the page.
    const names = ["agent", "length", "lag", "pending", "consumers", "oldest", "dlq", "delayed", "appended-rate", "delivered-rate", "rate-limit"];
    tr.querySelectorAll("td").forEach((td, i) => { td.dataset.field = names[i]; });
    queues.appendChild(tr);
    for (const group of agent.groups) {
      for (const consumer of group.consumers) {
        consumers.appendChild(row([
          cell(agent.agent_type), cell(group.name), cell(consumer.name),
          cell(consumer.pending, "num"), cell(duration(consumer.idle_ms), "num"),
        ]));
      }
    }
  }
  previous = { agents, readAt };
}

async function refresh() {
  const status = $("#status");
  try {
    const agents = await api("/api/stats");
    showStats(agents, Date.now());
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    status.className = "status";
    // The dead-letter list follows when its streams change length.
    const total = agents.reduce((sum, a) => sum + a.dlq_length, 0);
    if (dlqTotal !== null && total !== dlqTotal) listDeadLetters().catch((err) => say(err.message, true));
    dlqTotal = total;
    const select = $("#dlq-agent");
    if (select.options.length === 1) {
      for (const agent of agents) select.add(new Option(agent.agent_type, agent.agent_type));
    }
  } catch (err) {
    status.textContent = `cannot read the crew: ${err.message}`;
    status.className = "status bad";
  }
}

async function listDeadLetters() {
  const params = new URLSearchParams();
  for (const [key, id] of [["agent", "#dlq-agent"], ["reason", "#dlq-reason"], ["trace", "#dlq-trace"]]) {
    const value = $(id).value.trim();
    if (value) params.set(key, value);
  }
  const letters = await api(`/api/dlq?${params}`);
  const body = $("#dlq tbody");
  body.replaceChildren();
  for (const letter of letters) {
    const actions = document.createElement("td");
    for (const [label, action] of [["Inspect", inspect], ["Replay", replay], ["Purge", purge]]) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = label;
      button.dataset.action = label.toLowerCase();
      if (label === "Purge") button.className = "danger";
      button.addEventListener("click", () => action(letter).catch((err) => say(err.message, true)));
      actions.appendChild(button);
    }
    const tr = row([
      cell(letter.agent_type), cell(letter.entry_id), cell(letter.task_id), cell(letter.reason),
      cell(letter.error, "error"), cell(letter.retries, "num"), actions,
    ]);
    tr.dataset.entry = letter.entry_id;
    body.appendChild(tr);
  }
  if (letters.length === 0) body.appendChild(row([cell("no dead letters")]));
}

async function inspect(letter) {
  const full = await api(`/api/dlq/${encodeURIComponent(letter.agent_type)}/${encodeURIComponent(letter.entry_id)}`);
  const detail = $("#dlq-detail");
  detail.textContent = JSON.stringify(full, null, 2);
  detail.hidden = false;
}

async function replay(letter) {
  const done = await post("/api/dlq/replay", { agent: letter.agent_type, id: letter.entry_id });
  say(`replayed ${done.entry_id} as task entry ${done.new_entry_id} (task ${done.task_id})`);
  $("#dlq-detail").hidden = true;
  await Promise.all([listDeadLetters(), refresh()]);
}

async function purge(letter) {
  if (!window.confirm(`Delete dead letter ${letter.entry_id} of ${letter.agent_type} for good?`)) return;
  await post("/api/dlq/purge", { agent: letter.agent_type, id: letter.entry_id });
  say(`purged ${letter.entry_id}`);
  $("#dlq-detail").hidden = true;
  await Promise.all([listDeadLetters(), refresh()]);
}

function placeDetails(place) {
  switch (place.state) {
    case "waiting": return `${place.entry_id} in ${place.stream}`;
    case "pending": return `${place.entry_id} with ${place.consumer}, delivered ${place.deliveries}x, idle ${duration(place.idle_ms)}`;
    case "acknowledged": return `${place.entry_id}`;
    case "completed": return `${place.status} in ${place.duration_ms}ms: ${place.error || JSON.stringify(place.output)}`;
    case "dead_lettered": return `${place.entry_id} (${place.reason || "no reason"}, ${place.retries} retries): ${place.error}`;
    default: return JSON.stringify(place);
  }
}

async function findTask(event) {
  event.preventDefault();
  const params = new URLSearchParams({ id: $("#task-id").value.trim() });
  if ($("#task-trace").checked) params.set("trace", "true");
  const found = await api(`/api/task?${params}`);
  const body = $("#task tbody");
  body.replaceChildren();
  for (const sighting of found) {
    body.appendChild(row([
      cell(sighting.task_id), cell(sighting.agent_type), cell(sighting.place.state),
      cell(placeDetails(sighting.place), "error"),
    ]));
  }
  if (found.length === 0) body.appendChild(row([cell("not found")]));
}

$("#dlq-filter").addEventListener("submit", (event) => {
  event.preventDefault();
  listDeadLetters().catch((err) => say(err.message, true));
});
$("#task-form").addEventListener("submit", (event) => findTask(event).catch((err) => say(err.message, true)));

refresh();
listDeadLetters().catch((err) => say(err.message, true));
setInterval(refresh, REFRESH_MS);
