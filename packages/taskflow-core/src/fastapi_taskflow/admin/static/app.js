// The dashboard: wires filters, the task table, the detail panel, the charts and the
// live event stream together. No framework, no build step.

import { api, follow } from "./api.js";
import { drawDurations, drawThroughput } from "./charts.js";
import { DetailPanel } from "./detail.js";
import { $, fill, h, setText } from "./dom.js";
import { count } from "./format.js";
import { TaskTable, TERMINAL } from "./table.js";
import { initTheme } from "./theme.js";

const STATUSES = ["pending", "running", "success", "failed", "interrupted", "cancelled", "rejected"];
const PAGE_SIZE = 50;

const table = new TaskTable($("#task-rows"));
const detail = new DetailPanel($("#detail"));
const form = $("#filters");
const fields = {
  q: $("#f-q"), status: $("#f-status"), func: $("#f-func"),
  queue: $("#f-queue"), tag: $("#f-tag"), range: $("#f-range"),
};

let nextCursor = null;
let listToken = 0;
let stats = null;
const counts = Object.fromEntries(STATUSES.map((s) => [s, 0]));
const lastStatus = new Map(); // task id -> status last seen (for live counts)

// ---- filters <-> URL -------------------------------------------------------------------

function filters() {
  return Object.fromEntries(Object.entries(fields).map(([k, el]) => [k, el.value.trim()]));
}

function restoreFilters() {
  const params = new URLSearchParams(location.search);
  for (const [name, el] of Object.entries(fields)) {
    const value = params.get(name);
    if (value === null) continue;
    if (el.tagName === "SELECT" && ![...el.options].some((o) => o.value === value)) {
      el.append(h("option", { value }, value));
    }
    el.value = value;
  }
}

function saveFilters() {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(filters())) if (v) params.set(k, v);
  const search = params.toString();
  history.replaceState(null, "", `${location.pathname}${search ? "?" + search : ""}${location.hash}`);
}

function apiFilter(f = filters()) {
  const out = {};
  if (f.status) out.status = f.status;
  if (f.func) out.func = f.func;
  if (f.queue) out.queue = f.queue;
  if (f.tag) out.tag = f.tag;
  if (f.q) out.q = f.q;
  if (f.range) out.created_after = new Date(Date.now() - Number(f.range) * 1000).toISOString();
  return out;
}

/** Would a task with these fields be in the list the filters ask for? */
function matches(task, f = filters()) {
  if (f.status && task.status !== f.status) return false;
  if (f.func && task.func_name !== f.func) return false;
  if (f.queue && (task.queue || "default") !== f.queue) return false;
  if (f.tag) {
    const [k, ...rest] = f.tag.split(":");
    const v = rest.join(":");
    if (!task.tags || !(k in task.tags) || (rest.length && task.tags[k] !== v)) return false;
  }
  if (f.q) {
    // As the server searches: a part of one field, only A-Z folded to a-z.
    const needle = foldAscii(f.q);
    const fields = [task.task_id, task.func_name, task.error || "", ...Object.entries(task.tags || {}).flat()];
    if (!fields.some((field) => foldAscii(field).includes(needle))) return false;
  }
  return true;
}

function foldAscii(text) {
  return text.replace(/[A-Z]/g, (c) => c.toLowerCase());
}

// ---- the list --------------------------------------------------------------------------

async function loadList({ more = false } = {}) {
  const token = ++listToken;
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(apiFilter())) params.set(k, v);
  params.set("limit", String(PAGE_SIZE));
  if (more && nextCursor) params.set("cursor", nextCursor);
  const moreButton = $("#more");
  moreButton.disabled = true;
  try {
    const page = await api.listTasks(params);
    if (token !== listToken) return; // a newer request replaced this one
    if (!more) table.clear();
    table.append(page.items);
    for (const t of page.items) {
      // An event that arrived while this page was on its way is newer than the page.
      const newer = recent.get(t.task_id);
      if (newer) table.update(t.task_id, newer);
      lastStatus.set(t.task_id, table.get(t.task_id)?.status ?? t.status);
    }
    nextCursor = page.next_cursor;
    if (detail.openId) table.select(detail.openId);
    markOnce("taskflow:first-rows"); // for benchmarks/dashboard_page.py
  } catch (err) {
    if (token === listToken) toast(`Could not load tasks: ${err.message}`, true);
  } finally {
    if (token === listToken) {
      moreButton.disabled = false;
      moreButton.hidden = !nextCursor;
      refreshFooter();
    }
  }
}

function refreshFooter() {
  $("#empty").hidden = table.size > 0;
  setText($("#shown"), table.size ? `${count(table.size)} shown${nextCursor ? "" : " · end of list"}` : "");
}

// ---- stats: counts, selects, charts ----------------------------------------------------

