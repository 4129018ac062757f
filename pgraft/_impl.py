"""Choose the compiled hot paths or their pure-Python twins, once, at import.

``PGRAFT_PUREPYTHON=1`` forces the twins; otherwise the compiled extensions are used when
both import. The twins have the same API and run the same tests.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def _select() -> tuple[ModuleType, ModuleType, str, str]:
    if os.environ.get("PGRAFT_PUREPYTHON", "") not in ("", "0"):
        reason = "PGRAFT_PUREPYTHON is set"
    else:
        try:  # both or neither: a compiled log with a pure core would mix Entry classes
            return (importlib.import_module("pgraft._core"),
                    importlib.import_module("pgraft._log"), "compiled", "")
        except ImportError as exc:
            reason = f"compiled extensions not importable: {exc}"
    return (importlib.import_module("pgraft._core_py"),
            importlib.import_module("pgraft._log_py"), "pure", reason)


core, log, IMPLEMENTATION, FALLBACK_REASON = _select()
