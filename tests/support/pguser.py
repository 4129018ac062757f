"""Run a Python function as another OS user (the PostgreSQL one), from a test running as root.

PostgreSQL refuses to run as root, and the postgres user may not be able to read the
interpreter's files (in CI the checkout, here the Python installation under /root). So
:func:`run_as` forks this already-running interpreter, drops to the user in the child, runs
the function there and sends its pickled result (or exception) back through a pipe. Import
every module the function needs before calling it: the child may be unable to import more.
"""

from __future__ import annotations

import os
import pickle
import pwd
import select
import signal
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")


class ChildFailed(RuntimeError):
    """The child died, or its exception could not be pickled (the message has its text)."""


def current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def _become(user: str, workdir: str | None) -> None:
    pw = pwd.getpwnam(user)
    if os.geteuid() != pw.pw_uid:
        os.setgid(pw.pw_gid)
        os.initgroups(user, pw.pw_gid)
        os.setuid(pw.pw_uid)
    os.environ["HOME"] = pw.pw_dir
    os.environ["USER"] = os.environ["LOGNAME"] = user
    for candidate in (workdir, pw.pw_dir, tempfile.gettempdir(), "/"):
        if candidate:
            try:
                os.chdir(candidate)
                return
            except OSError:
                continue


def _child(write_fd: int, user: str, workdir: str | None, fn: Callable[..., Any],
           args: tuple[Any, ...]) -> None:
    try:
        _become(user, workdir)
        payload: tuple[bool, Any] = (True, fn(*args))
    except BaseException as exc:
        exc.add_note(f"in the child running as {user}:\n{traceback.format_exc()}")
        payload = (False, exc)
    try:
        data = pickle.dumps(payload)
    except Exception:
        text = payload[1] if payload[0] else "its result"
        data = pickle.dumps((False, ChildFailed(f"cannot pickle {text!r}:\n"
                                                f"{traceback.format_exc()}")))
    view = memoryview(data)
    while view:
        view = view[os.write(write_fd, view):]


def run_as(user: str, fn: Callable[..., _T], *args: Any, timeout: float = 120,
           workdir: str | None = None) -> _T:
    """``fn(*args)`` in a forked child running as ``user`` (setgid, initgroups, setuid; no
    change if we already are that user), in ``workdir`` (else the user's home, else the
    temporary directory). Returns its result or raises its exception (with the child's
    traceback as a note); kills the child and raises TimeoutError after ``timeout`` s."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into the test runner
        code = 0
        try:
            os.close(read_fd)
            _child(write_fd, user, workdir, fn, args)
        except BaseException:
            code = 70
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                raise TimeoutError(f"{getattr(fn, '__name__', fn)} as {user} did not finish "
                                   f"within {timeout:g} s (killed)")
            ready, _, _ = select.select([read_fd], [], [], left)
            if ready:
                chunk = os.read(read_fd, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    if not chunks:
        raise ChildFailed(f"{getattr(fn, '__name__', fn)} as {user}: the child exited "
                          f"without an answer (wait status {status})")
    ok, value = pickle.loads(b"".join(chunks))
    if ok:
        return value  # type: ignore[no-any-return]
    raise value
