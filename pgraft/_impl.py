"""Choose the compiled hot paths or their pure-Python twins, once.

``PGRAFT_PUREPYTHON=1`` forces the twins; otherwise the compiled extensions are used when
``pgraft._core`` imports. The twins have the same API and run the same tests.

``core`` (codecs, frame decoder) is chosen at import; ``log`` (the durable log) is imported on
first use, in the same flavour: the client in a PostgreSQL backend needs only the frame decoder,
and the log pulls in far more (failpoints, the pure Entry class) than a one-call SQL session
should pay for.

The Raft core (``pgraft.raft``) is one set of ``.py`` sources, compiled beside themselves when
the extensions are built (Cython's pure-Python mode, typed by the ``.pxd`` files there). Python
would import the compiled module before its source; :func:`import_sources_of` makes a package
import its ``.py`` files instead, which ``pgraft.raft`` does whenever the twins are selected.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing only for the type checker: see pgraft/errors.py
if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
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


class _SourcesFinder:
    """Finds the submodules of one package as their ``.py`` sources, never as the compiled
    modules beside them (which need the compiled codec and would mix Message classes)."""

    def __init__(self, package: str, directory: str) -> None:
        self.package = package
        self.directory = directory

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        parent, _, name = fullname.rpartition(".")
        if parent != self.package:
            return None
        source = os.path.join(self.directory, name + ".py")
        if not os.path.isfile(source):
            return None
        from importlib.util import spec_from_file_location

        return spec_from_file_location(fullname, source)


def import_sources_of(package: str, directory: str) -> None:
    """From now on, import the submodules of ``package`` (whose files are in ``directory``)
    from their ``.py`` sources. Called by the package's ``__init__`` before it imports any."""
    if not any(isinstance(f, _SourcesFinder) and f.package == package for f in sys.meta_path):
        sys.meta_path.insert(0, _SourcesFinder(package, directory))


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
