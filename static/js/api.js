// @ts-check
/**
 * Talking to /api: fetch with JSON errors, and the API token.
 *
 * With TASKS_API_TOKEN set on the server, the page asks for the token (see
 * `setTokenPrompt`) and keeps it in sessionStorage, so it lasts as long as the
 * tab and no longer. fetch sends it as `Authorization: Bearer`; EventSource
 * cannot send headers, so stream URLs carry `?token=` (API.md).
 */

const TOKEN_KEY = "taskstream.token";

/** An error answer from the API: `{"error": {"code", "message"}}` and its status. */
export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   */
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

/** @type {(reason: string) => Promise<string | null>} */
let promptForToken = async () => null;
/** @type {Promise<string | null> | null} */
let pendingPrompt = null;

/**
 * Set how the page asks for a token; it resolves with the token, or null
 * when the person declines.
 * @param {(reason: string) => Promise<string | null>} prompt
 */
export function setTokenPrompt(prompt) {
  promptForToken = prompt;
}

/** @returns {string | null} */
export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null; // storage can be disabled; then the token lives nowhere
  }
}

/** @param {string | null} token */
function storeToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // see getToken
  }
}

/**
 * Ask for a token once, however many requests were refused at the same time.
 * @param {string} reason
 * @returns {Promise<string | null>}
 */
export function askForToken(reason) {
  if (!pendingPrompt) {
    pendingPrompt = promptForToken(reason).then((token) => {
      pendingPrompt = null;
      if (token) storeToken(token);
      return token;
    });
  }
  return pendingPrompt;
}

/**
 * A stream URL with the token and, when resuming, `?lastEventId=`.
 * @param {string} url
 * @param {number | null} lastEventId
 */
export function streamUrl(url, lastEventId) {
  const full = new URL(url, location.href);
  const token = getToken();
  if (token) full.searchParams.set("token", token);
  if (lastEventId !== null) full.searchParams.set("lastEventId", String(lastEventId));
  return full.pathname + full.search;
}

/**
 * Fill `__ID__` in a URL pattern from the page's data attributes.
 * @param {string} pattern
 * @param {string} taskId
 */
export function withId(pattern, taskId) {
  return pattern.replace("__ID__", encodeURIComponent(taskId));
}

/**
 * Call the API and return its JSON; throw ApiError for an error answer.
 * A 401 asks for the token and tries again while the person gives one.
 * @param {string} url
 * @param {{method?: string, body?: unknown, headers?: Record<string, string>}} [options]
 * @returns {Promise<any>}
 */
export async function request(url, { method = "GET", body, headers = {} } = {}) {
  for (;;) {
    const response = await send(url, method, body, headers);
    if (response.status !== 401) return parse(response);
    const error = await parse(response).catch((/** @type {ApiError} */ e) => e);
    const token = await askForToken(error.message);
    if (!token) throw error;
  }
}

/**
 * @param {string} url
 * @param {string} method
 * @param {unknown} body
 * @param {Record<string, string>} headers
 */
function send(url, method, body, headers) {
  const all = { Accept: "application/json", ...headers };
  const token = getToken();
  if (token) all.Authorization = `Bearer ${token}`;
  if (body !== undefined) all["Content-Type"] = "application/json";
  return fetch(url, {
    method,
    headers: all,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
}

/** @param {Response} response */
async function parse(response) {
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: a proxy's error page, say; reported below by status
  }
  if (response.ok) return data;
  const error = data && data.error;
  throw new ApiError(
    response.status,
    error ? String(error.code) : "http_error",
    error ? String(error.message) : `the server answered ${response.status} ${response.statusText}`,
  );
}
