"""Small durable-file helpers shared by the log twins, the storage and the snapshot store."""

from __future__ import annotations

import contextlib
import errno
import os

from .errors import StorageError, StorageFull

#: errno values that mean "no space": the file system (or the user's quota) is full.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def fsync_dir(path: str) -> None:
    """Make a directory's entries (created, renamed, removed files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` durably: temp file, fsync, rename, fsync the directory.
    A crash leaves either the old file or the new one, never a mix."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)
    fsync_dir(directory)


def append_at(path: str, size: int, data: bytes) -> int:
    """Write ``data`` at byte ``size`` of the existing file ``path``, first cutting whatever
    follows ``size`` (what an earlier append that failed left), and fdatasync it. Returns the
    new size. A caller that passes the size its last append returned never builds on a
    partial write. FileNotFoundError if ``path`` does not exist."""
    fd = os.open(path, os.O_WRONLY)
    try:
        if os.fstat(fd).st_size != size:
            os.ftruncate(fd, size)
        view = memoryview(data)
        pos = size
        while view:
            n = os.pwrite(fd, view, pos)
            pos += n
            view = view[n:]
        os.fdatasync(fd)
        return pos
    finally:
        os.close(fd)


def truncate_durably(path: str, size: int) -> None:
    """Cut ``path`` to ``size`` bytes and sync it."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def errno_text(exc: OSError) -> str:
    """``"Input/output error (EIO)"``: the errno text and its symbolic name."""
    code = exc.errno
    name = errno.errorcode.get(code, str(code)) if code is not None else "?"
    return f"{exc.strerror or exc} ({name})"


def io_error(what: str, path: str, exc: OSError, *, full: bool = False) -> StorageError:
    """The StorageError for an OSError of ``what`` (e.g. "syncing the log segment") on
    ``path``: it names the file and the errno. With ``full``, ENOSPC/EDQUOT becomes
    :class:`StorageFull` (for writes that changed nothing when they failed)."""
    text = f"{what} {path} failed: {errno_text(exc)}"
    code = errno.errorcode.get(exc.errno, str(exc.errno)) if exc.errno is not None else None
    if full and exc.errno in NO_SPACE:
        return StorageFull(f"{text}: the file system is full; nothing was written", path=path,
                           errno=code)
    return StorageError(text, path=path, errno=code)
