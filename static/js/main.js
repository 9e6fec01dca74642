// @ts-check
/**
 * Wiring: reads the URLs the template put in `#app`'s data attributes, then
 * runs the list view (`/`: the form, every task live over the shared
 * /api/events stream) or the detail view (`/tasks/<id>`: one task's stream,
 * its log and result). In per-user mode it first learns who is signed in
 * (asking to sign in when no one is), and shows that name with "Sign out".
 */
import {
  ApiError, isUserMode, loadSession, request, setAuth, setTokenPrompt, signOut, streamUrl, withId,
} from "./api.js";
import { StartForm } from "./form.js";
import { applyEvent, isFinished, merge, toRecord } from "./records.js";
import { EventStream, SharedStream } from "./stream.js";
import {
  $, announce, appendLog, createRow, placeRow, renderElapsed, renderRow, setCancelling,
  showConnection, showError,
} from "./view.js";

/** @typedef {import("./records.js").TaskRecord} TaskRecord */
/** @typedef {import("./stream.js").StreamEvent} StreamEvent */

const app = $(document, "#app");
const urls = /** @type {Record<string, string>} */ ({ ...app.dataset });

setTokenPrompt(promptToken);
setAuth({ mode: urls.auth, sessionUrl: urls.sessionUrl, ticketsUrl: urls.ticketsUrl,
          onSession: showSession });

/** Tasks shown, by id, each with its row. */
const tasks = /** @type {Map<string, {record: TaskRecord, row: HTMLElement}>} */ (new Map());

/** Every tab of this browser shares the cookie, so each hears of sign-in and sign-out. */
const sessionChannel = typeof BroadcastChannel === "undefined"
  ? null : new BroadcastChannel("taskstream-session");
/** Who this page shows the tasks of (per-user mode); null until it knows. */
let signedInAs = /** @type {string | null} */ (null);

start();

async function start() {
  if (isUserMode()) await startSession();
  if (urls.view === "detail") startDetail(urls.taskId);
  else startList();
}

// -- the list ----------------------------------------------------------------

async function startList() {
  const list = $(document, "#task-list");
  const actionError = $(document, "#action-error");
  list.addEventListener("click", (event) => {
    const button = /** @type {Element} */ (event.target).closest("button[data-action=cancel]");
    const row = /** @type {HTMLElement | null} */ (button?.closest("[data-task-id]"));
    if (row) cancel(row, actionError);
  });

  const stream = new SharedStream({
    name: "taskstream-events",
    url: (lastEventId) => streamUrl(urls.eventsUrl, lastEventId),
    beforeReopen: checkAccess,
    onState: showConnection,
    onEvent: (event) => onListEvent(event, list),
  });
  watchPage(stream);
  tick();

  try {
    const { task_types: taskTypes } = await request(urls.taskTypesUrl);
    new StartForm(/** @type {HTMLFormElement} */ ($(document, "#start-form")), taskTypes,
      (name, params) => startTask(name, params, list));
  } catch (error) {
    showError($(document, "#form-error"), `Could not load the task types: ${errorText(error)}`);
  }
  await loadRecent(list);
  stream.start();
}

/**
 * @param {string} name
 * @param {Record<string, unknown>} params
 * @param {HTMLElement} list
 */
async function startTask(name, params, list) {
  // The key makes a double submit (or a retry after a lost answer) start one task.
  const record = await request(urls.tasksUrl, {
    method: "POST", body: { name, params }, headers: { "Idempotency-Key": newKey() },
  });
  show(record, list);
  announce(`Started ${record.name} ${record.id.slice(0, 8)}`);
}

/** @param {HTMLElement} list */
async function loadRecent(list) {
  try {
    const { tasks: records } = await request(`${urls.tasksUrl}?limit=50`);
    for (const record of records) show(record, list);
  } catch (error) {
    showError($(document, "#action-error"), `Could not load the tasks: ${errorText(error)}`);
  }
}

