"""The wheel as a user gets it: built by scripts/build-wheel.sh (sdist, wheel, auditwheel
repair, check_wheel.py), installed with pip into a fresh venv of the system's Python 3.11 with no
C compiler reachable, then run from there: the compiled hot paths, ``pgraft --version``, the
local three-node demo and the unit tests (as cibuildwheel's test-command) against the installed
package, never the checkout's ``pgraft/``.

The build tools come from the dev extra (``make setup``); PGRAFT_BUILD_PYTHON names another
Python that has them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import pgraft

pytestmark = pytest.mark.dist

REPO = Path(__file__).resolve().parents[2]
COMPILERS = ("cc", "gcc", "c++", "g++", "clang", "x86_64-linux-gnu-gcc")
# All that PATH holds for the install and the runs below: nothing that compiles (the unit
# tests' disk-full case mounts a small file system).
TOOLS = ("sh", "uname", "env", "mount", "umount", "mkfs.ext4")

# A pytest plugin loaded in the venv's run of the unit tests: once every test module has been
# imported (pytest has changed sys.path by then), it records where pgraft came from.
ORIGIN_PLUGIN = textwrap.dedent("""
    import os
    import sys


    def pytest_collection_finish(session):
        import pgraft, pgraft._core
        with open(os.environ["PGRAFT_ORIGIN_FILE"], "w") as out:
            out.write(pgraft.__file__ + "\\n" + pgraft._core.__file__ + "\\n")
