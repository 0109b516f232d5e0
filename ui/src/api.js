// The API client: JSON over fetch, the token (when the server asks for one) kept in
// this browser's local storage, and event streams.

const TOKEN_KEY = "weir-token";

export class AuthNeeded extends Error {}

export function token() {
  return localStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) localStorage.setItem(TOKEN_KEY, value);
  else localStorage.removeItem(TOKEN_KEY);
}

async function call(method, path, body) {
  const headers = {};
  const saved = token();
  if (saved) headers.Authorization = `Bearer ${saved}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(`/api/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) throw new AuthNeeded((await response.json()).error);
  if (response.status === 204) return null;
  const answer = await response.json().catch(() => null);
  if (!response.ok) {
    const error = new Error(answer?.error ?? `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return answer;
}

export const get = (path) => call("GET", path);
export const post = (path, body = {}) => call("POST", path, body);
export const put = (path, body) => call("PUT", path, body);
export const del = (path) => call("DELETE", path);

// A flow run's live events (`flow-run`, `task-run`, `log`, `resync`, `end`).
export function follow(id, onEvent) {
  const saved = token();
  const query = saved ? `?access_token=${encodeURIComponent(saved)}` : "";
  const source = new EventSource(`/api/v1/flow-runs/${encodeURIComponent(id)}/events${query}`);
  for (const name of ["flow-run", "task-run", "log", "resync", "end"]) {
    source.addEventListener(name, (event) => {
      onEvent(name, JSON.parse(event.data));
      if (name === "end") source.close();
    });
  }
  return () => source.close();
}
