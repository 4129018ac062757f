"""Build the two Cython extensions: pgraft._core (quorum, codec) and pgraft._log (durable log).

Setting PGRAFT_NO_EXTENSIONS=1 builds a pure-Python package (the twins in _core_py/_log_py).
"""

import os

from setuptools import Extension, setup

ext_modules = []
if os.environ.get("PGRAFT_NO_EXTENSIONS") != "1":
    from Cython.Build import cythonize

    compile_args = ["-O3", "-fno-strict-aliasing"]
    ext_modules = cythonize(
        [
            Extension("pgraft._core", ["pgraft/_core.pyx"], extra_compile_args=compile_args),
            Extension("pgraft._log", ["pgraft/_log.pyx"], extra_compile_args=compile_args),
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
