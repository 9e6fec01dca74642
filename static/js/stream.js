// @ts-check
/**
 * EventSource lifecycle, and one /api/events connection shared by every tab.
 *
 * `EventStream` wraps one EventSource: the browser reconnects by itself
 * (sending Last-Event-ID); only once the source is CLOSED (an error status
 * such as 401 or 502) do we back off and open a new one with `?lastEventId=`.
 * Events are numbered, so a repeat is dropped (no log line twice).
 *
 * Behind a token (shared or per-user) a stream URL carries a ticket that expires: the server
 * then sends `ticket-expired` and ends the response. We close the source at
 * once (the browser would retry the dead ticket and get 401), ask for a fresh
 * URL and reopen after the last id received, without backing off.
 *
 * `SharedStream` elects one leader tab with the Web Locks API; the leader
 * holds the EventSource and relays every event over a BroadcastChannel:
 *
 *     leader tab:  EventSource ──► handle ──► BroadcastChannel ──► other tabs
 *
 * When the leader's tab closes, its lock is released, the next tab waiting
 * for it opens the stream from the last id it was given, and the server
 * replays what was missed. Browsers allow about six HTTP/1.1 connections per
 * site; this way a seventh tab costs none.
 */

export const EVENT_TYPES = ["snapshot", "status", "progress", "log", "done"];
/** Sent without an id, just before a ticketed stream ends (API.md). */
export const TICKET_EXPIRED = "ticket-expired";

/**
 * @typedef {{type: string, id: number, data: any}} StreamEvent
 * @typedef {"connecting" | "connected" | "reconnecting" | "offline" | "finished"} StreamState
 * @typedef {(lastEventId: number | null) => string | Promise<string>} StreamUrl
 *   may fetch (a ticket) before it knows the URL
 */

/** The one place an EventSource is made, so tests may swap it. */
export let createEventSource = (/** @type {string} */ url) => new EventSource(url);

/** @param {(url: string) => EventSource} factory */
export function setEventSourceFactory(factory) {
  createEventSource = factory;
}

const MAX_BACKOFF_MS = 30000;

export class EventStream {
  /**
   * @param {object} options
   * @param {StreamUrl} options.url the stream URL, resuming after an id
   * @param {(event: StreamEvent) => void} options.onEvent
   * @param {(state: StreamState) => void} options.onState
   * @param {() => Promise<void>} [options.beforeReopen] runs before a closed source is reopened (e.g. to ask for a token)
   * @param {boolean} [options.endsAtDone] a task's stream: close for good after `done`
   * @param {number | null} [options.lastEventId] resume after this id
   */
  constructor({ url, onEvent, onState, beforeReopen = async () => {}, endsAtDone = false,
                lastEventId = null }) {
    this.url = url;
    this.onEvent = onEvent;
    this.onState = onState;
    this.beforeReopen = beforeReopen;
    this.endsAtDone = endsAtDone;
    /** @type {number | null} */
    this.lastEventId = lastEventId;
    /** @type {EventSource | null} */
    this.source = null;
    this.failures = 0;
    this.finished = false;
    /** Counts close() calls: an open() that was waiting for its URL gives up if it moved. */
    this.generation = 0;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.timer = undefined;
    /** @type {StreamState} */
    this.state = "connecting";
  }