let statsTimer = null;
let statsInFlight = false;
let lastStatsAt = 0;
let statsGap = 2000; // ms between refreshes while events arrive: 5x what the last one took

function scheduleStats(delay = 1500) {
  if (statsTimer) return;
  const wait = Math.max(delay, statsGap - (Date.now() - lastStatsAt));
  statsTimer = setTimeout(async () => {
    statsTimer = null;
    await loadStats();
  }, wait);
}

async function loadStats() {
  if (statsInFlight) return scheduleStats();
  statsInFlight = true;
  lastStatsAt = Date.now();
  try {
    const previous = stats;
    stats = await api.stats();
    // A big store makes stats slower: ask less often, so busy dashboards stay cheap.
    statsGap = Math.min(30000, Math.max(2000, 5 * (Date.now() - lastStatsAt)));
    for (const s of STATUSES) counts[s] = stats.by_status?.[s] || 0;
    watchWaiting(previous, stats);
    renderCounts();
    renderQueues(stats.queues || {});
    syncOptions(fields.func, Object.keys(stats.by_func || {}));
    syncOptions(fields.queue, Object.keys(stats.queues || {}));
    drawCharts();
    markOnce("taskflow:charts");
  } catch (err) {
    toast(`Could not load stats: ${err.message}`, true);
  } finally {
    statsInFlight = false;
  }
}

// Tasks waiting on a queue send no event until they start, so while any wait the
// counts are polled, and when more are waiting than before, the first page is merged in.
function watchWaiting(before, now) {
  const waiting = (st) => (st?.by_status?.pending || 0) +
    Object.values(st?.queues || {}).reduce((a, b) => a + b, 0);
  if (waiting(now) > 0) scheduleStats(Math.max(statsGap, 4000));
  if (before && waiting(now) > waiting(before)) mergeFirstPage();
}

async function mergeFirstPage() {
  const token = listToken;
  const params = new URLSearchParams(apiFilter());
  params.set("limit", String(PAGE_SIZE));
  try {
    const page = await api.listTasks(params);
    if (token !== listToken) return; // the list was reloaded meanwhile
    for (const task of page.items) {
      if (table.has(task.task_id)) {
        table.update(task.task_id, task);
      } else if (table.insertSorted(task)) {
        const newer = recent.get(task.task_id);
        if (newer) table.update(task.task_id, newer);
      }
      lastStatus.set(task.task_id, table.get(task.task_id)?.status ?? task.status);
    }
    refreshFooter();
  } catch {
    // the next refresh tries again
  }
}

function drawCharts() {
  if (!stats) return;
  drawThroughput($("#throughput"), stats.throughput || [], stats.bucket_seconds);
  drawDurations($("#durations"), stats.durations || {});
}

function renderCounts() {
  const box = $("#counts");
  const total = STATUSES.reduce((sum, s) => sum + counts[s], 0);
  const active = fields.status.value;
  if (!box.childElementCount) {
    box.append(card("", "total"), ...STATUSES.map((s) => card(s, s)));
  }
  for (const el of box.children) {
    const status = el.dataset.status;
    setText(el.querySelector(".count-n"), count(status ? counts[status] : total));
    el.setAttribute("aria-pressed", String(status === active));
  }
}

function card(status, label) {
  return h("button", { type: "button", class: "count-card", dataset: { status }, "aria-pressed": "false",
    title: status ? `Show ${status} tasks` : "Show every status" },
  h("span", { class: "count-n" }, "0"), h("span", { class: "count-label" }, label));
}

function renderQueues(queues) {
  const entries = Object.entries(queues);
  fill($("#queues"), entries.length ? h("span", { class: "muted" }, "queued") : null,
    entries.map(([name, depth]) => h("span", { class: "queue-chip", title: `${depth} waiting in ${name}` },
      h("span", { class: "queue-name" }, name), h("span", { class: "queue-depth" }, count(depth)))));
}

function syncOptions(select, names) {
  const have = new Set([...select.options].map((o) => o.value));
  for (const name of names.sort()) {
    if (!have.has(name)) select.append(h("option", { value: name }, name));
  }
}

// ---- live events -----------------------------------------------------------------------

