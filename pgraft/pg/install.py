"""``pgraft postgres install``: build and install the PostgreSQL extension and its Python side.

PostgreSQL runs as its own OS user (``postgres``), who cannot read ``/root`` where a developer's
interpreter and ``.venv`` usually live. Both PostgreSQL-side users of Python need the pgraft
package: the node process (started by the launcher as ``<pgraft.python> -m pgraft serve``) and
the PL/Python functions (which run inside the backends, on the interpreter that plpython3u
embeds). The installer therefore builds a self-contained, root-owned, world-readable
environment and touches no permission anywhere else:

``<prefix>/venv`` (default prefix ``/opt/pgraft``)
    a virtual environment made from the interpreter plpython3u is linked against (Debian's
    ``/usr/bin/python3.11`` for PostgreSQL 15 on bookworm), so the compiled extensions in it
    load both in the node process and inside PL/Python. Its dependencies are pip-installed
    into it, and pgraft itself comes from one of two places:

    * a checkout (``--source DIR``, or the checkout this module runs from): built and
      pip-installed from a clean copy of its sources, Cython extensions included;
    * the installed package this module belongs to (``pip install pgraft``, no checkout): its
      files, as its wheel's RECORD lists and hashes them, are copied into the venv, and the
      extension is built from the sources the package carries (``pgraft/pg/extension/``).
      The package's compiled modules must suit the venv's interpreter (the same ABI); if they
      do not, the installer says which Python to install pgraft with.
``<prefix>/install.json``
    what was installed, from where, and a fingerprint of the sources (a second run with
    unchanged sources does nothing).
the PostgreSQL extension
    ``pgraft.so`` (the launcher), the control files and the SQL scripts, built with PGXS
    against the ``pg_config`` given. The venv's interpreter is compiled in as the default of
    ``pgraft.python``; the SQL functions derive the venv's ``site-packages`` from that same
    setting, so one setting tells both sides where pgraft lives.

The installer refuses a prefix that the PostgreSQL OS user cannot reach (for example under
``/root``) instead of changing permissions, and checks the result by importing pgraft as that
user.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import grp
import hashlib
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PREFIX = "/opt/pgraft"
DEFAULT_PG_CONFIGS = ("/usr/lib/postgresql/15/bin/pg_config",)
PG_OS_USER = "postgres"
EXTENSION_FILES = ("pgraft.control", "pgraft--1.0.control", "pgraft--1.1.control",
                   "pgraft--1.2.control", "pgraft--1.0.sql", "pgraft--1.0--1.1.sql",
                   "pgraft--1.1--1.2.sql")
# Where an installed package carries the extension's sources (setup.py copies postgres/ there).
PACKAGED_EXTENSION = Path("pgraft") / "pg" / "extension"
# What to do about an installed package that does not match its own RECORD.
_REINSTALL = "reinstall pgraft (pip install --force-reinstall pgraft)"
# What is copied from the source tree to build the package and the extension.
_SOURCE_GLOBS = ("pyproject.toml", "setup.py", "README*", "LICENSE*", "pgraft/**/*.py",
                 "pgraft/**/*.pyx", "pgraft/**/*.pxd", "pgraft/**/*.h", "pgraft/py.typed",
                 "postgres/Makefile", "postgres/*.c", "postgres/*.h", "postgres/*.sql",
                 "postgres/*.control")


class InstallError(Exception):
    """Something the operator has to fix; the message says what and how."""


def _log(msg: str) -> None:
    print(f"pgraft postgres install: {msg}", flush=True)


def _run(cmd: Sequence[str], *, cwd: str | Path | None = None, what: str,
         env: dict[str, str] | None = None) -> str:
    """Run a command; on failure raise InstallError with its output."""
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          check=False)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-40:])
        raise InstallError(f"{what} failed (exit code {proc.returncode}): "
                           f"{' '.join(cmd)}\n{tail}")
    return proc.stdout


# ------------------------------------------------------------------------- discovery
@dataclass(frozen=True)
class Sources:
    """Where pgraft and the extension's sources come from.

    ``root`` is a checkout, or the site-packages directory of an installed package; ``files``
    (under ``root``) is everything that is copied and fingerprinted; ``extension`` is the
    extension's directory relative to ``root``."""

    kind: str  # "checkout" or "package"
    root: Path
    files: tuple[Path, ...]
    extension: Path
    requirements: tuple[str, ...]
    #: package only: (path relative to root, hash algorithm, urlsafe-base64 digest) from RECORD
    hashes: tuple[tuple[str, str, str], ...] = ()

    @property
    def description(self) -> str:
        if self.kind == "checkout":
            return str(self.root)
        return f"the installed package in {self.root}"


