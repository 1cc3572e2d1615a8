// The task table: one <tr> per task, keyed by task id. Live events patch only the cells
// that changed, so untouched rows stay untouched (and keep their focus and selection).

import { h, setText } from "./dom.js";
import { duration, fullTime, parseTime, shortId, shortTime } from "./format.js";

export const RETRYABLE = new Set(["failed", "interrupted", "cancelled"]);
export const CANCELLABLE = new Set(["pending", "running"]);
export const TERMINAL = new Set(["success", "failed", "interrupted", "cancelled", "rejected"]);
const MAX_ROWS = 1000;

export class TaskTable {
  constructor(tbody) {
    this.tbody = tbody;
    this.rows = new Map(); // task_id -> {tr, cells, task}
  }

  get size() {
    return this.rows.size;
  }

  has(id) {
    return this.rows.has(id);
  }

  get(id) {
    return this.rows.get(id)?.task;
  }

  clear() {
    this.rows.clear();
    this.tbody.replaceChildren();
  }

  /** Add tasks at the bottom (a page of the list, newest first). */
  append(tasks) {
    const frag = document.createDocumentFragment();
    for (const task of tasks) {
      if (this.rows.has(task.task_id)) {
        this.update(task.task_id, task);
        continue;
      }
      frag.append(this.#create(task).tr);
    }
    this.tbody.append(frag);
  }

  /** Add a task that just appeared at the top, briefly highlighted. */
  prepend(task) {
    if (this.rows.has(task.task_id)) return this.update(task.task_id, task);
    const row = this.#create(task);
    this.tbody.prepend(row.tr);
    flash(row.tr, "row-new");
    while (this.rows.size > MAX_ROWS) {
      const last = this.tbody.lastElementChild;
      this.rows.delete(last.dataset.taskId);
      last.remove();
    }
    return true;
  }

  /**
   * Merge `patch` into a row's task and redraw the cells whose text changed. A patch
   * older than what the row shows (an API answer that crossed a newer event) keeps the
   * row's state and only adds the fields it has that events do not carry.
   */
  update(id, patch) {
    const row = this.rows.get(id);
    if (!row) return false;
    const before = row.task.status;
    if (isOlder(patch.updated_at, row.task.updated_at)) {
      patch = Object.fromEntries(Object.entries(patch).filter(([k]) => !STATE_FIELDS.has(k)));
    }
    Object.assign(row.task, patch);
    this.#paint(row);
    if (before !== row.task.status) flash(row.tr, "row-changed");
    return true;
  }

  /**
   * Add a task in its place by creation time (newest first), briefly highlighted.
   * A task older than every row shown is left for "load more" (returns false).
   */
  insertSorted(task) {
    if (this.rows.has(task.task_id)) return this.update(task.task_id, task);
    const created = parseTime(task.created_at) ?? 0;
    let before = null;
    for (const tr of this.tbody.children) {
      const other = parseTime(this.rows.get(tr.dataset.taskId)?.task.created_at) ?? 0;
      if (other < created) {
        before = tr;
        break;
      }
    }
    if (!before && this.tbody.childElementCount) return false;
    const row = this.#create(task);
    this.tbody.insertBefore(row.tr, before);
    flash(row.tr, "row-new");
    return true;
  }

  focus(id) {
    this.rows.get(id)?.tr.focus({ preventScroll: true });
  }

  select(id) {
    for (const tr of this.tbody.querySelectorAll("tr[aria-selected=true]")) {
      tr.setAttribute("aria-selected", "false");
    }
    this.rows.get(id)?.tr.setAttribute("aria-selected", "true");
  }

  #create(task) {
    const cells = {
      status: h("span", { class: "badge" }),
      progress: h("span", { class: "progress-text" }),
      func: h("span", { class: "func" }),
      id: h("code", { class: "task-id" }),
      queue: h("span", { class: "queue" }),
      tags: h("td", { class: "tags" }),
      attempt: h("td", { class: "num attempt" }),
      created: h("time"),
      duration: h("td", { class: "num duration" }),
      retry: h("button", {
        class: "row-action", type: "button", dataset: { action: "retry" }, title: "Retry this task",
      }, "Retry"),
      cancel: h("button", {
        class: "row-action danger", type: "button", dataset: { action: "cancel" },
        title: "Cancel this task (a running one is stopped)",
      }, "Cancel"),
    };
    const tr = h(
      "tr",
      { dataset: { taskId: task.task_id }, tabindex: 0, "aria-selected": "false" },
      h("td", { class: "status-cell" }, cells.status, cells.progress),
      h("td", {}, cells.func),
      h("td", {}, cells.id),
      h("td", {}, cells.queue),
      cells.tags,
      cells.attempt,
      h("td", { class: "created" }, cells.created),
      cells.duration,
      h("td", { class: "actions" }, cells.retry, cells.cancel),
    );
    const row = { tr, cells, task: { ...task }, tagsKey: null, func: null };
    this.rows.set(task.task_id, row);
    this.#paint(row);
    return row;
  }

