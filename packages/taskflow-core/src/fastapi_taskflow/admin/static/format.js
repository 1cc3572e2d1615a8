// Formatting of times, durations and values for display (always returned as strings).

const timeFmt = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit", minute: "2-digit", second: "2-digit",
});
const dateTimeFmt = new Intl.DateTimeFormat(undefined, {
  month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
});
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

export function parseTime(value) {
  if (!value) return null;
  const t = Date.parse(value);
  return Number.isNaN(t) ? null : t;
}

/** "14:03:07" today, "Nov 24, 14:03:07" otherwise. */
export function shortTime(value) {
  const t = parseTime(value);
  if (t === null) return "—";
  const d = new Date(t);
  return d.toDateString() === new Date().toDateString() ? timeFmt.format(d) : dateTimeFmt.format(d);
}

export function fullTime(value) {
  const t = parseTime(value);
  return t === null ? "" : fullFmt.format(new Date(t));
}

/** 0.0042 -> "4.2 ms", 12.5 -> "12.5 s", 3600 -> "1 h 0 min". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  if (seconds === 0) return "0";
  if (seconds < 0.001) return `${Math.round(seconds * 1e6)} µs`;
  if (seconds < 1) return `${trim(seconds * 1000)} ms`;
  if (seconds < 60) return `${trim(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

function trim(n) {
  return n >= 100 ? String(Math.round(n)) : n >= 10 ? n.toFixed(1) : n.toFixed(2);
}

export function count(n) {
  return new Intl.NumberFormat().format(n || 0);
}

/** A compact axis label for a count: 1200 -> "1.2k". */
export function compact(n) {
  return new Intl.NumberFormat(undefined, { notation: "compact" }).format(n);
}

/** Pretty JSON of any API value, for a <pre> (set with textContent). */
export function json(value) {
  try {
    const flat = JSON.stringify(value);
    return flat.length <= 72 ? flat : JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

// The tail of a long id: task ids are version-7 UUIDs, whose first digits are the time
// they were made (the same for every task of a minute) and whose last ones are random.
export function shortId(id) {
  return id.length > 12 ? `…${id.slice(-8)}` : id;
}