def _is_checkout(root: Path) -> bool:
    return (root / "setup.py").is_file() and (root / "postgres" / "pgraft.c").is_file()


def find_sources(explicit: str | None) -> Sources:
    """--source DIR (a checkout), else the checkout this module was imported from, else the
    installed package this module belongs to."""
    if explicit:
        root = Path(explicit)
        if not _is_checkout(root):
            raise InstallError(f"--source {explicit} is not a pgraft source tree (it needs "
                               "setup.py and postgres/pgraft.c)")
        return _checkout_sources(root.resolve())
    here = Path(__file__).resolve().parents[2]
    if _is_checkout(here):
        return _checkout_sources(here)
    if (here / "setup.py").is_file():
        raise InstallError(f"the checkout {here} has no postgres/pgraft.c: it is incomplete; "
                           "restore it (git status), or pass --source DIR")
    return _package_sources(here)


def _checkout_sources(root: Path) -> Sources:
    return Sources("checkout", root, tuple(source_files(root)), Path("postgres"),
                   tuple(_project_dependencies(root)))


def _package_sources(site: Path) -> Sources:
    """The installed distribution that holds this module: the files its RECORD lists under
    ``pgraft/`` and its ``.dist-info`` (console scripts are written anew for the venv, byte
    code is compiled there), each with its hash (checked on the copy, see verify_copy)."""
    import importlib.metadata

    if not (site / PACKAGED_EXTENSION / "pgraft.c").is_file():
        raise InstallError(
            f"this pgraft installation ({site / 'pgraft'}) carries no PostgreSQL extension "
            f"sources ({PACKAGED_EXTENSION}/ is missing); install pgraft from a wheel or sdist "
            "of version 1.2.0 or later, or run from a checkout, or pass --source DIR")
    try:
        dist = importlib.metadata.distribution("pgraft")
    except importlib.metadata.PackageNotFoundError:
        raise InstallError(f"pgraft in {site} has no installation metadata (no "
                           "pgraft-*.dist-info); reinstall it with pip, or pass --source "
                           "DIR") from None
    if Path(str(dist.locate_file("pgraft/__init__.py"))).resolve() != \
            (site / "pgraft" / "__init__.py").resolve():
        raise InstallError(f"the pgraft metadata Python finds ({dist.locate_file('')}) is not "
                           f"that of the pgraft running this installer ({site}); run the "
                           "installer with the Python pgraft was installed for")
    files: list[Path] = []
    hashes: list[tuple[str, str, str]] = []
    for entry in dist.files or ():
        rel = os.path.normpath(str(entry))
        top = rel.split(os.sep, 1)[0]
        if top == os.pardir:
            continue  # console scripts: written anew for the venv's interpreter
        if "__pycache__" in Path(rel).parts:
            continue  # byte code: compiled anew in the venv
        if os.path.isabs(rel) or not (top == "pgraft" or (top.startswith("pgraft-")
                                                           and top.endswith(".dist-info"))):
            raise InstallError(f"pgraft's RECORD lists {entry}, outside the package and its "
                               f"metadata; {_REINSTALL}")
        path = site / rel
        if not path.is_file():
            raise InstallError(f"{path} is listed in pgraft's RECORD but missing; {_REINSTALL}")
        if entry.hash is None:
            if not rel.endswith(os.sep + "RECORD"):
                raise InstallError(f"pgraft's RECORD gives no hash for {entry}; {_REINSTALL}")
        else:
            hashes.append((rel, entry.hash.mode, entry.hash.value))
        files.append(path)
    requirements = [r for r in dist.requires or () if "extra ==" not in r.partition(";")[2]]
    return Sources("package", site, tuple(sorted(files)), PACKAGED_EXTENSION,
                   tuple(requirements), tuple(hashes))


