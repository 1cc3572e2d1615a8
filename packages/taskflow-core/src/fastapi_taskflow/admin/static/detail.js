// The detail panel: one task's fields, arguments (only when the API sends them, i.e.
// display_args=True), result, error and traceback, every attempt and the logs.
// Everything the task contributes is inserted as text.

import { $, fill, h, setText } from "./dom.js";
import { duration, fullTime, json, parseTime, shortTime } from "./format.js";
import { CANCELLABLE, RETRYABLE, taskDuration } from "./table.js";

export class DetailPanel {
  constructor(root) {
    this.root = root;
    this.body = $("#d-body", root);
    this.task = null;
    this.logList = null;
    this.overview = null;
  }

  get openId() {
    return this.root.hidden ? null : this.task?.task_id ?? null;
  }

  show() {
    if (this.root.hidden) {
      this.root.hidden = false;
      // Keyboard users land in the panel (Escape closes it and returns to the list).
      this.root.querySelector(".detail-inner").focus({ preventScroll: true });
    }
    document.body.classList.add("detail-open");
  }

  hide() {
    this.root.hidden = true;
    this.task = null;
    document.body.classList.remove("detail-open");
  }

  loading(id) {
    this.show();
    this.task = { task_id: id };
    this.overview = null;
    setText($("#d-id", this.root), id);
    setText($("#d-func", this.root), "");
    fill(this.body, h("p", { class: "muted" }, "Loading…"));
  }

  failed(id, message) {
    this.task = { task_id: id };
    this.overview = null;
    fill(this.body, h("p", { class: "error-text" }, message));
  }

  render(task) {
    this.task = task;
    this.show();
    const badge = $("#d-status", this.root);
    setText(badge, task.status);
    badge.dataset.status = task.status;
    setText($("#d-func", this.root), task.func_name);
    setText($("#d-id", this.root), task.task_id);
    $("#d-retry", this.root).hidden = !RETRYABLE.has(task.status);
    $("#d-cancel", this.root).hidden = !CANCELLABLE.has(task.status);

    this.overview = this.#overview(task);
    const sections = [this.overview];
    if (task.tags && Object.keys(task.tags).length) sections.push(this.#tags(task.tags));
    sections.push(this.#arguments(task));
    const failure = this.#failure(task);
    if (failure) sections.push(failure);
    sections.push(this.#attempts(task.attempts || []));
    sections.push(this.#logs(task.logs || []));
    fill(this.body, sections);
    // A traceback's last lines say what went wrong: show those first.
    for (const pre of this.body.querySelectorAll(".failure .traceback")) pre.scrollTop = pre.scrollHeight;
  }

  /** A task_progress() report of the open task's current attempt, from the stream. */
  setProgress(progress, attempt) {
    if (!this.overview || !this.task || attempt < (this.task.attempt ?? 0)) return;
    this.task.progress = progress;
    const fresh = this.#overview(this.task);
    this.overview.replaceWith(fresh);
    this.overview = fresh;
  }

  /** A log line that arrived on the event stream for the open task. */
  appendLog(log) {
    if (!this.logList) return;
    this.logList.querySelector(".empty-line")?.remove();
    this.logList.append(logLine(log));
  }

  #overview(t) {
    const rows = [
      ["Queue", t.queue],
      ["Priority", t.priority],
      ["Attempt", t.max_retries ? `${t.attempt} of ${t.max_retries + 1}` : String(t.attempt)],
      ["Created", fullTime(t.created_at)],
      ["Started", t.started_at ? fullTime(t.started_at) : "—"],
      ["Finished", t.finished_at ? fullTime(t.finished_at) : "—"],
      ["Duration", taskDuration(t)],
      ["Progress", typeof t.progress === "number" ? `${Math.round(t.progress * 100)}%` : null],
      ["Owner", t.owner],
      ["Idempotency key", t.idempotency_key],
    ].filter(([, v]) => v !== null && v !== undefined && v !== "");
    return section("Overview", h("dl", { class: "facts" },
      rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])));
  }

  #tags(tags) {
    return section("Tags", h("div", { class: "tag-list" },
      Object.entries(tags).map(([k, v]) => h("span", { class: "tag" }, h("span", { class: "tag-k" }, k, "="), v))));
  }