  async open() {
    this.close();
    if (this.finished) return;
    const generation = this.generation;
    let url;
    try {
      url = await this.url(this.lastEventId);
    } catch {
      // No URL (no ticket: unreachable, or the person declined to sign in).
      if (generation === this.generation) this.retryLater();
      return;
    }
    // Closed, or opened again, while the URL was on its way: that one wins.
    if (generation !== this.generation || this.finished) return;
    const source = createEventSource(url);
    this.source = source;
    source.addEventListener("open", () => {
      this.failures = 0;
      this.setState("connected");
    });
    source.addEventListener("error", () => this.onError(source));
    source.addEventListener(TICKET_EXPIRED, () => this.onTicketExpired(source));
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (event) => this.receive(type, /** @type {MessageEvent} */ (event)));
    }
  }

  /** Stop the source and any pending reopen; `open()` starts again. */
  close() {
    this.generation += 1;
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.source) this.source.close();
    this.source = null;
  }

  /** After bfcache or going back online: make sure a source is really open. */
  recheck() {
    if (this.finished) return;
    if (!navigator.onLine) {
      this.setState("offline");
      return;
    }
    if (!this.source || this.source.readyState === EventSource.CLOSED) {
      this.failures = 0;
      this.open();
    } else {
      this.setState(this.source.readyState === EventSource.OPEN ? "connected" : "reconnecting");
    }
  }

  /** The browser says the network is gone (the `offline` event). */
  markOffline() {
    if (!this.finished) this.setState("offline");
  }

  /**
   * @param {string} type
   * @param {MessageEvent} message
   */
  receive(type, message) {
    const id = Number(message.lastEventId);
    // A snapshot starts the count afresh (the server may have restarted);
    // anything else at or below the last id is a repeat.
    if (type !== "snapshot" && this.lastEventId !== null && id <= this.lastEventId) return;
    this.lastEventId = Number.isFinite(id) ? id : this.lastEventId;
    let data;
    try {
      data = JSON.parse(message.data);
    } catch {
      return; // the contract says one line of JSON; ignore anything else
    }
    if (type === "done" && this.endsAtDone) {
      // API.md: reconnecting after done would get 204; do not even try.
      this.finished = true;
      this.close();
      this.setState("finished");
    }
    this.onEvent({ type, id, data });
  }

  /** @param {EventSource} source */
  onError(source) {
    if (source !== this.source) return;
    if (!navigator.onLine) {
      this.setState("offline");
    } else {
      this.setState("reconnecting");
    }
    if (source.readyState !== EventSource.CLOSED) return; // the browser retries by itself
    this.source = null;
    this.retryLater();
  }

  /**
   * The ticket ran out, nothing went wrong: a fresh URL (a new ticket) and
   * straight back, from the last id received.
   * @param {EventSource} source
   */
  onTicketExpired(source) {
    if (source !== this.source) return;
    this.failures = 0;
    this.open();
  }

  /** Back off, then (after `beforeReopen`) open a new source. */
  retryLater() {
    this.setState(navigator.onLine ? "reconnecting" : "offline");
    this.failures += 1;
    const base = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** Math.min(this.failures - 1, 5));
    const delay = base / 2 + Math.random() * base / 2; // jitter: no reconnect storms
    this.timer = setTimeout(async () => {
      const generation = this.generation;
      try {
        await this.beforeReopen();
      } finally {
        // Unless closed (or opened) while beforeReopen waited, e.g. on a sign-in dialog.
        if (!this.finished && generation === this.generation) this.open();
      }
    }, delay);
  }

  /** @param {StreamState} state */
  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.onState(state);
  }
}

/**
 * The /api/events stream, one per browser: led by one tab, shared by all.
 * Without Web Locks or BroadcastChannel (an insecure context, an old
 * browser) every tab simply holds its own stream.
 */
export class SharedStream {
  /**
   * @param {object} options
   * @param {string} options.name names the lock and the channel
   * @param {StreamUrl} options.url
   * @param {(event: StreamEvent) => void} options.onEvent
   * @param {(state: StreamState, shared: boolean) => void} options.onState
   * @param {() => Promise<void>} [options.beforeReopen]
   */
  constructor({ name, url, onEvent, onState, beforeReopen }) {
    this.name = name;
    this.onEvent = onEvent;
    this.onState = onState;
    this.isLeader = false;
    /** @type {number | null} */
    this.lastEventId = null;
    /** @type {BroadcastChannel | null} */
    this.channel = null;
    this.stream = new EventStream({
      url,
      beforeReopen,
      onEvent: (event) => {
        this.lastEventId = event.id;
        this.channel?.postMessage({ kind: "event", event });
        this.onEvent(event);
      },
      onState: (state) => {
        this.channel?.postMessage({ kind: "state", state });
        this.onState(state, false);
      },
    });
  }

  start() {
    if (!("locks" in navigator) || typeof BroadcastChannel === "undefined") {
      this.lead();
      return;
    }
    this.channel = new BroadcastChannel(this.name);
    this.channel.addEventListener("message", (message) => this.fromChannel(message.data));
    // The lock is held until the tab goes away: the callback's promise never settles.
    navigator.locks.request(this.name, () => {
      this.lead();
      return new Promise(() => {});
    }).catch(() => {
      if (!this.isLeader) this.lead(); // locks refused (e.g. a sandboxed frame): stream alone
    });
    this.channel.postMessage({ kind: "hello" });
  }

  lead() {
    this.isLeader = true;
    this.stream.lastEventId = this.lastEventId;
    this.stream.open();
  }

  /** @param {{kind: string, event?: StreamEvent, state?: import("./stream.js").StreamState}} message */
  fromChannel(message) {
    if (this.isLeader) {
      if (message.kind === "hello") this.channel?.postMessage({ kind: "state", state: this.stream.state });
      return;
    }
    if (message.kind === "state" && message.state) {
      this.onState(message.state, true);
    } else if (message.kind === "event" && message.event) {
      const event = message.event;
      if (event.type !== "snapshot" && this.lastEventId !== null && event.id <= this.lastEventId) return;
      this.lastEventId = event.id;
      this.onEvent(event);
    }
  }

  recheck() {
    if (this.isLeader) this.stream.recheck();
    else this.channel?.postMessage({ kind: "hello" });
  }

  markOffline() {
    if (this.isLeader) this.stream.markOffline();
    else this.onState("offline", false);
  }
}
