"""Build the two Cython extensions: pgraft._core (quorum, codec) and pgraft._log (durable log).

Setting PGRAFT_NO_EXTENSIONS=1 builds a pure-Python package (the twins in _core_py/_log_py).
"""

import os

from setuptools import Extension, setup

ext_modules = []
if os.environ.get("PGRAFT_NO_EXTENSIONS") != "1":
    from Cython.Build import cythonize

    # -g0 after Python's own -g: no debug info in the shipped modules (the wheel stays small;
    # scripts/build-wheel.sh strips what is left)
    compile_args = ["-O3", "-fno-strict-aliasing", "-g0"]
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

setup(ext_modules=ext_modules)
