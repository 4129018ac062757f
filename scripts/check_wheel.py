"""Check a built pgraft wheel before it is shipped: ``python scripts/check_wheel.py WHEEL...``.

A wheel passes when its platform tag is manylinux, it is at most 1.5 MB, it holds no generated C
(nor the Cython sources, which nothing needs at run time), it carries the PostgreSQL extension's
sources (``pgraft/pg/extension/``, which ``pgraft postgres install`` builds), and its extension
modules are stripped (no ``.symtab``, no ``.debug*`` sections) and carry no run path of the
build machine.
Each failure is one line on stderr; the exit code is 1 if any wheel failed, 2 on a bad command
line.
"""

from __future__ import annotations

import struct
import sys
import zipfile
from pathlib import Path

# About 1.0 MB today (ten stripped extension modules, the Raft core's eight among them); an
# unstripped build is several times that, which is what this bound is there to catch.
MAX_BYTES = 1_500_000
# Build inputs that must stay out of the wheel (generated C above all).
SOURCE_SUFFIXES = (".c", ".pyx", ".pxd", ".h")
# The PostgreSQL extension's sources ship on purpose: `pgraft postgres install` builds them.
EXTENSION_DIR = "pgraft/pg/extension/"
EXTENSION_REQUIRED = ("Makefile", "pgraft.h", "pgraft.control")


def extension_problems(names: list[str], makefile: bytes | None) -> list[str]:
    """What the extension's PGXS build would miss: the Makefile, header and control file, a
    C file for every object of the Makefile's OBJS, and at least one SQL script."""
    missing = [f for f in EXTENSION_REQUIRED if EXTENSION_DIR + f not in names]
    if makefile is not None:
        for line in makefile.decode(errors="replace").splitlines():
            if line.startswith("OBJS"):
                missing += [o[:-2] + ".c" for o in line.split("=", 1)[1].split()
                            if o.endswith(".o") and EXTENSION_DIR + o[:-2] + ".c" not in names]
    if not any(n.startswith(EXTENSION_DIR + "pgraft--") and n.endswith(".sql") for n in names):
        missing.append("pgraft--*.sql")
    if not missing:
        return []
    return [f"{EXTENSION_DIR} lacks {', '.join(missing)}: the PostgreSQL extension's sources "
            "must ship (setup.py copies postgres/ there)"]


def _elf_sections(data: bytes) -> list[tuple[str, int, int, int, int]]:
    """(name, type, offset, size, link) of every section of a 64-bit little-endian ELF file
    (what x86_64 and aarch64 use)."""
    if data[:4] != b"\x7fELF":
        raise ValueError("not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    # Elf64_Shdr: name, type, flags, addr, offset, size, link, ...
    headers = [struct.unpack_from("<IIQQQQI", data, shoff + i * shentsize) for i in range(shnum)]
    names = headers[shstrndx]
    strtab = data[names[4]:names[4] + names[5]]
    return [(_cstr(strtab, h[0]), h[1], h[4], h[5], h[6]) for h in headers]


def _cstr(table: bytes, offset: int) -> str:
    return table[offset:table.index(b"\0", offset)].decode()


def elf_section_names(data: bytes) -> list[str]:
    return [s[0] for s in _elf_sections(data)]


def elf_run_paths(data: bytes) -> list[str]:
    """The DT_RPATH and DT_RUNPATH strings of an ELF file's dynamic section."""
    sections = _elf_sections(data)
    paths: list[str] = []
    for _, kind, offset, size, link in sections:
        if kind != 6:  # SHT_DYNAMIC
            continue
        dynstr = sections[link]
        strings = data[dynstr[2]:dynstr[2] + dynstr[3]]
        for i in range(0, size, 16):
            tag, value = struct.unpack_from("<qQ", data, offset + i)
            if tag in (15, 29):  # DT_RPATH, DT_RUNPATH
                paths.append(_cstr(strings, value))
    return paths


def check_wheel(path: Path) -> list[str]:
    """The problems of one wheel, each a sentence that says what to fix; empty if none."""
    problems: list[str] = []
    parts = path.name[:-len(".whl")].split("-") if path.name.endswith(".whl") else []
    if len(parts) < 5:
        return [f"{path.name}: not a wheel file name (name-version-python-abi-platform.whl)"]
    platforms = parts[-1].split(".")
    if not all(p.startswith(("manylinux_", "manylinux2014_", "manylinux1_")) for p in platforms):
        problems.append(f"platform tag {parts[-1]!r} is not manylinux: repair the wheel with "
                        "'auditwheel repair --plat manylinux_2_17_x86_64'")
    size = path.stat().st_size
    if size > MAX_BYTES:
        problems.append(f"the wheel is {size:,} bytes, more than {MAX_BYTES:,}: strip the "
                        "extension modules and keep build inputs out")
    with zipfile.ZipFile(path) as wheel:
        names = wheel.namelist()
        for name in names:
            if name.endswith(SOURCE_SUFFIXES) and not name.startswith(EXTENSION_DIR):
                problems.append(f"{name}: a build input in the wheel; exclude it "
                                "([tool.setuptools.exclude-package-data] in pyproject.toml)")
        makefile = wheel.read(EXTENSION_DIR + "Makefile") \
            if EXTENSION_DIR + "Makefile" in names else None
        problems += extension_problems(names, makefile)
        extensions = [n for n in names if n.endswith(".so")]
        if not extensions:
            problems.append("no compiled extension module (.so) in the wheel: was it built "
                            "with PGRAFT_NO_EXTENSIONS=1?")
        for name in extensions:
            try:
                sections = elf_section_names(wheel.read(name))
                run_paths = elf_run_paths(wheel.read(name))
            except (ValueError, struct.error, IndexError) as exc:
                problems.append(f"{name}: cannot read its ELF sections ({exc})")
                continue
            unstripped = [s for s in sections if s == ".symtab" or s.startswith(".debug")]
            if unstripped:
                problems.append(f"{name}: not stripped (sections {', '.join(unstripped)}); "
                                "build with -g0 and repair with 'auditwheel repair --strip'")
            # A path of the build machine (pyenv's lib dir, say) means nothing where it installs.
            foreign = [p for p in run_paths if not p.startswith("$ORIGIN")]
            if foreign:
                problems.append(f"{name}: run path {':'.join(foreign)} of the build machine; "
                                "link without it (scripts/build-wheel.sh sets LDSHARED)")
    return [f"{path.name}: {p}" for p in problems]


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: check_wheel.py WHEEL...", file=sys.stderr)
        return 2
    failed = False
    for arg in argv:
        path = Path(arg)
        if not path.is_file():
            print(f"check_wheel: {arg}: no such file", file=sys.stderr)
            failed = True
            continue
        problems = check_wheel(path)
        for problem in problems:
            print(f"check_wheel: {problem}", file=sys.stderr)
        if problems:
            failed = True
        else:
            print(f"check_wheel: {path.name}: ok ({path.stat().st_size:,} bytes)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
