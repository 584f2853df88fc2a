// Calls to the wanserve API shared by the playground and the operations page.
//
// With auth on, the server answers 401 until a request carries `Authorization: Bearer <key>`.
// The key is asked for once and kept only in sessionStorage (this tab, until it closes), never
// in localStorage or a cookie.

const KEY_STORAGE = "wanserve.apiKey";

export class ApiError extends Error {
  constructor(status, code, message, param, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.param = param;
    this.retryAfter = retryAfter;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
  renderKeyState();
}

// -- the API key panel: shown when the server asks for a key ----------------------------------

let keyWaiters = [];

function keyPanel() {
  return document.getElementById("auth");
}

function renderKeyState() {
  const forget = document.getElementById("auth-forget");
  if (forget) forget.hidden = !apiKey();
}

function askForKey(message) {
  const panel = keyPanel();
  if (!panel) return Promise.reject(new ApiError(401, "unauthorized", message));
  document.getElementById("auth-message").textContent = message;
  panel.hidden = false;
  document.getElementById("auth-key").focus();
  return new Promise((resolve) => keyWaiters.push(resolve));
}

export function setUpKeyPanel() {
  const panel = keyPanel();
  if (!panel) return;
  panel.querySelector("form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("auth-key");
    setApiKey(input.value.trim());
    input.value = "";
    panel.hidden = true;
    const waiters = keyWaiters;
    keyWaiters = [];
    waiters.forEach((resolve) => resolve());
  });
  document.getElementById("auth-forget").addEventListener("click", () => setApiKey(""));
  renderKeyState();
}

// -- requests ----------------------------------------------------------------------------------

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const error = (body && body.error) || {};
  const retry = Number.parseInt(response.headers.get("Retry-After") || "", 10);
  return new ApiError(
    response.status,
    error.code || `http_${response.status}`,
    error.message || `the server answered ${response.status} ${response.statusText}`,
    error.param || null,
    Number.isFinite(retry) ? retry : null,
  );
}

// fetch() with the API key; on 401 asks for a key and tries again. Resolves to the Response
// (ok only) or rejects with an ApiError carrying the server's code and message.
export async function request(path, options = {}) {
  for (;;) {
    const headers = new Headers(options.headers || {});
    const key = apiKey();
    if (key) headers.set("Authorization", `Bearer ${key}`);
    let response;
    try {
      response = await fetch(path, { ...options, headers });
    } catch (cause) {
      throw new ApiError(0, "network_error", `could not reach the server (${cause.message})`);
    }
    if (response.ok) return response;
    const error = await errorFrom(response);
    if (response.status !== 401) throw error;
    const hint = key ? "The server refused that API key." : "This server needs an API key.";
    await askForKey(`${hint} ${error.message.charAt(0).toUpperCase()}${error.message.slice(1)}.`);
  }
}

export async function getJson(path) {
  return (await request(path, { headers: { Accept: "application/json" } })).json();
}

export async function postJson(path, body) {
  const response = await request(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body),
  });
  return response.json();
}

// The job's Server-Sent Events (GET /v1/videos/{id}/events), read with fetch so the API key travels
// as a header (EventSource cannot send one). Yields each event's JSON data until the stream ends.
export async function* events(path) {
  const response = await request(path, { headers: { Accept: "text/event-stream" } });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart()).join("\n");
      if (data) yield JSON.parse(data);
    }
  }
}
