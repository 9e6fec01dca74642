// @ts-check
/**
 * Talking to /api: fetch with JSON errors, and who the page calls as.
 *
 * `setAuth` takes the template's `data-auth`:
 * - "none" and "token": with TASKS_API_TOKEN set the page asks for the token
 *   (see `setTokenPrompt`) and keeps it in sessionStorage, so it lasts as long
 *   as the tab and no longer. fetch sends it as `Authorization: Bearer`;
 *   EventSource cannot send headers, so a stream URL carries a short-lived
 *   ticket (`POST /api/tickets`) instead of the token.
 * - "user" (TASKS_USER_TOKENS): the person signs in with their own token once
 *   (`POST /api/session`); the HttpOnly cookie is the session and the token is
 *   kept nowhere. Unsafe calls send the session's `X-CSRF-Token`, and a stream
 *   URL carries a short-lived ticket (`POST /api/tickets`), never the token.
 */

const TOKEN_KEY = "taskstream.token";
const CSRF_HEADER = "X-CSRF-Token";
const SAFE_METHODS = new Set(["GET", "HEAD"]);

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

/**
 * @typedef {{user: string, csrf_token: string, expires_at: string}} Session
 * @typedef {{wasRefused: boolean}} PromptContext the answer given last was refused
 */

/** @type {(reason: string, context: PromptContext) => Promise<string | null>} */
let promptForToken = async () => null;
/** @type {Promise<string | null> | null} */
let pendingPrompt = null;
/** @type {Promise<boolean> | null} */
let pendingSignIn = null;

const auth = {
  mode: "token",
  sessionUrl: "",
  ticketsUrl: "",
  /** @type {Session | null} */
  session: null,
  /** @type {(session: Session | null, previous: Session | null) => void} */
  onSession: () => {},
};

/**
 * Set how the page calls the API, from the template's data attributes.
 * @param {object} options
 * @param {string | undefined} options.mode "user", "token" or "none"; anything else: "token"
 * @param {string} [options.sessionUrl]
 * @param {string} [options.ticketsUrl]
 * @param {(session: Session | null, previous: Session | null) => void} [options.onSession]
 *   runs when the page signs in, out, or learns its session
 */
export function setAuth({ mode, sessionUrl = "", ticketsUrl = "", onSession = () => {} }) {
  auth.mode = mode === "user" || mode === "none" ? mode : "token";
  auth.sessionUrl = sessionUrl;
  auth.ticketsUrl = ticketsUrl;
  auth.onSession = onSession;
}

export function isUserMode() {
  return auth.mode === "user";
}

/**
 * Set how the page asks for a token; it resolves with the token, or null
 * when the person declines.
 * @param {(reason: string, context: PromptContext) => Promise<string | null>} prompt
 */
export function setTokenPrompt(prompt) {
  promptForToken = prompt;
}

/** @returns {string | null} */
export function getToken() {
  if (isUserMode()) return null; // the cookie is the session
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
    const context = { wasRefused: Boolean(getToken()) };
    pendingPrompt = promptForToken(reason, context).then((token) => {
      pendingPrompt = null;
      if (token) storeToken(token);
      return token;
    });
  }
  return pendingPrompt;
}

/**
 * A stream URL: with a ticket whenever the server wants credentials (user
 * and token mode: the token itself never goes in a URL, where proxies and
 * history would keep it) and, when resuming, `?lastEventId=`. A ticket is
 * asked for each time, so a reopen never reuses an expired one.
 * @param {string} url
 * @param {number | null} lastEventId
 * @param {{taskId?: string}} [scope] the task whose stream this is; none: all tasks
 * @returns {Promise<string>}
 */
export async function streamUrl(url, lastEventId, { taskId } = {}) {
  let full = new URL(url, location.href);
  if (auth.mode !== "none") {
    const ticket = await request(auth.ticketsUrl, {
      method: "POST", body: taskId === undefined ? {} : { task_id: taskId },
    });
    full = new URL(ticket.url, location.href);
  }
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
 * A 401 asks for the token (user mode: to sign in) and tries again while the
 * person gives one; a 403 `csrf_failed` (the session changed under us, e.g.
 * another tab signed in again) takes the session's new CSRF token and tries once more.
 * @param {string} url
 * @param {{method?: string, body?: unknown, headers?: Record<string, string>}} [options]
 * @returns {Promise<any>}
 */
export async function request(url, { method = "GET", body, headers = {} } = {}) {
  let csrfRetried = false;
  for (;;) {
    const response = await send(url, method, body, headers);
    if (response.status !== 401 && response.status !== 403) return parse(response);
    const error = await parse(response).catch((/** @type {ApiError} */ e) => e);
    if (response.status === 403) {
      if (error.code !== "csrf_failed" || csrfRetried || !isUserMode()) throw error;
      csrfRetried = true;
      await loadSession();
    } else if (isUserMode()) {
      if (!(await askToSignIn(error.message))) throw error;
    } else if (!(await askForToken(error.message))) {
      throw error;
    }
  }
}

/**
 * @param {string} url
 * @param {string} method
 * @param {unknown} body
 * @param {Record<string, string>} headers
 */
function send(url, method, body, headers) {
  /** @type {Record<string, string>} */
  const all = { Accept: "application/json", ...headers };
  const token = getToken();
  if (token) all.Authorization = `Bearer ${token}`;
  if (auth.session && !SAFE_METHODS.has(method)) all[CSRF_HEADER] = auth.session.csrf_token;
  if (body !== undefined) all["Content-Type"] = "application/json";
  return fetch(url, {
    method,
    headers: all,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    credentials: "same-origin", // the session cookie, and only to this site
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

// -- user mode: the session --------------------------------------------------------

/** @param {Session | null} session */
function setSession(session) {
  const previous = auth.session;
  auth.session = session;
  auth.onSession(session, previous);
}

/**
 * Learn who is signed in and the session's CSRF token (after a page load the
 * cookie may still be valid; the CSRF token lives only in this page). A 401
 * asks to sign in.
 * @returns {Promise<Session>}
 */
export async function loadSession() {
  const session = await request(auth.sessionUrl);
  setSession(session);
  return session;
}

/**
 * Ask the person to sign in, once however many calls were refused together;
 * resolves true once signed in, false when they decline.
 * @param {string} reason
 * @returns {Promise<boolean>}
 */
export function askToSignIn(reason) {
  if (!pendingSignIn) {
    pendingSignIn = signInLoop(reason).finally(() => { pendingSignIn = null; });
  }
  return pendingSignIn;
}

/** @param {string} reason */
async function signInLoop(reason) {
  let wasRefused = false;
  for (;;) {
    const token = await promptForToken(reason, { wasRefused });
    if (!token) return false;
    // Not through request(): a wrong token is answered here, by asking again.
    const response = await send(auth.sessionUrl, "POST", { token }, {});
    try {
      setSession(await parse(response));
      return true;
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 401)) throw error;
      reason = error.message;
      wasRefused = true;
    }
  }
}

/**
 * Sign out: the server clears the cookie. Not through request(): a 401 here
 * means signed out already, not "ask to sign in".
 * @returns {Promise<void>}
 */
export async function signOut() {
  try {
    let response = await send(auth.sessionUrl, "DELETE", undefined, {});
    if (response.status === 403) {
      // A stale CSRF token (another tab signed in again): take the current one, once.
      const current = await send(auth.sessionUrl, "GET", undefined, {});
      if (!current.ok) return;
      auth.session = await parse(current);
      response = await send(auth.sessionUrl, "DELETE", undefined, {});
    }
    if (response.status !== 401) await parse(response);
  } finally {
    setSession(null);
  }
}