  #arguments(t) {
    if (t.args === null && t.kwargs === null) {
      return section("Arguments", h("p", { class: "muted" },
        "Hidden. Mount TaskAdmin with display_args=True to show arguments and results."));
    }
    const parts = [];
    if (t.args && t.args.length) parts.push(h("h4", {}, "args"), h("pre", { class: "code", id: "d-args" }, json(t.args)));
    if (t.kwargs && Object.keys(t.kwargs).length) {
      parts.push(h("h4", {}, "kwargs"), h("pre", { class: "code", id: "d-kwargs" }, json(t.kwargs)));
    }
    if (!parts.length) parts.push(h("p", { class: "muted" }, "No arguments."));
    if (t.result !== null && t.result !== undefined) {
      parts.push(h("h4", {}, "result"), h("pre", { class: "code" }, json(t.result)));
    }
    return section("Arguments", parts);
  }

  #failure(t) {
    // Only the latest run: after a retry, the earlier run's error is history.
    const attempts = t.attempts || [];
    const run = attempts.reduce((most, a) => Math.max(most, a.run || 1), 1);
    const failedAttempts = attempts.filter((a) => (a.run || 1) === run && (a.error || a.traceback));
    const last = failedAttempts[failedAttempts.length - 1];
    const error = t.error || last?.error;
    if (!error) return null;
    // The traceback of this very error: not an earlier run's, when the task ended
    // without one of its own (cancelled before its retry started, interrupted).
    const ofThisError = (text) => !t.error || text === t.error;
    const traceback = (last && ofThisError(last.error) ? last.traceback : null)
      || tracebackFromLogs(t.logs || [], t.error);
    return section("Error", h("div", { class: "failure" },
      h("p", { class: "error-text", id: "d-error" }, error),
      traceback ? h("pre", { class: "code traceback", id: "d-traceback" }, traceback) : null));
  }

  #attempts(attempts) {
    if (!attempts.length) return section("Attempts", h("p", { class: "muted" }, "Not started yet."));
    return section(`Attempts (${attempts.length})`, h("ol", { class: "attempts" },
      attempts.map((a) => {
        const start = parseTime(a.started_at);
        const end = parseTime(a.finished_at);
        return h("li", { class: "attempt-item" },
          h("div", { class: "attempt-head" },
            h("span", { class: "attempt-n" },
              (a.run || 1) > 1 ? `run ${a.run} #${a.attempt}` : `#${a.attempt}`),
            h("span", { class: "badge", dataset: { status: a.status } }, a.status),
            h("span", { class: "muted" }, a.started_at ? shortTime(a.started_at) : ""),
            h("span", { class: "muted" },
              start !== null && end !== null ? duration((end - start) / 1000) : "")),
          a.error ? h("p", { class: "error-text" }, a.error) : null,
          a.traceback ? h("details", {}, h("summary", {}, "Traceback"),
            h("pre", { class: "code traceback" }, a.traceback)) : null);
      })));
  }

  #logs(logs) {
    this.logList = h("ol", { class: "logs", id: "d-logs" });
    if (logs.length) this.logList.append(...logs.map(logLine));
    else this.logList.append(h("li", { class: "empty-line muted" }, "No log lines."));
    return section("Logs", this.logList);
  }
}

function section(title, ...content) {
  return h("section", { class: "detail-section" }, h("h3", {}, title), content);
}

function logLine(log) {
  const extra = { ...(log.extra || {}) };
  const traceback = typeof extra.traceback === "string" ? extra.traceback : null;
  delete extra.traceback;
  return h("li", { class: "log", dataset: { level: (log.level || "info").toLowerCase() } },
    h("time", { title: fullTime(log.timestamp) }, shortTime(log.timestamp)),
    h("span", { class: "log-level" }, log.level || "info"),
    log.attempt ? h("span", { class: "log-attempt" }, `#${log.attempt}`) : h("span"),
    h("span", { class: "log-msg" }, log.message,
      Object.entries(extra).map(([k, v]) =>
        h("span", { class: "log-extra" }, h("span", { class: "tag-k" }, k, "="),
          typeof v === "string" ? v : json(v))),
      traceback ? h("details", {}, h("summary", {}, "traceback"),
        h("pre", { class: "code traceback" }, traceback)) : null));
}

// The last traceback logged with a failure line ("attempt N failed: <error>") of
// `error` (any, when the task has no error).
function tracebackFromLogs(logs, error) {
  for (let i = logs.length - 1; i >= 0; i--) {
    const tb = logs[i].extra?.traceback;
    if (typeof tb === "string" && (!error || String(logs[i].message).endsWith(error))) return tb;
  }
  return null;
}
