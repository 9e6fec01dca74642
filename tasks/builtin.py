"""The task types every server ships: ``demo``, ``primes`` and ``hash_files``.

They double as examples of the three ways a task spends its time: waiting
(``demo``), computing (``primes``, in the threadpool in chunks) and reading
files (``hash_files``, bytes as progress).
"""
from __future__ import annotations

import hashlib
import math
import os
from typing import Annotated, Any

import gevent
from .context import TaskContext
from .registry import MaxLength, Range, task


@task(title="Demo")
def demo(ctx: TaskContext, *,
         steps: Annotated[int, Range(1, 1_000_000), "How many steps to count"] = 20,
         delay: Annotated[float, Range(0, 60), "Seconds to wait before each step"] = 0.1,
         fail_at: Annotated[int | None, "Raise an error at this step"] = None,
         message: Annotated[str, MaxLength(200), "Progress message prefix"] = "step",
         ) -> dict[str, Any]:
    """Counts steps with a pause before each, reporting progress after every step."""
    ctx.log(f"counting {steps} steps, {delay} s apart")
    ctx.total = steps
    for i in range(1, steps + 1):
        gevent.sleep(delay)  # sleep(0) still yields, so a fast demo never hogs the loop
        if i == fail_at:
            raise RuntimeError(f"failed at step {i}")
        ctx.update(i, message=f"{message} {i}")
    ctx.log(f"counted {steps} steps")
    return {"steps": steps}


_CHUNK = 1_000_000


@task(title="Count primes")
def primes(ctx: TaskContext, *,
           limit: Annotated[int, Range(2, 50_000_000), "Count the primes below this"] = 2_000_000,
           ) -> dict[str, int]:
    """Counts the primes below a limit with a segmented sieve, a chunk at a time
    in a worker thread so streams keep flowing."""
    base = _small_primes(math.isqrt(limit - 1) + 1)
    ctx.total = limit
    ctx.log(f"sieving below {limit:,} in chunks of {_CHUNK:,}")
    count = 0
    for low in range(0, limit, _CHUNK):
        high = min(low + _CHUNK, limit)
        count += ctx.run_blocking(_count_segment, low, high, base)
        ctx.update(high, message=f"{count:,} primes below {high:,}")
    ctx.log(f"found {count:,} primes")
    return {"count": count}


def _small_primes(below: int) -> list[int]:
    sieve = bytearray([1]) * max(below, 2)
    sieve[0:2] = b"\x00\x00"
    for p in range(2, math.isqrt(below - 1) + 1 if below > 2 else 2):
        if sieve[p]:
            sieve[p * p::p] = bytes(len(range(p * p, below, p)))
    return [i for i in range(below) if sieve[i]]


def _count_segment(low: int, high: int, base: list[int]) -> int:
    """Primes in [low, high), given every prime up to sqrt(high)."""
    segment = bytearray([1]) * (high - low)
    for n in range(low, min(high, 2)):
        segment[n - low] = 0
    for p in base:
        if p * p >= high:
            break
        start = max(p * p, (low + p - 1) // p * p)
        segment[start - low::p] = bytes(len(range(start, high, p)))
    return segment.count(1)


_READ_SIZE = 1 << 20


@task(title="Hash files")
def hash_files(ctx: TaskContext, *,
               folder: Annotated[str, MaxLength(1000),
                                 "Folder to hash, relative to TASKS_FILES_ROOT"] = ".",
               algorithm: Annotated[str, MaxLength(20), "sha256, sha1, md5 or blake2b"] = "sha256",
               ) -> dict[str, Any]:
    """Hashes every file under a folder, with progress in bytes, and returns
    one digest for the whole tree (of each file's path and digest)."""
    if algorithm not in ("sha256", "sha1", "md5", "blake2b"):
        raise ValueError(f"algorithm must be sha256, sha1, md5 or blake2b, got {algorithm!r}")
    root = os.path.realpath(ctx.config["TASKS_FILES_ROOT"])
    top = os.path.realpath(os.path.join(root, folder))
    if top != root and not top.startswith(root + os.sep):
        raise ValueError(f"folder {folder!r} is outside TASKS_FILES_ROOT")
    if not os.path.isdir(top):
        raise FileNotFoundError(f"no folder {folder!r} under TASKS_FILES_ROOT")
    files = ctx.run_blocking(_list_files, top)
    ctx.update(0, total=sum(size for _, size in files), message=f"{len(files)} files")
    ctx.log(f"hashing {len(files)} files under {folder}")
    tree = hashlib.new(algorithm)
    for path, _ in files:
        digest = hashlib.new(algorithm)
        relative = os.path.relpath(path, top)
        try:
            with open(path, "rb") as handle:
                while block := ctx.run_blocking(handle.read, _READ_SIZE):
                    digest.update(block)
                    ctx.advance(len(block), message=relative)
        except OSError as exc:
            ctx.log(f"skipped {relative}: {exc.strerror}", level="warning")
            continue
        tree.update(f"{relative}\0{digest.hexdigest()}\n".encode())
    ctx.log(f"tree digest {tree.hexdigest()}")
    return {"files": len(files), "bytes": int(ctx.current), "algorithm": algorithm,
            "digest": tree.hexdigest()}


def _list_files(top: str) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    for folder, dirs, names in os.walk(top):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(folder, name)
            if os.path.isfile(path) and not os.path.islink(path):
                found.append((path, os.path.getsize(path)))
    return found
