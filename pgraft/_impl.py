"""Choose the compiled hot paths or their pure-Python twins, once, at import.

``PGRAFT_PUREPYTHON=1`` forces the twins; otherwise the compiled extensions are used when
both import. The twins have the same API and run the same tests.
"""

from __future__ import annotations

import os
from types import ModuleType

core: ModuleType
log: ModuleType

if os.environ.get("PGRAFT_PUREPYTHON", "") not in ("", "0"):
    from . import _core_py as core
    from . import _log_py as log

    IMPLEMENTATION = "pure"
    FALLBACK_REASON = "PGRAFT_PUREPYTHON is set"
else:
    try:
        from . import _core as core  # type: ignore[no-redef]
        from . import _log as log  # type: ignore[no-redef]

        IMPLEMENTATION = "compiled"
        FALLBACK_REASON = ""
    except ImportError as exc:
        from . import _core_py as core
        from . import _log_py as log

        IMPLEMENTATION = "pure"
        FALLBACK_REASON = f"compiled extensions not importable: {exc}"
