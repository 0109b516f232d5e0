// How times, durations and states read on every page. Times are microseconds since the
// Unix epoch.

export const STATES = [
  "Pending", "Running", "AwaitingRetry", "Completed", "Cached",
  "Failed", "TimedOut", "Crashed", "Cancelled", "NotReady",
];

export const FINAL = new Set(["Completed", "Cached", "Failed", "TimedOut", "Crashed", "Cancelled", "NotReady"]);

export const STATE_COLOURS = {
  Pending: "#9aa4b2",
  Running: "#2f7de1",
  AwaitingRetry: "#e8a33d",
  Completed: "#2e9e5b",
  Cached: "#1f9c9c",
  Failed: "#d64545",
  TimedOut: "#8e5bd6",
  Crashed: "#9b1c1c",
  Cancelled: "#59616c",
  NotReady: "#c7cdd4",
};

export function time(micros) {
  if (micros == null) return "—";
  const date = new Date(micros / 1000);
  return date.toLocaleString(undefined, { hour12: false });
}

export function duration(start, end) {
  if (start == null) return "—";
  const micros = (end ?? Date.now() * 1000) - start;
  const seconds = micros / 1e6;
  if (seconds < 1) return `${Math.round(micros / 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m ${Math.round(seconds % 60)}s`;
  return `${Math.floor(minutes / 60)}h ${minutes % 60}m`;
}

// The state a group of runs shows: running before waiting before failed before done.
export function groupState(counts) {
  const has = (state) => (counts[state] ?? 0) > 0;
  for (const state of ["Running", "AwaitingRetry", "Pending", "Crashed", "Failed", "TimedOut", "Cancelled", "NotReady", "Cached", "Completed"]) {
    if (has(state)) {
      if (state === "Pending" && (has("Completed") || has("Cached") || has("Failed"))) return "Running";
      return state;
    }
  }
  return "Pending";
}

export function json(value) {
  return JSON.stringify(value, null, 2);
}