  #paint(row) {
    const { cells, task, tr } = row;
    // Every write below is skipped when the value is already there, so repainting an
    // unchanged task changes nothing in the DOM.
    prop(tr.dataset, "status", task.status);
    setText(cells.status, task.status);
    prop(cells.status.dataset, "status", task.status);
    const pct = task.status === "running" && typeof task.progress === "number"
      ? `${Math.round(task.progress * 100)}%` : "";
    setText(cells.progress, pct);
    if (row.func !== task.func_name) {
      row.func = task.func_name;
      const cut = task.func_name.lastIndexOf(".") + 1;
      cells.func.replaceChildren(
        h("span", { class: "func-mod" }, task.func_name.slice(0, cut)),
        task.func_name.slice(cut),
      );
      cells.func.title = task.func_name;
    }
    setText(cells.id, shortId(task.task_id));
    prop(cells.id, "title", task.task_id);
    setText(cells.queue, task.queue || "default");
    const tagsKey = JSON.stringify(task.tags || {});
    if (row.tagsKey !== tagsKey) {
      row.tagsKey = tagsKey;
      cells.tags.replaceChildren(
        ...Object.entries(task.tags || {}).map(([k, v]) =>
          h("span", { class: "tag", title: `${k}=${v}` }, h("span", { class: "tag-k" }, k, "="), v)),
      );
    }
    const retries = task.max_retries ? `/${task.max_retries + 1}` : "";
    setText(cells.attempt, task.attempt ? `${task.attempt}${retries}` : "—");
    setText(cells.created, shortTime(task.created_at));
    prop(cells.created, "dateTime", task.created_at || "");
    prop(cells.created, "title", fullTime(task.created_at));
    setText(cells.duration, taskDuration(task));
    prop(cells.duration, "title", task.error || "");
    prop(cells.retry, "hidden", !RETRYABLE.has(task.status));
    prop(cells.cancel, "hidden", !CANCELLABLE.has(task.status));
  }
}

function prop(target, name, value) {
  if (target[name] !== value) target[name] = value;
}

// What a lifecycle event changes; the rest of a task (created_at, max_retries, ...) never
// changes after creation.
const STATE_FIELDS = new Set([
  "status", "attempt", "error", "progress", "started_at", "finished_at", "duration_seconds",
  "updated_at", "owner",
]);

function isOlder(a, b) {
  const ta = parseTime(a);
  const tb = parseTime(b);
  return ta !== null && tb !== null && ta < tb;
}

export function taskDuration(task) {
  if (typeof task.duration_seconds === "number") return duration(task.duration_seconds);
  const start = parseTime(task.started_at);
  const end = parseTime(task.finished_at);
  if (start !== null && end !== null) return duration((end - start) / 1000);
  if (task.status === "running") return "running";
  return "—";
}

function flash(el, cls) {
  el.classList.remove(cls);
  void el.offsetWidth; // restart the animation
  el.classList.add(cls);
  el.addEventListener("animationend", () => el.classList.remove(cls), { once: true });
}
