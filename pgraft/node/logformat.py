"""How a node process writes its log: the human format (the default) or the launcher's.

``pgraft serve --log-format human`` (default)::

    2026-05-09 07:35:25,123 INFO pgraft.node: node 1 listening on 127.0.0.1:7001 (...)

``pgraft serve --log-format launcher`` is what the PostgreSQL launcher (the C background
worker in ``postgres/``) runs: every record is **one line** on stderr::

    LEVEL:logger-name: text

``LEVEL`` is one of ``DEBUG INFO WARNING ERROR CRITICAL`` (a record of another numeric level
gets the name of the next lower of these, so the prefix is always one of the five); the text
is the message plus, when there is one, a newline and the formatted traceback (or stack).
Inside ``logger-name: text`` a backslash is written ``\\\\`` and a newline ``\\n`` (backslash,
n), nothing else is changed, and there is no timestamp: PostgreSQL adds its own prefix. The
launcher undoes the two escapes and ereports each record (DEBUG -> DEBUG1, INFO -> LOG,
WARNING/ERROR/CRITICAL -> WARNING); any line without one of the five prefixes (a stray print,
an interpreter message) it logs at LOG as it is.

In the launcher format, :mod:`warnings` and exceptions that end a thread are logged through
the same formatter, so they too arrive as one record each.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import TextIO

HUMAN = "human"
LAUNCHER = "launcher"
LOG_FORMATS = (HUMAN, LAUNCHER)

#: The format of ``--log-format human`` (the one ``pgraft serve`` always had).
HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: The launcher's level names, highest first, with the numeric level each starts at.
LAUNCHER_LEVELS = ((logging.CRITICAL, "CRITICAL"), (logging.ERROR, "ERROR"),
                   (logging.WARNING, "WARNING"), (logging.INFO, "INFO"),
                   (logging.DEBUG, "DEBUG"))


def launcher_level(levelno: int) -> str:
    """The launcher's name of a numeric level: the highest of the five at or below it
    (DEBUG for anything below DEBUG)."""
    for start, name in LAUNCHER_LEVELS:
        if levelno >= start:
            return name
    return "DEBUG"


def escape(text: str) -> str:
    """``\\`` -> ``\\\\`` and newline -> ``\\n``: the text fits on one line, reversibly."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def unescape(text: str) -> str:
    """The inverse of :func:`escape` (what the launcher does; used by the tests)."""
    out = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "n":
                out.append("\n")
                i += 2
                continue
            if nxt == "\\":
                out.append("\\")
                i += 2
                continue
        out.append(c)
        i += 1
    return "".join(out)


def launcher_line(level: str, text: str) -> str:
    """One record of the launcher format, without the final newline."""
    return f"{level}:{escape(text)}"


class LauncherFormatter(logging.Formatter):
    """``LEVEL:logger-name: message[\\ntraceback]``, escaped onto one line (module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.name}: {record.getMessage()}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text = f"{text}\n{record.exc_text}"
        if record.stack_info:
            text = f"{text}\n{self.formatStack(record.stack_info)}"
        return launcher_line(launcher_level(record.levelno), text)


def configure_logging(level: str | int = "INFO", log_format: str = HUMAN,
                      stream: TextIO | None = None) -> logging.Handler:
    """Send the process's log records to ``stream`` (default stderr) in ``log_format``;
    returns the handler (the root logger's only one afterwards)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {log_format!r} (one of {', '.join(LOG_FORMATS)})")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if log_format == LAUNCHER:
        handler.setFormatter(LauncherFormatter())
    else:
        handler.setFormatter(logging.Formatter(HUMAN_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    if log_format == LAUNCHER:
        logging.captureWarnings(True)
        threading.excepthook = _log_thread_exception
    return handler


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("pgraft").critical(
        "uncaught exception in thread %s", name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback))  # type: ignore[arg-type]