function onLifecycle(ev) {
  const previous = table.get(ev.task_id)?.status ?? lastStatus.get(ev.task_id);
  if (previous !== ev.status) {
    if (previous && previous in counts) counts[previous] = Math.max(0, counts[previous] - 1);
    // A task first seen starting its first attempt is new to the counts too.
    if (previous || ev.status === "pending" || (ev.status === "running" && ev.attempt === 1)) {
      if (ev.status in counts) counts[ev.status] += 1;
      renderCounts();
    }
  }
  lastStatus.set(ev.task_id, ev.status);
  if (lastStatus.size > 20000) lastStatus.delete(lastStatus.keys().next().value);

  const patch = {
    status: ev.status, attempt: ev.attempt, error: ev.error ?? null, updated_at: ev.timestamp,
  };
  if ("progress" in ev) patch.progress = ev.progress;
  if (ev.status === "running") {
    Object.assign(patch, { started_at: ev.timestamp, finished_at: null, duration_seconds: null });
  } else if (TERMINAL.has(ev.status)) {
    const started = table.get(ev.task_id)?.started_at;
    patch.finished_at = ev.timestamp;
    patch.duration_seconds = started ? (Date.parse(ev.timestamp) - Date.parse(started)) / 1000 : null;
  } else if (ev.status === "pending") {
    patch.finished_at = null;
  }

  remember(ev.task_id, patch);
  if (!table.update(ev.task_id, patch)) {
    const task = {
      task_id: ev.task_id, func_name: ev.func_name, queue: ev.queue || "default",
      priority: ev.priority ?? 0, tags: ev.tags || {}, max_retries: 0, created_at: ev.timestamp,
      ...patch,
    };
    if (matches(task)) {
      // First sight of this task (usually as it starts): show it now from the event,
      // then fill in what events do not carry (creation time, retries) from the API.
      table.prepend(task);
      refreshFooter();
      enrich(ev.task_id);
    }
  }
  if (detail.openId === ev.task_id) scheduleDetail();
  scheduleStats(TERMINAL.has(ev.status) ? 1000 : 2500);
}

// The latest change of recently active tasks, replayed over API answers that were on
// their way while it arrived (the table keeps whichever is newer).
const recent = new Map();

function remember(id, patch) {
  recent.delete(id);
  recent.set(id, patch);
  if (recent.size > 2000) recent.delete(recent.keys().next().value);
}

// Fetches of rows first seen on the stream: at most two at once and a bounded backlog,
// so a burst of new tasks never floods the API (rows past the backlog keep event data).
const enrichQueue = [];
let enriching = 0;

function enrich(id) {
  if (enrichQueue.length >= 50 || enrichQueue.includes(id)) return;
  enrichQueue.push(id);
  pumpEnrich();
}

function pumpEnrich() {
  while (enriching < 2 && enrichQueue.length) {
    const id = enrichQueue.shift();
    if (!table.has(id)) continue;
    enriching += 1;
    api.task(id)
      .then((task) => table.update(id, summaryOf(task)))
      .catch(() => {}) // purged meanwhile: the row keeps what the event said
      .finally(() => {
        enriching -= 1;
        pumpEnrich();
      });
  }
}

function onLog(ev) {
  // A task_progress() report: the running row's progress, live. One from an earlier
  // attempt than the row shows (a late message) is left out.
  if (typeof ev.progress === "number") {
    const task = table.get(ev.task_id);
    if (task && !(ev.attempt < task.attempt)) table.update(ev.task_id, { progress: ev.progress });
  }
  if (detail.openId === ev.task_id) {
    if (typeof ev.progress === "number") detail.setProgress(ev.progress, ev.attempt);
    detail.appendLog(ev);
  }
}

const marked = new Set();

/** A performance mark (time since navigation) the first time something is on screen. */
function markOnce(name) {
  if (marked.has(name)) return;
  marked.add(name);
  performance.mark(name);
}

function setLive(state) {
  if (state === "live") markOnce("taskflow:live");
  const el = $("#live");
  el.dataset.state = state;
  setText(el.querySelector(".live-text"), state === "live" ? "live" : "reconnecting…");
}

// ---- detail ----------------------------------------------------------------------------

let detailTimer = null;

function scheduleDetail() {
  clearTimeout(detailTimer);
  detailTimer = setTimeout(() => detail.openId && openDetail(detail.openId, { quiet: true }), 250);
}

async function openDetail(id, { quiet = false } = {}) {
  if (!quiet) {
    detail.loading(id);
    table.select(id);
    if (location.hash !== `#task=${encodeURIComponent(id)}`) {
      history.replaceState(null, "", `${location.pathname}${location.search}#task=${encodeURIComponent(id)}`);
    }
  }
  try {
    const task = await api.task(id);
    if (detail.openId !== id) return;
    const scrollTop = detail.body.parentElement.scrollTop;
    detail.render(task);
    if (quiet) detail.body.parentElement.scrollTop = scrollTop;
    table.update(id, summaryOf(task));
  } catch (err) {
    if (detail.openId === id) detail.failed(id, `Could not load the task: ${err.message}`);
  }
}

function closeDetail() {
  const id = detail.openId;
  detail.hide();
  table.select(null);
  table.focus(id);
  history.replaceState(null, "", `${location.pathname}${location.search}`);
}

function summaryOf(task) {
  const { logs, attempts, args, kwargs, result, ...summary } = task;
  return summary;
}