def verify_copy(src: Path, sources: Sources) -> None:
    """The files under ``src`` (the installation, or the copy of it that goes into the venv)
    are the ones the wheel installed: every RECORD hash matches (an
    integrity check of the installation, so that what goes into the venv is what pip
    installed; root runs this code either way)."""
    for rel, mode, value in sources.hashes:
        try:
            digest = hashlib.new(mode, (src / rel).read_bytes()).digest()
        except ValueError:
            raise InstallError(f"pgraft's RECORD hashes {rel} with {mode!r}, which this Python "
                               "does not know; reinstall pgraft with this Python's pip") from None
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != value:
            raise InstallError(f"{sources.root / rel} differs from pgraft's RECORD (changed "
                               f"after it was installed); {_REINSTALL}")


def find_pg_config(explicit: str | None) -> str:
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise InstallError(f"--pg-config {explicit} is not an executable file")
        return explicit
    for path in DEFAULT_PG_CONFIGS:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("pg_config")
    if found:
        return found
    raise InstallError("pg_config not found; install PostgreSQL 15 and its server development "
                       "files (`make system-deps`, or apt-get install postgresql-15 "
                       "postgresql-server-dev-15), or pass --pg-config PATH")


def pg_config_values(pg_config: str) -> dict[str, str]:
    values = {}
    for key in ("version", "bindir", "pkglibdir", "sharedir", "pgxs"):
        values[key] = _run([pg_config, f"--{key}"], what="pg_config").strip()
    if not Path(values["pgxs"]).is_file():
        raise InstallError(f"{pg_config} has no PGXS ({values['pgxs']} is missing); install "
                           "the server development package (postgresql-server-dev-15)")
    return values


def plpython_version(pkglibdir: str) -> str:
    """major.minor of the Python that plpython3u embeds (from the libpython it links)."""
    lib = Path(pkglibdir) / "plpython3.so"
    if not lib.is_file():
        raise InstallError(f"PL/Python is not installed ({lib} is missing); install it "
                           "(`make system-deps`, or apt-get install postgresql-plpython3-15)")
    data = lib.read_bytes()
    found = sorted(set(re.findall(rb"libpython(3\.\d+)", data)))
    if len(found) != 1:
        raise InstallError(f"cannot tell which Python {lib} embeds; pass --python explicitly")
    return found[0].decode()


