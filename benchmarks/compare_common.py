"""Pieces shared by the drivers of ``benchmarks/compare.py`` (pgraft, etcd, PySyncObj).

- :func:`summary`: p50/p99/p99.9/mean/max of latency samples, plus a compact CDF for plots;
- :func:`closed_loop`: an asyncio load loop that keeps ``window`` writes in flight for a fixed
  time and reports writes/s and the client process's CPU use;
- :class:`Processes`: every child process a driver starts, so that each is stopped by its pid
  (SIGTERM, then SIGKILL), also on errors and Ctrl-C;
- :func:`log`, :func:`free_port` (pgraft's, so ports are never handed out twice in one run).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from pgraft.errors import Timeout  # noqa: E402
from pgraft.localcluster import _die_with_parent, free_port, wait_until  # noqa: E402

__all__ = ["PAYLOAD", "Processes", "closed_loop", "cpu_times", "free_port", "log",
           "log_tail", "machine_busy", "summary", "wait_for"]

#: The value every system writes (the issue asks for 64-byte values).
PAYLOAD = b"v" * 64

# Quantiles kept in the JSON for CDF plots: dense in the body, denser in the tail.
_CDF_Q = np.unique(np.concatenate([np.linspace(0.0, 0.99, 199),
                                   np.linspace(0.99, 0.999, 19),
                                   np.linspace(0.999, 1.0, 11)]))


def log(text: str) -> None:
    """Progress goes to stderr, so stdout can carry results."""
    print(text, file=sys.stderr, flush=True)


def log_tail(path: str | os.PathLike[str], lines: int = 15) -> str:
    """The last ``lines`` lines of a child's log file, for error messages (the run's directory
    is removed afterwards)."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def summary(samples_s: Sequence[float], *, cdf: bool = False) -> dict[str, Any]:
    """Latency statistics in milliseconds of ``samples_s`` (seconds); with ``cdf`` also
    ``"cdf": [[ms, fraction], ...]`` at fixed quantiles (enough to draw the curve)."""
    a = np.asarray(samples_s, dtype=float) * 1000.0
    if a.size == 0:
        raise ValueError("no samples")
    out: dict[str, Any] = {
        "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
        "p99_9": float(np.percentile(a, 99.9)), "mean": float(a.mean()),
        "min": float(a.min()), "max": float(a.max()), "n": int(a.size)}
    if cdf:
        values = np.quantile(a, _CDF_Q)
        out["cdf"] = [[round(float(v), 4), round(float(q), 4)]
                      for v, q in zip(values, _CDF_Q, strict=True)]
    return out


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat; (0, 0) where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def machine_busy(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """Share of all CPUs busy between two :func:`cpu_times` readings (None if unknown)."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else None


async def closed_loop(op: Callable[[], Awaitable[Any]], window: int,
                      seconds: float) -> dict[str, Any]:
    """Keep ``window`` calls of ``op`` in flight for ``seconds`` (a new call starts as soon as
    one finishes, none after the deadline); return writes/s counted over the calls that
    succeeded, the failures, the CPU share this client process used meanwhile (1.0 = one core)
    and the share of the whole machine's CPUs that was busy."""
    done = 0
    failed = 0
    first_error: str | None = None
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done, failed, first_error
        while time.perf_counter() < deadline:
            try:
                await op()
            except Exception as exc:  # a failed write is counted, not fatal
                failed += 1
                if first_error is None:
                    first_error = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(0.001)
                continue
            done += 1

    busy0, cpu0, t0 = cpu_times(), time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(window)))
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    return {"in_flight": window, "writes_per_s": done / elapsed, "writes": done,
            "failed": failed, "first_error": first_error, "seconds": elapsed,
            "client_cpu": cpu / elapsed, "machine_cpu_busy": machine_busy(busy0, cpu_times())}


def wait_for(what: str, check: Callable[[], Any], timeout: float,
             interval: float = 0.05) -> Any:
    """Call ``check`` until it returns something truthy; raise TimeoutError naming ``what``
    (and the last exception ``check`` raised) after ``timeout`` seconds."""
    try:
        return wait_until(what, check, timeout, interval, retry_on=(Exception,), truthy=True)
    except Timeout as exc:
        raise TimeoutError(exc.message) from None


class Processes:
    """The child processes one driver started. :meth:`start` records each; :meth:`stop` and
    :meth:`close` end them by pid (SIGTERM, SIGKILL after a grace period). On Linux every
    child also gets SIGKILL if this process dies (PR_SET_PDEATHSIG)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: list[str], *, log_path: str | os.PathLike[str],
              env: dict[str, str] | None = None, stdin: int | None = subprocess.DEVNULL,
              stdout: int | None = None, cwd: str | None = None) -> subprocess.Popen[bytes]:
        """Start ``cmd`` with stderr (and stdout unless given) appended to ``log_path``."""
        with open(log_path, "ab") as logf:
            logf.write(f"==== {' '.join(cmd)}\n".encode())
            logf.flush()
            proc = subprocess.Popen(
                cmd, stdin=stdin, stdout=stdout if stdout is not None else logf,
                stderr=logf, env=env, cwd=cwd,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        self.procs.append(proc)
        return proc

    @staticmethod
    def kill9(proc: subprocess.Popen[bytes]) -> None:
        """``kill -9`` by pid, then reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        """SIGTERM by pid, SIGKILL after ``grace`` seconds; reap it."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill9(proc)

    def close(self) -> None:
        """Stop every process still running (SIGTERM to all, then SIGKILL to the rest)."""
        running = [p for p in self.procs if p.poll() is None]
        for p in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        for p in running:
            try:
                p.wait(max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill9(p)
        self.procs.clear()