/**
 * @param {StreamEvent} event
 * @param {HTMLElement} list
 */
function onListEvent({ type, data }, list) {
  if (type === "snapshot" && Array.isArray(data.tasks)) {
    // A fresh start of the stream (first connect, or the server lost our
    // place, e.g. it restarted): tasks may have finished unseen, so reload.
    for (const record of data.tasks) show(record, list);
    loadRecent(list);
    return;
  }
  if (type === "log") return; // logs are for the detail view
  const held = tasks.get(data.task_id);
  if (!held) {
    if (type === "snapshot" || type === "done") show(toRecord(data), list);
    else fetchRecord(data.task_id, list);
    return;
  }
  update(held, applyEvent(held.record, type, data));
}

const fetching = new Set();

/**
 * A task we heard of mid-way (this tab joined late): fetch it whole once.
 * @param {string} taskId
 * @param {HTMLElement} list
 */
async function fetchRecord(taskId, list) {
  if (fetching.has(taskId)) return;
  fetching.add(taskId);
  try {
    show(await request(withId(urls.taskUrl, taskId)), list);
  } catch {
    // gone already (404) or unreachable: the next event or reload brings it
  } finally {
    fetching.delete(taskId);
  }
}

/**
 * Add a task or merge a whole record into the one we hold.
 * @param {TaskRecord} record
 * @param {HTMLElement} list
 */
function show(record, list) {
  const held = tasks.get(record.id);
  if (held) {
    update(held, merge(held.record, record));
    return;
  }
  const row = createRow(urls.detailUrl);
  renderRow(row, record);
  placeRow(list, row, record.created_at);
  tasks.set(record.id, { record, row });
  const empty = document.getElementById("empty");
  if (empty) empty.hidden = true;
}

/**
 * @param {{record: TaskRecord, row: HTMLElement}} held
 * @param {TaskRecord} record
 */
function update(held, record) {
  const before = held.record.status;
  held.record = record;
  renderRow(held.row, record);
  if (record.status !== before) {
    announce(`${record.name} ${record.id.slice(0, 8)}: ${record.status}`);
    if (!isFinished(before) && isFinished(record.status)) setCancelling(held.row, false);
  }
}

/**
 * @param {HTMLElement} row
 * @param {HTMLElement} errorSlot
 */
async function cancel(row, errorSlot) {
  const taskId = /** @type {string} */ (row.dataset.taskId);
  setCancelling(row, true);
  showError(errorSlot, null);
  try {
    const record = await request(withId(urls.cancelUrl, taskId), { method: "POST" });
    const held = tasks.get(taskId);
    if (held) update(held, merge(held.record, record));
  } catch (error) {
    setCancelling(row, false);
    // 409: it finished first; its done event is on its way, nothing to say.
    if (!(error instanceof ApiError && error.status === 409)) {
      showError(errorSlot, `Could not cancel: ${errorText(error)}`);
    }
  }
}

/** Elapsed times move once a second while tasks run. */
function tick() {
  setInterval(() => {
    const now = Date.now();
    for (const { record, row } of tasks.values()) {
      if (record.status === "running") renderElapsed(row, record, now);
    }
  }, 1000);
}

// -- the detail view ------------------------------------------------------------

