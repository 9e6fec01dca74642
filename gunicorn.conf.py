"""gunicorn settings for Taskstream: ``gunicorn -c gunicorn.conf.py server:app``.

Every value can be set from the environment; ``-b HOST:PORT`` (and other
command-line flags) override this file.
"""
import datetime
import logging
import os
import resource
import time

# -- Where to listen -----------------------------------------------------------
# TASKS_BIND wins, else 127.0.0.1:$PORT (8000). Use TASKS_BIND=0.0.0.0:8000 to
# listen on every interface (in a container, behind a proxy).
bind = os.environ.get("TASKS_BIND") or f"127.0.0.1:{os.environ.get('PORT', '8000')}"

# -- Workers -----------------------------------------------------------------------
# One gevent worker holds thousands of streams. The memory backend keeps a
# task's events in its worker, so it runs exactly one (see on_starting).
worker_class = "gevent"
workers = int(os.environ.get("TASKS_WORKERS", "1"))
# gunicorn's default of 1,000 silently stalls connection 1,001.
worker_connections = int(os.environ.get("TASKS_WORKER_CONNECTIONS", "20000"))

# -- Time-outs ---------------------------------------------------------------------
# `timeout` is the worker's heartbeat to the master, not a request limit: a
# gevent worker beats while streams stay open, so a stall here means blocking
# code on the event loop (PITFALLS 2), not a long stream.
timeout = int(os.environ.get("TASKS_WORKER_TIMEOUT", "30"))
# On SIGTERM, running tasks get this long to finish; the rest end `interrupted`.
graceful_timeout = int(os.environ.get("TASKS_GRACEFUL_TIMEOUT", "30"))
keepalive = 5

# -- Logging -------------------------------------------------------------------------
# No query string in the access log: EventSource URLs carry ?token= (PITFALLS 8).
accesslog = os.environ.get("TASKS_ACCESS_LOG") or None
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss'
loglevel = os.environ.get("TASKS_LOG_LEVEL", "info")


