"""Choose the compiled hot paths or their pure-Python twins, once.

``PGRAFT_PUREPYTHON=1`` forces the twins; otherwise the compiled extensions are used when
``pgraft._core`` imports. The twins have the same API and run the same tests.

``core`` (codecs, frame decoder) is chosen at import; ``log`` (the durable log) is imported on
first use, in the same flavour: the client in a PostgreSQL backend needs only the frame decoder,
and the log pulls in far more (failpoints, the pure Entry class) than a one-call SQL session
should pay for.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing only for the type checker: see pgraft/errors.py
if TYPE_CHECKING:
    from types import ModuleType


def _import(name: str) -> ModuleType:
    # __import__ + sys.modules, not importlib.import_module: a PostgreSQL backend's Python has
    # not imported importlib (nor warnings, which it imports), and the client must not pay
    # for them on the first call of a session.
    __import__(name)
    return sys.modules[name]


def _select() -> tuple[ModuleType, str, str]:
    if os.environ.get("PGRAFT_PUREPYTHON", "") not in ("", "0"):
        reason = "PGRAFT_PUREPYTHON is set"
    else:
        try:
            return _import("pgraft._core"), "compiled", ""
        except ImportError as exc:
            reason = f"compiled extensions not importable: {exc}"
    return _import("pgraft._core_py"), "pure", reason


core, IMPLEMENTATION, FALLBACK_REASON = _select()


def __getattr__(name: str) -> ModuleType:
    if name != "log":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if IMPLEMENTATION == "pure":
        module = _import("pgraft._log_py")
    else:
        # Both or neither: a compiled log with a pure core would mix Entry classes.
        try:
            module = _import("pgraft._log")
        except ImportError as exc:
            raise ImportError(f"pgraft._core is compiled but pgraft._log cannot be imported "
                              f"({exc}); rebuild the extensions (make build) or set "
                              "PGRAFT_PUREPYTHON=1") from exc
    globals()["log"] = module
    return module
