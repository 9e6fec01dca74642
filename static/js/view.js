// @ts-check
/**
 * The DOM: task rows cloned from `<template id="task-row">`, the log, the
 * connection badge and the live region. Task text only ever goes in through
 * `textContent`, so `<img src=x onerror=alert(1)>` stays those characters.
 */
import {
  elapsedSeconds, formatDuration, formatNumber, isCancellable, isFinished, outcomeText,
} from "./records.js";

/** @typedef {import("./records.js").TaskRecord} TaskRecord */

/**
 * @template {Element} [T=HTMLElement]
 * @param {ParentNode} root
 * @param {string} selector
 * @returns {T}
 */
export function $(root, selector) {
  const element = root.querySelector(selector);
  if (!element) throw new Error(`missing element: ${selector}`);
  return /** @type {T} */ (element);
}

/** @param {string} id */
function cloneTemplate(id) {
  const template = /** @type {HTMLTemplateElement} */ (document.getElementById(id));
  return /** @type {HTMLElement} */ (template.content.firstElementChild?.cloneNode(true));
}

/** @type {Record<string, string>} */
const STATE_TEXT = {
  connecting: "Connecting…",
  connected: "Live",
  reconnecting: "Connection lost, reconnecting…",
  offline: "Offline: waiting for the network",
  finished: "Task finished; stream closed",
};

/**
 * Show the stream's state in the header.
 * @param {string} state
 * @param {boolean} shared the stream is held by another tab
 */
export function showConnection(state, shared) {
  const element = $(document, "#connection");
  element.dataset.state = state;
  element.dataset.shared = String(shared);
  const text = STATE_TEXT[state] ?? state;
  $(element, ".connection-text").textContent =
    shared && state === "connected" ? `${text} (shared with another tab)` : text;
}

/** @param {string} text said by screen readers, politely */
export function announce(text) {
  const region = $(document, "#announcer");
  region.textContent = "";
  // A new text node after a tick makes repeated messages be read again.
  setTimeout(() => { region.textContent = text; }, 50);
}

/**
 * Show or hide an error paragraph.
 * @param {HTMLElement} element
 * @param {string | null} message
 */
export function showError(element, message) {
  element.textContent = message ?? "";
  element.hidden = !message;
}

/** @param {string} detailUrl `/tasks/__ID__` */
export function createRow(detailUrl) {
  const row = cloneTemplate("task-row");
  row.dataset.detailUrl = detailUrl;
  return row;
}

/**
 * Bring a row up to date with its record.
 * @param {HTMLElement} row
 * @param {TaskRecord} record
 * @param {number} now milliseconds
 */
export function renderRow(row, record, now = Date.now()) {
  row.dataset.taskId = record.id;
  row.dataset.status = record.status;
  const link = /** @type {HTMLAnchorElement} */ ($(row, ".task-name"));
  link.textContent = record.name;
  link.href = (row.dataset.detailUrl ?? "").replace("__ID__", encodeURIComponent(record.id));
  $(row, ".task-id").textContent = record.id.slice(0, 8);
  $(row, ".badge").textContent = record.status;

  const { current, total, percent, message, rate, eta } = record.progress;
  const bar = /** @type {HTMLProgressElement} */ ($(row, ".task-progress"));
  bar.setAttribute("aria-label", `Progress of ${record.name} ${record.id.slice(0, 8)}`);
  const shownPercent = percent ?? (record.status === "succeeded" ? 100 : null);
  if (shownPercent === null) {
    // no value: an indeterminate bar, unless the task ended without one
    if (isFinished(record.status)) bar.value = 0;
    else bar.removeAttribute("value");
  } else {
    bar.value = shownPercent;
  }
  $(row, ".percent").textContent = shownPercent === null ? "" : `${formatNumber(shownPercent)}%`;
  $(row, ".count").textContent =
    total === null ? (current ? formatNumber(current) : "") : `${formatNumber(current)} / ${formatNumber(total)}`;
  $(row, ".rate").textContent = rate === null || isFinished(record.status) ? "" : `${formatNumber(rate)}/s`;
  $(row, ".eta").textContent =
    eta === null || isFinished(record.status) ? "" : `ETA ${formatDuration(eta)}`;
  $(row, ".task-message").textContent = message ?? "";
  renderElapsed(row, record, now);

  const outcome = $(row, ".task-outcome");
  outcome.textContent = outcomeText(record);
  outcome.hidden = !outcome.textContent;
  outcome.classList.toggle("is-error", Boolean(record.error));

  const cancel = /** @type {HTMLButtonElement} */ ($(row, ".cancel"));
  cancel.hidden = !isCancellable(record.status);
  cancel.setAttribute("aria-label", `Cancel ${record.name} ${record.id.slice(0, 8)}`);
}

/**
 * @param {HTMLElement} row
 * @param {TaskRecord} record
 * @param {number} now
 */
export function renderElapsed(row, record, now) {
  const seconds = elapsedSeconds(record, now);
  $(row, ".elapsed").textContent = seconds === null ? "" : `${formatDuration(seconds)} elapsed`;
}

/**
 * Set the cancel button's look while a cancel request is under way.
 * @param {HTMLElement} row
 * @param {boolean} busy
 */
export function setCancelling(row, busy) {
  const cancel = /** @type {HTMLButtonElement} */ ($(row, ".cancel"));
  cancel.disabled = busy;
  cancel.textContent = busy ? "Cancelling…" : "Cancel";
}

/**
 * Put a row in the list at its place: newest first by creation time.
 * @param {HTMLElement} list
 * @param {HTMLElement} row
 * @param {string} createdAt
 */
export function placeRow(list, row, createdAt) {
  row.dataset.createdAt = createdAt;
  for (const other of /** @type {HTMLCollectionOf<HTMLElement>} */ (list.children)) {
    if (other !== row && (other.dataset.createdAt ?? "") < createdAt) {
      list.insertBefore(row, other);
      return;
    }
  }
  if (row.parentElement !== list) list.append(row);
}

/**
 * Add a line to a task's log, keeping it scrolled to the end if it was.
 * @param {HTMLElement} log
 * @param {{level: string, message: string, ts: number}} entry
 */
export function appendLog(log, entry) {
  const atEnd = log.scrollHeight - log.scrollTop - log.clientHeight < 24;
  const line = cloneTemplate("log-line");
  const time = $(line, "time");
  const date = new Date(entry.ts * 1000);
  time.textContent = date.toLocaleTimeString("en-GB");
  time.setAttribute("datetime", date.toISOString());
  $(line, ".level").textContent = entry.level;
  line.dataset.level = entry.level;
  $(line, ".message").textContent = entry.message;
  log.append(line);
  if (atEnd) log.scrollTop = log.scrollHeight;
}
