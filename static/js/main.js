// @ts-check
/**
 * Wiring: reads the URLs the template put in `#app`'s data attributes, then
 * runs the list view (`/`: the form, every task live over the shared
 * /api/events stream) or the detail view (`/tasks/<id>`: one task's stream,
 * its log and result).
 */
import { ApiError, getToken, request, setTokenPrompt, streamUrl, withId } from "./api.js";
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

/** Tasks shown, by id, each with its row. */
const tasks = /** @type {Map<string, {record: TaskRecord, row: HTMLElement}>} */ (new Map());

if (urls.view === "detail") startDetail(urls.taskId);
else startList();

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
    url: (lastEventId) => streamUrl(withId(urls.taskEventsUrl, taskId), lastEventId),
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
 * Ask for the API token in the page's dialog.
 * @param {string} reason the server's message
 * @returns {Promise<string | null>}
 */
function promptToken(reason) {
  const dialog = /** @type {HTMLDialogElement} */ ($(document, "#token-dialog"));
  const input = /** @type {HTMLInputElement} */ ($(dialog, "#token-input"));
  const hadToken = Boolean(getToken());
  showError($(dialog, "#token-error"), hadToken ? `That token was refused: ${reason}` : null);
  input.value = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(input.value.trim() || null), { once: true });
    dialog.showModal();
  });
}

function newKey() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16)).join("");
}

/** @param {unknown} error */
function errorText(error) {
  return error instanceof Error ? error.message : String(error);
}
