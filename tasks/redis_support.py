"""What the Redis store and hub share: key names, connections, Lua scripts,
and stream entries <-> ``Event``.

Keys follow Redis Cluster's hash-tag rule: each task's keys share the slot of
``{<task id>}`` (its record, its event stream, its alive flag), so the scripts
that touch them stay single-slot; the indexes and the all-tasks stream share
the slot of ``{<prefix>}``. No script touches both.

Stream entry ids are ``<event id>-0``: our integer event ids (microseconds,
strictly increasing, records.py) are the stream position, so a client's
``Last-Event-ID`` is an ``XRANGE`` bound as it is.
"""
from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Any, Iterator

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .errors import BackendUnavailable
from .events import Event, make_event

log = logging.getLogger("tasks.redis")

#: What Redis can raise: a lost or refused connection, a time-out, or an error
#: reply (out of memory, a read-only replica after a fail-over). Each means
#: "the backend cannot do this now": 503 for the API, back off and retry for
#: the greenlets.
REDIS_ERRORS = (redis.RedisError,)


class Keys:
    """Every key name in one place (see the module docstring for the slots)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        tag = "{" + prefix + "}"
        self.all_tasks = f"{tag}:tasks"               # zset: task id -> created (µs)
        self.global_events = f"{tag}:events"          # stream: /api/events
        self.global_floor = f"{tag}:events:floor"     # id below the stream's first event
        self.control = f"{tag}:control"               # pub/sub: cancel requests

    def status(self, status: str) -> str:
        return "{" + self.prefix + "}:status:" + status  # zset per status

    def owned(self, user: str) -> str:
        return "{" + self.prefix + "}:user:" + user  # zset: a user's task ids (per-user mode)

    def idempotency(self, key: str) -> str:
        return f"{self.prefix}:idem:{key}"

    def record(self, task_id: str) -> str:
        # hash: record (JSON), last_id, floor, done_id, owner
        return f"{self.prefix}:{{{task_id}}}:rec"

    def events(self, task_id: str) -> str:
        return f"{self.prefix}:{{{task_id}}}:events"

    def alive(self, task_id: str) -> str:
        return f"{self.prefix}:{{{task_id}}}:alive"


class Connections:
    """One worker's two pools: short commands (fail fast, for 503s) and the
    blocking readers (``XREAD BLOCK``, pub/sub), which hold a connection each."""

    def __init__(self, url: str, *, prefix: str, max_readers: int, heartbeat: float,
                 event_buffer: int, global_buffer: int, retention: float) -> None:
        self.worker_id = uuid.uuid4().hex
        self.keys = Keys(prefix)
        self.heartbeat = heartbeat
        self.alive_ttl_ms = max(1000, int(heartbeat * 3000))
        self.event_buffer, self.global_buffer = event_buffer, global_buffer
        self.retention = max(1, int(retention))
        # No retries inside redis-py: the API answers 503 at once, and the
        # writer and readers back off themselves.
        common = {"socket_connect_timeout": 1, "retry": Retry(NoBackoff(), 0)}
        self.commands = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(
            url, max_connections=64, timeout=2, socket_timeout=3, **common))
        self.readers = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(
            url, max_connections=max_readers + 1, timeout=2, socket_timeout=15, **common))
        self.scripts = Scripts(self.commands)

    def close(self) -> None:
        self.commands.close()
        self.readers.close()
        self.commands.connection_pool.disconnect()
        self.readers.connection_pool.disconnect()


@contextlib.contextmanager
def backend_errors(doing: str) -> Iterator[None]:
    """Turn a lost Redis into the API's 503 (``backend_unavailable``)."""
    try:
        yield
    except REDIS_ERRORS as exc:
        raise BackendUnavailable(
            f"the task backend (Redis) is unavailable while {doing}: {exc}; retry shortly",
            headers={"Retry-After": "2"}) from None


# -- scripts -----------------------------------------------------------------------
#
# Each touches the keys of one slot only. Ids: ARGV carry candidate ids; the
# scripts keep them strictly above the stream's last entry (or its floor).

_LAST_ID = """
local function last_id(stream, fallback)
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  local id = tonumber(fallback) or 0
  if last[1] then
    local n = tonumber(string.match(last[1][1], '^(%d+)'))
    if n > id then id = n end
  end
  return id
end
"""

# KEYS: record, events, alive. ARGV: record json, status, last id, floor,
# owner, alive ttl ms, maxlen, retention s, done id or '', then (id, type, data)*.
# Writes a batch of a task's events and its live record, unless a reaper that
# thought this worker dead has ended the task. Returns 0 (reaped), 1, or 2
# when the record had vanished (Redis lost its data): the caller re-indexes.
FLUSH_TASK = _LAST_ID + """
if redis.call('HEXISTS', KEYS[1], 'reaped') == 1 then return 0 end
local top = last_id(KEYS[2], 0)
for i = 10, #ARGV, 3 do
  if tonumber(ARGV[i]) > top then  -- a retry after a lost reply resends a batch
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], ARGV[i] .. '-0',
               't', ARGV[i + 1], 'd', ARGV[i + 2])
  end
end
local fresh = redis.call('HSETNX', KEYS[1], 'floor', ARGV[4])
redis.call('HSET', KEYS[1], 'record', ARGV[1], 'status', ARGV[2], 'last_id', ARGV[3],
           'owner', ARGV[5])
if ARGV[9] ~= '' then
  redis.call('HSET', KEYS[1], 'done_id', ARGV[9])
  redis.call('EXPIRE', KEYS[2], ARGV[8])
  redis.call('DEL', KEYS[3])
else
  redis.call('SET', KEYS[3], ARGV[5], 'PX', ARGV[6])
end
return 1 + fresh
"""

