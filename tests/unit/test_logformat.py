"""pgraft.node.logformat: the launcher format of ``pgraft serve --log-format launcher`` (one
``LEVEL:logger: text`` line per record, backslash and newline escaped) and the human default."""

from __future__ import annotations

import io
import logging
import re
import sys
import threading
import warnings
from collections.abc import Iterator

import pytest

from pgraft.node.logformat import (
    HUMAN,
    LAUNCHER,
    LauncherFormatter,
    configure_logging,
    escape,
    launcher_level,
    unescape,
)

LINE = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL):(.*)$")


def _record(msg: str, *args: object, level: int = logging.INFO, name: str = "pgraft.node",
            exc_info: object = None) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)  # type: ignore[arg-type]


def _parse(line: str) -> tuple[str, str]:
    m = LINE.match(line)
    assert m, line
    return m.group(1), unescape(m.group(2))


def test_one_line_with_level_and_logger_name() -> None:
    line = LauncherFormatter().format(_record("node %d listening on %s", 1, "127.0.0.1:7001"))
    assert line == "INFO:pgraft.node: node 1 listening on 127.0.0.1:7001"


@pytest.mark.parametrize(("text", "escaped"), [
    ("a\\b", "a\\\\b"),
    ("a\nb", "a\\nb"),
    ("ends with a backslash\\", "ends with a backslash\\\\"),
    ("\\n is not a newline", "\\\\n is not a newline"),
    ("\n\n", "\\n\\n"),
    ("tab\tand\rcr stay", "tab\tand\rcr stay"),
    ("", ""),
])
def test_escaping_is_reversible_and_leaves_one_line(text: str, escaped: str) -> None:
    assert escape(text) == escaped
    assert "\n" not in escape(text)
    assert unescape(escape(text)) == text
    line = LauncherFormatter().format(_record("%s", text, name="x"))
    assert line == f"INFO:x: {escaped}"
    assert _parse(line) == ("INFO", f"x: {text}")


def test_a_message_cannot_forge_a_record() -> None:
    line = LauncherFormatter().format(_record("evil\nERROR:pgraft.node: fake", level=logging.DEBUG))
    assert "\n" not in line
    assert line.startswith("DEBUG:pgraft.node: evil\\nERROR:")


@pytest.mark.parametrize(("levelno", "name"), [
    (logging.DEBUG, "DEBUG"), (logging.INFO, "INFO"), (logging.WARNING, "WARNING"),
    (logging.ERROR, "ERROR"), (logging.CRITICAL, "CRITICAL"),
    (1, "DEBUG"), (5, "DEBUG"), (15, "DEBUG"), (25, "INFO"), (35, "WARNING"), (45, "ERROR"),
    (60, "CRITICAL"), (0, "DEBUG"),
])
def test_levels_are_one_of_the_five(levelno: int, name: str) -> None:
    assert launcher_level(levelno) == name
    line = LauncherFormatter().format(_record("m", level=levelno))
    assert line == f"{name}:pgraft.node: m"


def test_traceback_follows_the_message_escaped() -> None:
    try:
        raise ValueError("bad\\value\nsecond line")
    except ValueError:
        record = _record("the Ready loop failed", level=logging.ERROR, exc_info=sys.exc_info())
    line = LauncherFormatter().format(record)
    assert "\n" not in line
    level, text = _parse(line)
    assert level == "ERROR"
    lines = text.split("\n")
    assert lines[0] == "pgraft.node: the Ready loop failed"
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-2:] == ["ValueError: bad\\value", "second line"]
    assert any("test_traceback_follows_the_message_escaped" in x for x in lines)


def test_stack_info_follows_too() -> None:
    record = _record("where", level=logging.WARNING)
    record.stack_info = "Stack (most recent call last):\n  File \"x.py\", line 1"
    level, text = _parse(LauncherFormatter().format(record))
    assert level == "WARNING"
    assert text == "pgraft.node: where\nStack (most recent call last):\n  File \"x.py\", line 1"


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    hook = threading.excepthook
    try:
        yield
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in handlers:
            root.addHandler(h)
        root.setLevel(level)
        threading.excepthook = hook
        logging.captureWarnings(False)


def test_configure_launcher_logging(root_logging: None) -> None:
    out = io.StringIO()
    configure_logging("DEBUG", LAUNCHER, out)
    logging.getLogger("pgraft.node").debug("a\nb")
    logging.getLogger("pgraft.storage").error("c\\d")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("careful\nnow", UserWarning, stacklevel=1)
    t = threading.Thread(target=lambda: 1 / 0, name="worker")
    t.start()
    t.join()
    lines = out.getvalue().split("\n")
    assert lines[-1] == ""
    records = [_parse(x) for x in lines[:-1]]
    assert records[0] == ("DEBUG", "pgraft.node: a\nb")
    assert records[1] == ("ERROR", "pgraft.storage: c\\d")
    assert records[2][0] == "WARNING" and records[2][1].startswith("py.warnings: ")
    assert "UserWarning: careful\nnow" in records[2][1]
    assert records[3][0] == "CRITICAL"
    assert records[3][1].startswith("pgraft: uncaught exception in thread worker\nTraceback")
    assert records[3][1].endswith("ZeroDivisionError: division by zero")
    assert len(records) == 4


def test_configure_human_logging_is_the_old_format(root_logging: None) -> None:
    out = io.StringIO()
    configure_logging("INFO", HUMAN, out)
    logging.getLogger("pgraft.node").debug("not shown")
    logging.getLogger("pgraft.node").info("node %d stopped", 1)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO pgraft.node: node 1 "
                        r"stopped\n", out.getvalue())
    with pytest.raises(ValueError, match="unknown log format 'json'"):
        configure_logging("INFO", "json", out)