// ---- actions ---------------------------------------------------------------------------

async function act(action, id) {
  try {
    const task = action === "retry" ? await api.retry(id) : await api.cancel(id);
    table.update(id, task); // unless events already told of what happened next
    lastStatus.set(id, table.get(id)?.status ?? task.status);
    toast(action === "retry" ? "Retry queued"
      : task.status === "running" ? "Cancellation requested" : "Task cancelled");
    if (detail.openId === id) openDetail(id, { quiet: true });
    scheduleStats(500);
  } catch (err) {
    toast(`Could not ${action}: ${err.message}`, true);
  }
}

let retryAllArmed = null;

async function retryAll(button) {
  if (!retryAllArmed) {
    button.textContent = "Click again to retry";
    button.classList.add("armed");
    retryAllArmed = setTimeout(() => disarm(button), 4000);
    return;
  }
  disarm(button);
  const filter = apiFilter();
  delete filter.status; // always the failed ones
  if (filter.tag) filter.tag = [filter.tag];
  try {
    const result = await api.retryFailed(filter);
    toast(`${count(result.task_ids.length)} failed task(s) queued again`);
    loadList();
    scheduleStats(500);
  } catch (err) {
    toast(`Could not retry: ${err.message}`, true);
  }
}

function disarm(button) {
  clearTimeout(retryAllArmed);
  retryAllArmed = null;
  button.textContent = "Retry failed";
  button.classList.remove("armed");
}

let toastTimer = null;

function toast(message, isError = false) {
  const el = $("#toast");
  setText(el, message);
  el.classList.toggle("toast-error", isError);
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, isError ? 6000 : 2500);
}

// ---- wiring ----------------------------------------------------------------------------

function onFiltersChanged() {
  saveFilters();
  renderCounts();
  loadList();
}

let typingTimer = null;

function wire() {
  form.addEventListener("submit", (e) => e.preventDefault());
  form.addEventListener("change", (e) => {
    if (e.target === fields.q || e.target === fields.tag) return;
    onFiltersChanged();
  });
  for (const el of [fields.q, fields.tag]) {
    el.addEventListener("input", () => {
      clearTimeout(typingTimer);
      typingTimer = setTimeout(onFiltersChanged, 300);
    });
  }
  form.addEventListener("reset", (e) => {
    e.preventDefault(); // clear the fields here, so the list reloads with them cleared
    clearTimeout(typingTimer);
    for (const el of Object.values(fields)) el.value = "";
    onFiltersChanged();
  });
  $("#counts").addEventListener("click", (e) => {
    const cardEl = e.target.closest(".count-card");
    if (!cardEl) return;
    const status = cardEl.dataset.status;
    fields.status.value = fields.status.value === status ? "" : status;
    onFiltersChanged();
  });
  $("#more").addEventListener("click", () => loadList({ more: true }));
  $("#retry-all").addEventListener("click", (e) => retryAll(e.currentTarget));

  const tbody = $("#task-rows");
  tbody.addEventListener("click", (e) => {
    const tr = e.target.closest("tr[data-task-id]");
    if (!tr) return;
    const button = e.target.closest("button[data-action]");
    if (button) {
      e.stopPropagation();
      act(button.dataset.action, tr.dataset.taskId);
    } else {
      openDetail(tr.dataset.taskId);
    }
  });
  tbody.addEventListener("keydown", (e) => {
    const tr = e.target.closest("tr[data-task-id]");
    if (tr && e.target === tr && (e.key === "Enter" || e.key === " ")) {
      e.preventDefault();
      openDetail(tr.dataset.taskId);
    }
  });

  $("#d-close").addEventListener("click", closeDetail);
  $("#d-retry").addEventListener("click", () => detail.openId && act("retry", detail.openId));
  $("#d-cancel").addEventListener("click", () => detail.openId && act("cancel", detail.openId));
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && detail.openId) closeDetail();
  });

  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(drawCharts, 150);
  });
  setInterval(loadStats, 30000); // throughput buckets move on with time
  // A new task sends no event until it starts: while the page is watched, the first page
  // (one cheap keyset query) is merged in every few seconds, so waiting tasks show too.
  setInterval(() => document.visibilityState === "visible" && mergeFirstPage(), 5000);
}

function start() {
  initTheme($("#theme"));
  restoreFilters();
  renderCounts();
  wire();
  follow({ lifecycle: onLifecycle, log: onLog, state: setLive, resync: () => { loadList(); loadStats(); } });
  // The table first: on a big store the stats take longer, and the list is what people
  // came for; counts and charts follow.
  loadList().finally(loadStats);
  const match = /^#task=(.+)$/.exec(location.hash);
  if (match) openDetail(decodeURIComponent(match[1]));
}

start();
