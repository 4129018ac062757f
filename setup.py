"""Build the two Cython extensions, pgraft._core (quorum, codec) and pgraft._log (durable log),
and ship the PostgreSQL extension's sources inside the package (pgraft/pg/extension/).

Setting PGRAFT_NO_EXTENSIONS=1 builds a pure-Python package (the twins in _core_py/_log_py).
"""

import glob
import os
import shutil

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

# postgres/ stays the one copy in a checkout; a built package carries these files so that
# `pgraft postgres install` can build the extension with no checkout (pgraft.pg.install).
EXTENSION_SOURCES = ("Makefile", "README.md", "*.c", "*.h", "*.sql", "*.control",
                     "regress.conf.in", "sql/*.sql", "sql/*.psql", "expected/*.out")
EXTENSION_PACKAGE_DIR = os.path.join("pgraft", "pg", "extension")


class build_py_with_extension_sources(build_py):
    def run(self) -> None:
        super().run()
        if not os.path.isfile(os.path.join("postgres", "pgraft.c")):
            raise SystemExit("setup.py: postgres/pgraft.c is missing: the sdist or checkout is "
                             "incomplete (MANIFEST.in must graft postgres/)")
        target = os.path.join(self.build_lib, EXTENSION_PACKAGE_DIR)
        for pattern in EXTENSION_SOURCES:
            for path in glob.glob(os.path.join("postgres", pattern)):
                dest = os.path.join(target, os.path.relpath(path, "postgres"))
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                shutil.copy2(path, dest)


# The Raft core's modules that have a .pxd (their typed layout) are compiled from their .py
# sources; pgraft/_impl.py says how PGRAFT_PUREPYTHON=1 still runs them interpreted.
RAFT_COMPILED = sorted(os.path.basename(p)[:-4] for p in glob.glob("pgraft/raft/*.pxd"))

ext_modules = []
if os.environ.get("PGRAFT_NO_EXTENSIONS") != "1":
    from Cython.Build import cythonize

    # -g0 after Python's own -g: no debug info in the shipped modules (the wheel stays small;
    # scripts/build-wheel.sh strips what is left). No unwind tables either: nothing unwinds
    # through these frames (no C++, no pthread_cancel); only native stack walkers (perf's
    # dwarf mode) see less. Together with -Os below they keep the wheel under 1 MB.
    compile_args = ["-O3", "-fno-strict-aliasing", "-g0", "-fno-asynchronous-unwind-tables",
                    "-fno-unwind-tables"]
    ext_modules = cythonize(
        [
            Extension(f"pgraft.{name}", [f"pgraft/{name}.pyx"], extra_compile_args=compile_args)
            for name in ("_core", "_log")
            # tests/unit/test_implementation.py fails `make test` if one is missing
            if os.path.exists(f"pgraft/{name}.pyx")
        ],
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
    )
    # The Raft core's hot modules, compiled from their .py sources with the typed layout of
    # the .pxd beside each (Cython's pure-Python mode). Python's semantics are kept whole:
    # negative indexes, bounds checks, floor division; the annotations are for mypy, the
    # .pxd files alone say what is typed. -Os: half the size of -O3, and as fast within
    # this VM's run-to-run noise in benchmarks/bench_raft.py (their cost is in calls into the
    # interpreter's C API, not in loops the optimizer could unroll). Comparisons of the wire's
    # unsigned fields with the core's signed ones are safe: Raft.step refuses values beyond
    # 2**63 - 1.
    ext_modules += cythonize(
        [Extension(f"pgraft.raft.{name}", [f"pgraft/raft/{name}.py"],
                   extra_compile_args=compile_args + ["-Os", "-Wno-sign-compare"])
         for name in RAFT_COMPILED],
        compiler_directives={
            "language_level": "3",
            "annotation_typing": False,
            "auto_pickle": False,
            "binding": False,
        },
    )

setup(ext_modules=ext_modules, cmdclass={"build_py": build_py_with_extension_sources})