def _raise_open_files_limit():
    """Each stream is a file descriptor: lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


_raise_open_files_limit()


def _omit_default_keep_alive_header():
    """HTTP/1.1 connections persist by default, so gunicorn's `Connection:
    keep-alive` says nothing there, and HTTP/2 front ends reject it on a
    stream they pass through (PITFALLS 1). `Connection: close` still goes out."""
    from gunicorn.http import wsgi

    default_headers = wsgi.Response.default_headers

    def without_keep_alive(self):
        headers = default_headers(self)
        if self.req.version >= (1, 1):
            headers = [h for h in headers if h != "Connection: keep-alive\r\n"]
        return headers

    wsgi.Response.default_headers = without_keep_alive


_omit_default_keep_alive_header()


def _send_headers_with_the_body():
    """gunicorn sends a response's headers and its body in two writes; for a
    body in one piece (an API answer) that is two syscalls where one does
    (a few % of every POST /api/tasks). Chunked bodies (streams) are unchanged."""
    from gunicorn import util
    from gunicorn.http import wsgi

    write, send_headers, emit_body = (wsgi.Response.write, wsgi.Response.send_headers,
                                      wsgi.Response._emit_body)

    def write_joined(self, arg):
        if self.headers_sent or self.chunked:
            return write(self, arg)
        self.joined_headers = b""  # send_headers leaves its bytes here
        try:
            return write(self, arg)
        finally:
            headers, self.joined_headers = self.joined_headers, None
            if headers:  # no body bytes went out (HEAD, say): the headers alone
                util.write(self.sock, headers)

    def send_headers_joined(self):
        if self.headers_sent or getattr(self, "joined_headers", None) is None:
            return send_headers(self)
        tosend = self.default_headers()
        tosend.extend(["%s: %s\r\n" % (k, v) for k, v in self.headers])
        self.joined_headers = util.to_bytestring("%s\r\n" % "".join(tosend), "latin-1")
        self.headers_sent = True

    def emit_body_joined(self, data):
        headers = getattr(self, "joined_headers", None)
        if headers:
            self.joined_headers = b""
            data = headers + data
        emit_body(self, data)

    wsgi.Response.write = write_joined
    wsgi.Response.send_headers = send_headers_joined
    wsgi.Response._emit_body = emit_body_joined


_send_headers_with_the_body()


def on_starting(server):
    backend = os.environ.get("TASKS_BACKEND", "memory")
    if backend == "memory" and server.cfg.workers > 1:
        raise SystemExit(
            f"Taskstream: {server.cfg.workers} workers on the memory backend would lose "
            "streams (a stream request can land on a worker that never saw the task). "
            "Run one worker, or set TASKS_BACKEND=redis and TASKS_REDIS_URL for several.")


def post_worker_init(worker):
    engine = getattr(worker.wsgi, "extensions", {}).get("tasks")
    if engine is None:
        return
    import gevent

    engine.recover()  # before the first request: tasks a dead worker left are interrupted

    # gevent accepts up to 100 connections per loop turn, and each costs
    # gunicorn and Flask a few hundred µs: a burst of new streams would hold
    # up fan-out to the open ones. Fewer per turn keeps their latency even.
    from gevent.server import StreamServer

    StreamServer.max_accept = 16

    from tasks import watchdog

    # The engine's lines (task=<id> name=<type> status=...) go to gunicorn's
    # error log, in its format; without this only warnings reach stderr.
    # Our log format shows no thread, and finding it costs a dummy thread
    # object per greenlet under gevent (a third of each log call on S4).
    logging.logThreads = False
    # Nothing reads the spawning stack gevent keeps per greenlet (one per
    # task and per connection): don't collect it.
    gevent.config.track_greenlet_tree = False
    tasks_log = logging.getLogger("tasks")
    if not tasks_log.handlers:
        tasks_log.handlers = list(worker.log.error_log.handlers)
        tasks_log.setLevel(worker.log.error_log.level)
        tasks_log.propagate = False
    # Names any greenlet (and task) that holds the event loop too long (PITFALLS 2).
    watchdog.start(engine.settings.get("TASKS_BLOCK_REPORT", 0))

    # Streams handed over by the app (tasks/handoff.py) never get back to
    # gunicorn's request loop: their access line goes out when they start.
    def log_handed_off(response, environ, seconds):
        worker.log.access(response, response.req, environ, datetime.timedelta(seconds=seconds))

    worker.wsgi.log_access = log_handed_off

    def shut_down_with_worker():
        # gunicorn's SIGTERM handler only clears `alive`; streams never end by
        # themselves, so end them, or the worker waits out its whole grace
        # period (PITFALLS 11). Leave time to send `done` and close.
        while worker.alive:
            gevent.sleep(0.2)
        grace = max(0.0, worker.cfg.graceful_timeout - 3)
        started = time.monotonic()
        engine.shutdown(grace)
        _wait_for_handed_off_streams(worker)
        worker.log.info("Taskstream shut down in %.1f s", time.monotonic() - started)

    worker.tasks_shutdown = gevent.spawn(shut_down_with_worker)


def worker_exit(server, worker):
    # gunicorn's gevent worker leaves as soon as no request handler runs: with
    # tasks still running and no stream open, that is at once. Wait here for
    # the shutdown above, so running tasks get their grace period and end
    # `succeeded` or `interrupted` in their records (the master kills the
    # worker at graceful_timeout anyway).
    shutdown = getattr(worker, "tasks_shutdown", None)
    if shutdown is not None:
        shutdown.join(timeout=worker.cfg.graceful_timeout)


def worker_int(worker):
    # SIGINT and SIGQUIT (gunicorn's quick shutdown) and --reload end a worker
    # 0.1 s after this hook: no grace period, but running tasks still end
    # `interrupted` and their streams still get `done`, in about a second.
    engine = getattr(worker.wsgi, "extensions", {}).get("tasks")
    if engine is not None:
        engine.shutdown(0)
        _wait_for_handed_off_streams(worker)


def _wait_for_handed_off_streams(worker):
    """Streams gunicorn handed over end on their own greenlets: let them write
    their last bytes (done, or a last retry:) before the worker exits."""
    streams = getattr(worker.wsgi, "handed_off", None)
    if streams is not None:
        streams.wait_closed(timeout=2.0)