# KEYS: global events, global floor. ARGV: now µs, maxlen, then (type, task, owner, data)*.
# Every worker appends here: ids are max(last + 1, now), computed inside Redis.
APPEND_GLOBAL = _LAST_ID + """
local floor = redis.call('GET', KEYS[2])
if not floor then
  floor = tostring(tonumber(ARGV[1]) - 1)
  redis.call('SET', KEYS[2], floor)
end
local id = last_id(KEYS[1], floor)
local now = tonumber(ARGV[1])
local ids = {}
for i = 3, #ARGV, 4 do
  id = math.max(id + 1, now)
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], string.format('%d-0', id),
             't', ARGV[i], 'k', ARGV[i + 1], 'o', ARGV[i + 2], 'd', ARGV[i + 3])
  ids[#ids + 1] = string.format('%d', id)
end
return ids
"""

# KEYS: record, events, alive. ARGV: old record json, new record json, status
# data, done data, now µs, maxlen, retention s. Ends a task whose worker died:
# only if its alive key is gone and its record is still what the reaper read.
INTERRUPT = _LAST_ID + """
if redis.call('EXISTS', KEYS[3]) == 1 then return false end
if redis.call('HGET', KEYS[1], 'record') ~= ARGV[1] then return false end
local id = last_id(KEYS[2], redis.call('HGET', KEYS[1], 'last_id'))
id = math.max(id + 1, tonumber(ARGV[5]))
local status_id, done_id = string.format('%d', id), string.format('%d', id + 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], status_id .. '-0', 't', 'status', 'd', ARGV[3])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], done_id .. '-0', 't', 'done', 'd', ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[7])
redis.call('HSET', KEYS[1], 'record', ARGV[2], 'status', 'interrupted',
           'last_id', done_id, 'done_id', done_id, 'reaped', '1')
return {status_id, done_id}
"""

# KEYS: record. ARGV: record json, status, done id or ''. A store save, unless
# a reaper ended the task (a worker cut off from Redis, thought dead, came back)
# or it would turn a finished record back (an older save landing after the
# hub's final write).
SAVE_RECORD = """
if redis.call('HEXISTS', KEYS[1], 'reaped') == 1 then return 0 end
local status = redis.call('HGET', KEYS[1], 'status')
local finished = status and status ~= 'queued' and status ~= 'running'
if finished and (ARGV[2] == 'queued' or ARGV[2] == 'running') then return 0 end
redis.call('HSET', KEYS[1], 'record', ARGV[1], 'status', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'done_id', ARGV[3]) end
return 1
"""


class Scripts:
    def __init__(self, client: redis.Redis) -> None:
        self.flush_task = client.register_script(FLUSH_TASK)
        self.append_global = client.register_script(APPEND_GLOBAL)
        self.interrupt = client.register_script(INTERRUPT)
        self.save_record = client.register_script(SAVE_RECORD)


# -- stream entries ------------------------------------------------------------------

def entry_id(event_id: int) -> str:
    return f"{event_id}-0"


def parse_entry_id(raw: bytes | str) -> int:
    text = raw.decode() if isinstance(raw, bytes) else raw
    return int(text.split("-", 1)[0])


def to_event(raw_id: bytes, fields: dict[bytes, bytes], task_id: str | None) -> Event:
    """A stream entry as an ``Event`` (its frame encoded once per worker)."""
    named = fields.get(b"k")  # the all-tasks stream names each event's task
    owner = fields.get(b"o")  # and, in per-user mode, its owner
    return make_event(parse_entry_id(raw_id), fields[b"t"].decode(),
                      named.decode() if named is not None else task_id, fields[b"d"],
                      owner.decode() or None if owner is not None else None)


def stream_holds(info: Any, *, floor: int, after: int) -> bool:
    """Whether a stream still holds every event after ``after``: while nothing
    was trimmed, any earlier id (``Last-Event-ID: 0``) replays the whole
    history, as on the memory backend; after trimming, not below its floor
    and past its first entry."""
    if not isinstance(info, dict):
        return False
    last = parse_entry_id(info["last-generated-id"])
    if after > last:
        return False  # an id from the future (another deployment): start afresh
    if info.get("entries-added", 0) <= info.get("length", 0):
        return True
    first = info.get("first-entry")
    return after >= floor and first is not None and after >= parse_entry_id(first[0])
