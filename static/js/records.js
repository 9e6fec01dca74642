// @ts-check
/**
 * Task records in the page: applying stream events to them, and the words
 * and numbers shown for them. Pure functions, no DOM, no IO.
 */

/**
 * @typedef {{current: number, total: number | null, percent: number | null,
 *            message: string | null, rate: number | null, eta: number | null}} Progress
 * @typedef {{id: string, name: string, params: Record<string, unknown>, status: string,
 *            progress: Progress, result: unknown, error: {type: string, message: string} | null,
 *            created_at: string, started_at: string | null, finished_at: string | null}} TaskRecord
 */

export const FINISHED = new Set(["succeeded", "failed", "cancelled", "interrupted"]);

/** @param {string} status */
export function isFinished(status) {
  return FINISHED.has(status);
}

/** @param {string} status */
export function isCancellable(status) {
  return status === "queued" || status === "running";
}

/**
 * A record as the API sends it, without the event's `task_id` and `ts`.
 * @param {any} data
 * @returns {TaskRecord}
 */
export function toRecord(data) {
  const { task_id: _taskId, ts: _ts, ...record } = data;
  return record;
}

/**
 * The record after one event about it (`status`, `progress` or `done`).
 * @param {TaskRecord} record
 * @param {string} type
 * @param {any} data
 * @returns {TaskRecord}
 */
export function applyEvent(record, type, data) {
  if (type === "snapshot" || type === "done") return merge(record, toRecord(data));
  if (isFinished(record.status)) return record; // late events never reopen a task
  if (type === "status") {
    const startedAt = record.started_at ?? (data.status === "running" ? isoFromTs(data.ts) : null);
    return { ...record, status: data.status, started_at: startedAt };
  }
  if (type === "progress") {
    const { current, total, percent, message, rate, eta } = data;
    return { ...record, progress: { current, total, percent, message, rate, eta } };
  }
  return record;
}

/** @param {string} status 0 queued, 1 running, 2 finished */
function stage(status) {
  return isFinished(status) ? 2 : status === "running" ? 1 : 0;
}

/**
 * Combine what we hold with a record fetched or received whole. A record
 * fetched a moment ago may be older than the events already applied, so
 * neither the status nor the progress moves backwards.
 * @param {TaskRecord | undefined} held
 * @param {TaskRecord} fresh
 * @returns {TaskRecord}
 */
export function merge(held, fresh) {
  if (!held) return fresh;
  if (stage(fresh.status) < stage(held.status)) return held;
  if (stage(fresh.status) === stage(held.status) && !isFinished(fresh.status)
      && fresh.progress.current < held.progress.current) {
    return { ...fresh, progress: held.progress };
  }
  return fresh;
}

/** @param {number} ts Unix seconds */
function isoFromTs(ts) {
  return new Date((ts || Date.now() / 1000) * 1000).toISOString();
}

/**
 * Seconds as a short duration: "0.4 s", "12 s", "3 min 04 s", "2 h 05 min".
 * @param {number} seconds
 */
export function formatDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "";
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
}

/**
 * Seconds the task has run (until now, or until it finished).
 * @param {TaskRecord} record
 * @param {number} now milliseconds
 */
export function elapsedSeconds(record, now) {
  if (!record.started_at) return null;
  const end = record.finished_at ? Date.parse(record.finished_at) : now;
  return Math.max(0, (end - Date.parse(record.started_at)) / 1000);
}

/** @param {number} n */
export function formatNumber(n) {
  return n.toLocaleString("en-US", { maximumFractionDigits: 2 });
}

/**
 * What a finished task came to, as one line of text.
 * @param {TaskRecord} record
 */
export function outcomeText(record) {
  if (record.error) return `${record.error.type}: ${record.error.message}`;
  if (record.status === "succeeded") return `Result: ${JSON.stringify(record.result)}`;
  if (record.status === "cancelled") return "Cancelled.";
  if (record.status === "interrupted") return "Interrupted: the server stopped before the task finished.";
  return "";
}
