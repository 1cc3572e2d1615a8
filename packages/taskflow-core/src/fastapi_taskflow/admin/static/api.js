// The admin API, addressed relative to the page ({path}/dashboard -> {path}/api/...),
// so the dashboard works under any mount path or proxy prefix.

const BASE = new URL(".", document.baseURI);

export const url = (path) => new URL(path, BASE);

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
  }
}

async function request(path, { method = "GET", body, params } = {}) {
  const target = url(path);
  if (params) target.search = params.toString();
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(target, init);
  if (response.status === 401 || response.status === 403) {
    // Session expired: the page itself redirects to the login when reloaded.
    throw new ApiError(response.status, "not signed in (reload the page to sign in)");
  }
  if (!response.ok) {
    let detail = "";
    try {
      const data = await response.json();
      detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail);
    } catch {
      detail = response.statusText;
    }
    throw new ApiError(response.status, detail);
  }
  return response.json();
}

const enc = encodeURIComponent;

export const api = {
  listTasks: (params) => request("api/tasks", { params }),
  task: (id) => request(`api/tasks/${enc(id)}`),
  stats: () => request("api/stats"),
  retry: (id) => request(`api/tasks/${enc(id)}/retry`, { method: "POST" }),
  cancel: (id) => request(`api/tasks/${enc(id)}/cancel`, { method: "POST" }),
  retryFailed: (filter) => request("api/tasks/retry-failed", { method: "POST", body: filter }),
};

/**
 * Follow the server-sent event stream. `handlers.lifecycle(event)` and `handlers.log(event)`
 * get each parsed message; `handlers.state(name)` gets "live" / "reconnecting";
 * `handlers.resync()` runs after a reconnect and when the server says it dropped events
 * (both times the page may have missed some).
 */
export function follow(handlers) {
  let source = null;
  let wasLive = false;
  let retryTimer = null;

  const open = () => {
    source = new EventSource(url("api/events"), { withCredentials: true });
    source.addEventListener("open", () => {
      handlers.state("live");
      if (wasLive) handlers.resync();
      wasLive = true;
    });
    source.addEventListener("error", () => {
      handlers.state("reconnecting");
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (e.g. a 401/5xx answer): try again ourselves, gently.
        clearTimeout(retryTimer);
        retryTimer = setTimeout(open, 3000);
      }
    });
    // The server dropped events this page was too slow to take: what it shows may be
    // out of date, as after a reconnect.
    source.addEventListener("dropped", () => handlers.resync());
    for (const kind of ["lifecycle", "log"]) {
      source.addEventListener(kind, (message) => {
        let data;
        try {
          data = JSON.parse(message.data);
        } catch {
          return;
        }
        handlers[kind](data);
      });
    }
  };
  open();
  return () => {
    clearTimeout(retryTimer);
    source?.close();
  };
}