def find_base_python(explicit: str | None, want: str) -> str:
    """The interpreter the venv is made from: the same major.minor as plpython3u's."""
    candidates = [explicit] if explicit else [f"/usr/bin/python{want}", "/usr/bin/python3"]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            have = _run([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                        what="checking the Python version").strip()
            if have == want:
                return path
            if explicit:
                raise InstallError(f"--python {path} is Python {have}, but plpython3u embeds "
                                   f"Python {want}; the compiled pgraft modules must match it")
    raise InstallError(f"no Python {want} interpreter found (plpython3u embeds Python {want}); "
                       f"install python{want} and python3-venv, or pass --python PATH")


# ------------------------------------------------------------------------- checks
def _os_user() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(PG_OS_USER)
    except KeyError:
        return None


def check_reachable(path: Path, user: pwd.struct_passwd | None) -> None:
    """Refuse a prefix that the PostgreSQL OS user cannot traverse; never chmod anything."""
    if user is None:
        return
    groups = {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem} | {user.pw_gid}
    for parent in [*reversed(path.parents)]:
        if not parent.exists():
            continue
        st = parent.stat()
        if st.st_uid == user.pw_uid:
            ok = bool(st.st_mode & stat.S_IXUSR)
        elif st.st_gid in groups:
            ok = bool(st.st_mode & stat.S_IXGRP)
        else:
            ok = bool(st.st_mode & stat.S_IXOTH)
        if not ok:
            raise InstallError(
                f"the PostgreSQL OS user {user.pw_name!r} cannot reach {path}: {parent} is not "
                f"searchable for it (mode {stat.filemode(st.st_mode)}); choose a --prefix it "
                f"can read, such as {DEFAULT_PREFIX} (the installer does not change "
                "permissions of existing directories)")


def source_files(root: Path) -> list[Path]:
    files: set[Path] = set()
    for pattern in _SOURCE_GLOBS:
        files.update(p for p in root.glob(pattern)
                     if p.is_file() and "__pycache__" not in p.parts)
    return sorted(files)


def fingerprint(root: Path, files: list[Path], extra: dict[str, str]) -> str:
    h = hashlib.sha256()
    for key in sorted(extra):
        h.update(f"{key}={extra[key]}\n".encode())
    for path in files:
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


@contextlib.contextmanager
def _copied_tree(root: Path, files: list[Path]) -> Iterator[Path]:
    """A clean copy of the sources: no build/, .venv or in-place .so files of the dev tree."""
    with tempfile.TemporaryDirectory(prefix="pgraft-install-") as tmp:
        dst = Path(tmp) / "src"
        for path in files:
            target = dst / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        yield dst


def _project_dependencies(root: Path) -> list[str]:
    import tomllib

    with open(root / "pyproject.toml", "rb") as f:
        return list(tomllib.load(f)["project"].get("dependencies", []))


# ------------------------------------------------------------------------- steps
def build_venv(prefix: Path, base_python: str, src: Path,
               sources: Sources) -> tuple[str, str]:
    venv = prefix / "venv"
    python = venv / "bin" / "python"
    if python.exists():
        home = _run([str(python), "-c", "import sys; print(sys._base_executable)"],
                    what="inspecting the existing venv").strip()
        if os.path.realpath(home) != os.path.realpath(base_python):
            _log(f"recreating {venv} (it was made from {home}, not {base_python})")
            shutil.rmtree(venv)
    if not python.exists():
        _log(f"creating {venv} from {base_python}")
        _run([base_python, "-m", "venv", str(venv)], what="creating the venv "
             "(needs the python3-venv package)")
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
           "--no-cache-dir"]
    _log(f"installing dependencies into {venv}: {', '.join(sources.requirements)}")
    _run([*pip, *sources.requirements], what="pip install of the dependencies")
    site = _run([str(python), "-c",
                 "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                what="locating site-packages").strip()
    if sources.kind == "checkout":
        _log(f"building and installing pgraft (with its compiled extensions) into {venv}")
        _run([*pip, "--no-deps", "--force-reinstall", str(src)], what="pip install of pgraft")
    else:
        _copy_package(python, Path(site), src, sources)
    return str(python), site


def check_abi(base_python: str, sources: Sources) -> None:
    """An installed package's compiled modules must load in the venv's interpreter (the
    Python PL/Python embeds); checked before anything is written."""
    if sources.kind != "package":
        return
    suffix = _run([base_python, "-c",
                   "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))"],
                  what="reading the interpreter's extension suffix").strip()
    foreign = sorted(f.name for f in sources.files
                     if f.suffix == ".so" and not f.name.endswith(suffix))
    if foreign:
        raise InstallError(
            f"this pgraft was installed for another Python ({', '.join(foreign)}), but "
            f"PostgreSQL's PL/Python runs {base_python}, which needs modules ending in "
            f"{suffix}; install pgraft with that interpreter ({base_python} -m pip install "
            "pgraft), then run its 'pgraft postgres install'")


_CONSOLE_SCRIPT = "#!{python}\nimport sys\nfrom pgraft.cli import main\nsys.exit(main())\n"


def _copy_package(python: Path, site: Path, src: Path, sources: Sources) -> None:
    """Install the running package into the venv by copying its files (RECORD included, so
    the venv's pip can uninstall it): modes set anew (0644, 0755 for extension modules),
    byte code compiled (the postgres user cannot write it there), and the ``pgraft``
    command written for the venv's interpreter."""
    if site.resolve() == sources.root.resolve():
        _log(f"pgraft is already the venv's own ({site}): nothing to copy")
        return
    verify_copy(src, sources)
    # The venv is the installer's own (under --prefix): replacing its pgraft loses nothing.
    _run([str(python), "-m", "pip", "uninstall", "-q", "-y", "pgraft"],
         what="removing the venv's previous pgraft")
    _log(f"copying the installed pgraft ({len(sources.files)} files) into {site}")
    for path in sources.files:
        rel = path.relative_to(sources.root)
        target = site / rel
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        shutil.copyfile(src / rel, target)
        target.chmod(0o755 if target.suffix == ".so" else 0o644)
    _run([str(python), "-m", "compileall", "-q", str(site / "pgraft")],
         what="compiling pgraft's byte code in the venv")
    script = python.parent / "pgraft"
    script.write_text(_CONSOLE_SCRIPT.format(python=python))
    script.chmod(0o755)


def build_extension(extension_dir: Path, pg_config: str, python: str) -> None:
    if any(c in python for c in "'\"\\ $`"):
        raise InstallError(f"the interpreter path {python!r} has characters that cannot be "
                           "compiled in as the default of pgraft.python; choose another "
                           "--prefix")
    make = shutil.which("make")
    if make is None:
        raise InstallError("make is not installed (apt-get install build-essential)")
    args = [f"PG_CONFIG={pg_config}", f"PGRAFT_PYTHON={python}"]
    _log(f"building the extension with PGXS ({pg_config})")
    _run([make, "-C", str(extension_dir), *args], what="building the extension")
    _run([make, "-C", str(extension_dir), *args, "install"],
         what="installing the extension")


def verify_as_pg_user(python: str, user: pwd.struct_passwd | None, src: Path) -> str:
    """Import pgraft as the PostgreSQL OS user, the way the node and PL/Python will."""
    modules = ["pgraft", "pgraft.client", "msgpack"]
    if (src / "pgraft" / "node").is_dir():
        modules.append("pgraft.node")
    code = f"import {', '.join(modules)}; print(pgraft.__version__, pgraft.IMPLEMENTATION)"
    cmd = [python, "-c", code]
    if user is not None and os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if runuser:
            cmd = [runuser, "-u", user.pw_name, "--", *cmd]
    env = {"PATH": "/usr/bin:/bin", "HOME": "/", "LANG": "C.UTF-8"}
    try:
        return _run(cmd, cwd="/", env=env,
                    what=f"importing pgraft as the {PG_OS_USER} OS user").strip()
    except InstallError as exc:
        missing = re.search(r"No module named '(pgraft\.[\w.]+)'", str(exc))
        if missing and (src / Path(*missing.group(1).split("."))).is_dir():
            raise InstallError(
                f"{exc}\nThe package {missing.group(1)} exists in the sources but was not "
                "installed: pyproject.toml must list every subpackage ([tool.setuptools] "
                "packages, or packages.find)") from None
        raise


def installed_ok(record: dict[str, object], pg: dict[str, str]) -> bool:
    """The recorded installation is in place, and the server's pgraft.so points at it."""
    python = str(record.get("python", ""))
    library = Path(pg["pkglibdir"]) / "pgraft.so"
    try:
        points_here = python.encode() + b"\0" in library.read_bytes()
    except OSError:
        return False
    site = str(record.get("site_packages", ""))
    return (bool(python) and os.access(python, os.X_OK) and points_here
            and bool(site) and os.path.isfile(os.path.join(site, "pgraft", "__init__.py"))
            and all((Path(pg["sharedir"]) / "extension" / f).is_file() for f in EXTENSION_FILES))


def install(pg_config_arg: str | None, prefix_arg: str, source_arg: str | None,
            python_arg: str | None, force: bool) -> dict[str, object]:
    sources = find_sources(source_arg)
    pg_config = find_pg_config(pg_config_arg)
    pg = pg_config_values(pg_config)
    want = plpython_version(pg["pkglibdir"])
    base_python = find_base_python(python_arg, want)
    check_abi(base_python, sources)
    verify_copy(sources.root, sources)  # before anything is written; the copy is checked again
    prefix = Path(prefix_arg).absolute()
    user = _os_user()
    check_reachable(prefix / "venv", user)
    for target in (str(prefix.parent if not prefix.exists() else prefix), pg["pkglibdir"],
                   os.path.join(pg["sharedir"], "extension")):
        if not os.access(target, os.W_OK):
            raise InstallError(f"{target} is not writable; run the installer as root "
                               "(sudo pgraft postgres install)")

    digest = fingerprint(sources.root, list(sources.files), {
        "sources": sources.kind, "pg_config": pg_config, "pg_version": pg["version"],
        "base_python": base_python, "prefix": str(prefix)})
    record_path = prefix / "install.json"
    if record_path.is_file() and not force:
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            record = {}
        if record.get("fingerprint") == digest and installed_ok(record, pg):
            _log(f"up to date ({prefix}, {pg['version']}); use --force to reinstall")
            return record

    old_umask = os.umask(0o022)
    try:
        prefix.mkdir(mode=0o755, parents=True, exist_ok=True)
        # From here the venv is being replaced: a run that stops half-way must not leave a
        # record that says "up to date".
        record_path.unlink(missing_ok=True)
        with _copied_tree(sources.root, list(sources.files)) as src:
            python, site = build_venv(prefix, base_python, src, sources)
            expected_site = os.path.join(str(prefix / "venv"), "lib", f"python{want}",
                                         "site-packages")
            if os.path.realpath(site) != os.path.realpath(expected_site):
                raise InstallError(f"the venv's site-packages is {site}, not {expected_site} "
                                   "where the SQL functions look for it")
            # Check the environment before replacing the server's extension files with ones
            # that point at it.
            check = verify_as_pg_user(python, user, src)
            build_extension(src / sources.extension, pg_config, python)
        record = {
            "pgraft_version": check.split()[0] if check else "",
            "implementation": check.split()[1] if len(check.split()) > 1 else "",
            "prefix": str(prefix),
            "python": python,
            "base_python": base_python,
            "site_packages": site,
            "pg_config": pg_config,
            "pg_version": pg["version"],
            "pkglibdir": pg["pkglibdir"],
            "sharedir": pg["sharedir"],
            "source": sources.description,
            "fingerprint": digest,
            "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        record_path.chmod(0o644)
    finally:
        os.umask(old_umask)
    _log(f"installed pgraft {record['pgraft_version']} ({record['implementation']}) for "
         f"{pg['version']}: interpreter {python}")
    _log("enable it in postgresql.conf: shared_preload_libraries = 'pgraft', pgraft.node_id, "
         "pgraft.address, pgraft.port, pgraft.initial_cluster; then CREATE EXTENSION pgraft "
         "CASCADE")
    return record


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pgraft postgres install",
        description="Build and install the pgraft PostgreSQL extension, and a Python "
                    "environment with pgraft that the PostgreSQL OS user can read.")
    p.add_argument("--pg-config", metavar="PATH",
                   help="pg_config of the target server (default: PostgreSQL 15's, "
                        "else the one on PATH)")
    p.add_argument("--prefix", metavar="DIR", default=DEFAULT_PREFIX,
                   help=f"where the Python environment goes (default {DEFAULT_PREFIX})")
    p.add_argument("--source", metavar="DIR",
                   help="pgraft source tree (default: the checkout this command runs from, "
                        "else the installed package and the extension sources it carries)")
    p.add_argument("--python", metavar="PATH",
                   help="interpreter to build the environment from (default: the system "
                        "Python that plpython3u embeds)")
    p.add_argument("--force", action="store_true",
                   help="reinstall even if the sources have not changed")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        install(ns.pg_config, ns.prefix, ns.source, ns.python, ns.force)
    except InstallError as exc:
        print(f"pgraft postgres install: error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