/** @param {string} taskId */
async function startDetail(taskId) {
  const list = $(document, "#detail-task");
  const log = $(document, "#log");
  const detailError = $(document, "#detail-error");
  list.addEventListener("click", (event) => {
    const button = /** @type {Element} */ (event.target).closest("button[data-action=cancel]");
    const row = /** @type {HTMLElement | null} */ (button?.closest("[data-task-id]"));
    if (row) cancel(row, detailError);
  });
  try {
    show(await request(withId(urls.taskUrl, taskId)), list);
  } catch (error) {
    showConnection("finished", false);
    showError(detailError, error instanceof ApiError && error.status === 404
      ? "There is no task with this id (it may have been removed)."
      : `Could not load the task: ${errorText(error)}`);
    return;
  }
  $(document, "#detail-heading").textContent = `Task ${taskId.slice(0, 8)}`;
  const stream = new EventStream({
    // lastEventId=0 asks for the whole history the server holds, logs included.
    url: (lastEventId) => streamUrl(withId(urls.taskEventsUrl, taskId), lastEventId, { taskId }),
    lastEventId: 0,
    endsAtDone: true,
    beforeReopen: checkAccess,
    onState: (state) => showConnection(state, false),
    onEvent: ({ type, data }) => {
      if (type === "log") appendLog(log, data);
      else show(applyEvent(tasks.get(taskId)?.record ?? toRecord(data), type, data), list);
    },
  });
  stream.open();
  watchPage(stream);
  tick();
  // A tab in the background gives its connection back (six per site).
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") stream.close();
    else stream.recheck();
  });
}

// -- the page as a whole ----------------------------------------------------------

/**
 * Re-check the stream when the page comes back from the back-forward cache
 * (it looks connected but is not, PITFALLS 15) and when the network returns.
 * @param {{recheck(): void, markOffline(): void}} stream
 */
function watchPage(stream) {
  addEventListener("pageshow", (event) => {
    if (event.persisted) stream.recheck();
  });
  addEventListener("online", () => stream.recheck());
  addEventListener("offline", () => stream.markOffline());
}

/** Before reopening a refused stream: a 401 there means ask for the token. */
async function checkAccess() {
  try {
    await request(`${urls.tasksUrl}?limit=1`);
  } catch {
    // unreachable: the stream's own backoff tries again
  }
}

/**
 * Ask for the API token (user mode: the person's own, to sign in) in the page's dialog.
 * @param {string} reason the server's message
 * @param {import("./api.js").PromptContext} context
 * @returns {Promise<string | null>}
 */
function promptToken(reason, { wasRefused }) {
  const dialog = /** @type {HTMLDialogElement} */ ($(document, "#token-dialog"));
  const input = /** @type {HTMLInputElement} */ ($(dialog, "#token-input"));
  showError($(dialog, "#token-error"), wasRefused ? `That token was refused: ${reason}` : null);
  input.value = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(input.value.trim() || null), { once: true });
    dialog.showModal();
  });
}

// -- per-user mode: who is signed in ---------------------------------------------

/** Learn the session (a 401 asks to sign in) and offer "Sign out". */
async function startSession() {
  $(document, "#sign-out").addEventListener("click", async () => {
    try {
      await signOut();
    } finally {
      location.reload(); // shows no one's tasks, and asks to sign in
    }
  });
  sessionChannel?.addEventListener("message", ({ data }) => {
    const dialog = /** @type {HTMLDialogElement} */ ($(document, "#token-dialog"));
    // Another tab signed out, or in as someone else: this page shows the wrong
    // tasks (or still asks for a sign-in that has happened).
    if (data.user !== signedInAs && (signedInAs !== null || dialog.open)) location.reload();
  });
  try {
    await loadSession();
  } catch {
    // declined or unreachable: each call below asks again or shows its error
  }
}

/**
 * Show who is signed in; a different person than before means this page
 * holds someone else's tasks: start afresh.
 * @param {import("./api.js").Session | null} session
 * @param {import("./api.js").Session | null} previous
 */
function showSession(session, previous) {
  const user = session ? session.user : null;
  signedInAs = user;
  const account = $(document, "#account");
  account.hidden = user === null;
  $(account, "#account-user").textContent = user ?? "";
  if (user !== (previous ? previous.user : null)) sessionChannel?.postMessage({ user });
  if (previous && user !== null && user !== previous.user) location.reload();
}

function newKey() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16)).join("");
}

/** @param {unknown} error */
function errorText(error) {
  return error instanceof Error ? error.message : String(error);
}