""")


@dataclass
class Installed:
    wheel: Path
    sdist: Path
    python: Path
    bin: Path
    env: dict[str, str]
    tmp: Path

    @property
    def site(self) -> Path:
        """The venv's site-packages (where the wheel's files are)."""
        (site,) = (self.bin.parent / "lib").glob("python3.*/site-packages")
        return site

    def run(self, *args: str | Path, timeout: float = 120,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(a) for a in args], cwd=self.tmp, env=self.env, text=True,
                              capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check:
            assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n" \
                                         f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc


def _build_python() -> str:
    python = os.environ.get("PGRAFT_BUILD_PYTHON") or sys.executable
    probe = subprocess.run([python, "-c", "import build, auditwheel"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"{python} lacks build/auditwheel (the dev extra): run 'make setup', or set "
                    "PGRAFT_BUILD_PYTHON to a Python that has them")
    return python


def _no_compiler_env(tmp: Path) -> dict[str, str]:
    """The environment of a machine without a C compiler: PATH holds a few tools only."""
    bindir = tmp / "nocc-bin"
    bindir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        if found:
            (bindir / tool).symlink_to(found)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PGRAFT_", "PYTEST_", "VIRTUAL_ENV", "PYTHONPATH"))}
    env.update(PATH=str(bindir), CC="/bin/false", CXX="/bin/false", LDSHARED="/bin/false")
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    build_python = _build_python()
    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    subprocess.run([str(REPO / "scripts" / "build-wheel.sh"), build_python, str(dist)],
                   check=True, timeout=300, stdin=subprocess.DEVNULL)
    (wheel,) = dist.glob("pgraft-*.whl")
    (sdist,) = dist.glob("pgraft-*.tar.gz")

    base = shutil.which("python3.11") or shutil.which("python3")
    assert base, "no python3.11 on PATH"
    venv = tmp / "venv"
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=120)
    env = _no_compiler_env(tmp)
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    where = Installed(wheel=wheel, sdist=sdist, python=venv / "bin" / "python",
                      bin=venv / "bin", env=env, tmp=tmp)
    (tmp / "pgraft_wheel_origin.py").write_text(ORIGIN_PLUGIN)
    where.run(where.python, "-m", "pip", "install", "-q", str(wheel), "pytest",
              "pytest-benchmark", "hypothesis", timeout=300)
    yield where


def test_no_compiler_is_reachable_for_the_install(installed: Installed) -> None:
    for name in COMPILERS:
        assert shutil.which(name, path=installed.env["PATH"]) is None, name
    # The venv's own setuptools, as a source build would use it, cannot compile.
    (installed.tmp / "probe.c").write_text("int probe(void) { return 0; }\n")
    proc = installed.run(installed.python, "-c", textwrap.dedent("""
        from setuptools._distutils.ccompiler import new_compiler
        from setuptools._distutils.sysconfig import customize_compiler
        c = new_compiler()
        customize_compiler(c)
        c.compile(["probe.c"])
    """), check=False)
    assert proc.returncode != 0
    assert "CompileError" in proc.stderr, proc.stderr


def test_the_installed_wheel_runs_the_compiled_hot_paths(installed: Installed) -> None:
    out = installed.run(installed.python, "-c",
                        "import pgraft; assert pgraft.IMPLEMENTATION == 'compiled', "
                        "pgraft.FALLBACK_REASON; print(pgraft.__file__)").stdout
    assert out.strip().startswith(str(installed.bin.parent)), out


def test_the_sdist_holds_every_tracked_file(installed: Installed) -> None:
    # Everything needed to build and test: the checkout's tracked files, nothing generated.
    if not (REPO / ".git").exists() or not shutil.which("git"):
        pytest.skip("not a git checkout")
    tracked = set(subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True,
                                 text=True, check=True).stdout.split())
    with tarfile.open(installed.sdist) as sdist:
        top = f"pgraft-{pgraft.__version__}/"
        shipped = {m.name.removeprefix(top) for m in sdist.getmembers() if m.isfile()}
    assert tracked - shipped == {".gitignore"}
    generated = {f for f in shipped - tracked
                 if not f.startswith("pgraft.egg-info/") and f not in ("PKG-INFO", "setup.cfg")}
    assert not generated, sorted(generated)


def test_versions_agree_in_the_installed_wheel(installed: Installed) -> None:
    cli = installed.run(installed.bin / "pgraft", "--version").stdout.strip()
    assert cli == f"pgraft {pgraft.__version__}"
    meta = installed.run(installed.python, "-c", "import importlib.metadata as m, pgraft; "
                         "print(m.version('pgraft'), pgraft.__version__)").stdout.split()
    assert meta == [pgraft.__version__, pgraft.__version__]
    assert installed.wheel.name.startswith(f"pgraft-{pgraft.__version__}-")


def test_the_demo_runs_from_the_installed_wheel(installed: Installed) -> None:
    # Three real node processes (python -m pgraft serve, the venv's Python) and node 4's add.
    proc = installed.run(installed.bin / "pgraft", "demo", timeout=120)
    assert "Done: one command on the leader, the same membership everywhere." in proc.stdout


def test_unit_tests_pass_against_the_installed_package(installed: Installed) -> None:
    # cibuildwheel's test-command. The cwd is a temporary directory (python -m puts it first on
    # sys.path, and it has no pgraft/); pythonpath= drops pyproject's ".", which would put the
    # checkout's pgraft/ ahead of the installed one; tests/ has no __init__.py, so pytest
    # prepends tests/ and tests/unit only.
    origin = installed.tmp / "origin.txt"
    env = {**installed.env, "PGRAFT_ORIGIN_FILE": str(origin)}
    proc = subprocess.run(
        [str(installed.python), "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-p", "pgraft_wheel_origin", "--rootdir", str(REPO), "-o", "pythonpath=",
         str(REPO / "tests" / "unit")],
        cwd=installed.tmp, env=env, text=True, capture_output=True, timeout=300,
        stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    package_file, core_file = origin.read_text().split()
    site = str(installed.bin.parent)
    assert package_file.startswith(site), package_file
    assert core_file.startswith(site) and core_file.endswith(".so"), core_file


# ---------------------------------------------------------------- the extension, from the wheel
def _needs_root_for_postgres() -> None:
    """PostgreSQL's files are root's: in CI (root) this runs; elsewhere it needs root."""
    if os.geteuid() != 0 or not shutil.which("runuser"):
        if os.environ.get("CI"):
            pytest.fail("installing the PostgreSQL extension needs root (CI runs as root)")
        pytest.skip("installing the PostgreSQL extension needs root")
    from tests.support.postgres import PG_CONFIG

    if not os.access(PG_CONFIG, os.X_OK):
        pytest.fail(f"{PG_CONFIG} is missing: run `make system-deps`")


@pytest.fixture
def wheel_prefix(installed: Installed) -> Iterator[Path]:
    """A prefix of this test's own; afterwards the checkout's installation (tests/postgres) is
    put back if there was one, since the extension files in PostgreSQL's directories are
    shared."""
    _needs_root_for_postgres()
    from pgraft.pg import install as pg_install
    from tests.support.postgres import PG_CONFIG, PREFIX, SOURCE_ROOT

    prefix = Path(f"/opt/pgraft-wheel-test-{os.getpid()}")
    assert not prefix.exists()
    had_checkout_install = (Path(PREFIX) / "install.json").is_file()
    try:
        yield prefix
    finally:
        shutil.rmtree(prefix, ignore_errors=True)  # made by this test alone
        if had_checkout_install:
            assert pg_install.main(["--pg-config", PG_CONFIG, "--prefix", PREFIX,
                                    "--source", str(SOURCE_ROOT)]) == 0


def test_the_installed_wheel_installs_the_extension_and_answers_sql(
        installed: Installed, wheel_prefix: Path) -> None:
    from tests.support.postgres import PG_CONFIG, cleaned_up_cluster, free_ports, wait_for

    # The compiler is back (PGXS builds the launcher); the wheel's pgraft is the one running.
    env = {**installed.env, "PATH": f"{installed.bin}:/usr/local/bin:/usr/bin:/bin"}
    proc = subprocess.run([str(installed.bin / "pgraft"), "postgres", "install",
                           "--pg-config", PG_CONFIG, "--prefix", str(wheel_prefix)],
                          cwd="/", env=env, text=True, capture_output=True, timeout=600,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "copying the installed pgraft" in proc.stdout, proc.stdout
    record = json.loads((wheel_prefix / "install.json").read_text())
    assert record["source"] == f"the installed package in {installed.site}"
    assert (record["pgraft_version"], record["implementation"]) == (pgraft.__version__,
                                                                    "compiled")
    # modes set anew (not the source's), byte code compiled (postgres cannot write it there),
    # and the command written for the venv's interpreter
    site = Path(record["site_packages"])
    assert (site / "pgraft" / "errors.py").stat().st_mode & 0o777 == 0o644
    assert list((site / "pgraft" / "__pycache__").glob("errors.*.pyc"))
    version = subprocess.run([str(wheel_prefix / "venv" / "bin" / "pgraft"), "--version"],
                             capture_output=True, text=True, timeout=60, cwd="/")
    assert version.stdout.strip() == f"pgraft {pgraft.__version__}", version.stderr

    # A one-node cluster: the launcher starts the node from the wheel's venv.
    (port,) = free_ports(1)
    with cleaned_up_cluster() as cluster:
        server = cluster.add(1, port, f"1=127.0.0.1:{port}")
        server.start()
        server.sql("CREATE EXTENSION pgraft CASCADE")
        assert server.scalar("SELECT pgraft_get_version()") == pgraft.__version__
        assert wait_for(lambda: server.scalar("SELECT pgraft_get_leader()") == 1,
                        timeout=60, what="node 1 leads its one-node cluster")
        argv = server.node_argv(server.node_pid())
        assert argv[0] == str(wheel_prefix / "venv" / "bin" / "python"), argv


def test_a_modified_installed_package_is_refused(installed: Installed) -> None:
    # The installer copies what the wheel's RECORD lists and hashes; a changed file stops it
    # before it writes anything.
    target = installed.site / "pgraft" / "errors.py"
    original = target.read_bytes()
    prefix = installed.tmp / "never-made"
    try:
        target.write_bytes(original + b"\n# changed\n")
        proc = installed.run(installed.bin / "pgraft", "postgres", "install", "--prefix",
                             str(prefix), check=False)
    finally:
        target.write_bytes(original)
    assert proc.returncode == 1
    assert f"{target} differs from pgraft's RECORD" in proc.stderr, proc.stderr
    assert "pip install --force-reinstall pgraft" in proc.stderr
    assert not prefix.exists()


def test_a_record_entry_outside_the_package_is_refused(installed: Installed) -> None:
    # The installer copies only pgraft/ and its .dist-info: a RECORD that names another
    # package's file (which would land over the venv's own) stops it before it writes anything.
    (record,) = installed.site.glob("pgraft-*.dist-info/RECORD")
    original = record.read_text()
    prefix = installed.tmp / "never-made-either"
    try:
        record.write_text(original + "msgpack/__init__.py,,\n")
        proc = installed.run(installed.bin / "pgraft", "postgres", "install", "--prefix",
                             str(prefix), check=False)
    finally:
        record.write_text(original)
    assert proc.returncode == 1
    assert "pgraft's RECORD lists msgpack/__init__.py, outside the package" in proc.stderr, \
        proc.stderr
    assert not prefix.exists()

