"""PostgreSQL control for HA mode: the node process (running as the PostgreSQL OS user) owns
one server and its data directory.

:class:`PgControl` is blocking and meant for the controller's worker thread; one caller at a
time (it is not thread-safe). It runs the PostgreSQL 15 programs of ``bindir`` with a clean
environment (no ``PG*`` variables, ``LC_ALL=C`` so that pg_controldata's labels are
English), and talks SQL to its own server over the Unix socket in ``socket_dir`` as the
superuser (peer authentication). Passwords never appear on a command line: the programs read
them from a private password file that exists only while they run, and a role's password is
sent as a SCRAM verifier computed on this side, with statement logging off.

What it never does: delete a data directory it did not just create itself
(:meth:`PgControl.move_aside` keeps one that is in the way).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import math
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..errors import (
    InvalidArgument,
    PostgresCommandFailed,
    PostgresDirectoryRefused,
    PostgresError,
    PostgresQueryFailed,
    PostgresStateConflict,
    PostgresTimeout,
)
from ..fsutil import errno_text, fsync_dir, write_file_atomic
from . import pgconf
from .types import (
    PG_MISSING,
    PG_PRIMARY,
    PG_REPLICA,
    PG_STARTING,
    PG_STOPPED,
    PG_UNKNOWN,
    PgObservation,
    parse_lsn,
)

log = logging.getLogger("pgraft.ha.pgctl")

#: directory_state() values.
#: Programs whose runs are logged at DEBUG only.
QUIET_PROGRAMS = frozenset(("pg_controldata",))
_HEX8 = re.compile(r"[0-9A-F]{8}")

DIR_MISSING = "missing"
DIR_EMPTY = "empty"
DIR_CLUSTER = "cluster"
DIR_OTHER = "not-a-cluster"

#: The programs HA mode runs, all from one bindir.
REQUIRED_BINARIES = ("postgres", "initdb", "pg_ctl", "pg_basebackup", "pg_rewind",
                     "pg_controldata")
STOP_MODES = ("smart", "fast", "immediate")
#: pg_controldata's "Database cluster state" of a cleanly stopped primary / replica.
CLEAN_STATES = ("shut down", "shut down in recovery")

SUN_PATH_MAX = 107         # bytes of a Unix socket path (sun_path is 108 with its NUL)
CONNECT_TIMEOUT = 3        # s; libpq treats anything under 2 as 2
OBSERVE_STATEMENT_MS = 5000
LOG_TAIL_LINES = 20
STDERR_TAIL_CHARS = 4000
PASSFILE_PREFIX = "pgraft-pgpass-"

#: What pg_rewind runs on a non-superuser source (PostgreSQL 15's pg_rewind documentation).
_REWIND_GRANTS = (
    "GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean) TO {}",
    "GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_file(text, boolean) TO {}",
    "GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text) TO {}",
    "GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)"
    " TO {}",
)

_SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}\Z")
_REASON = re.compile(r"[A-Za-z0-9_-]{1,40}\Z")
_INCLUDE_OK = re.compile(r"^\s*include_if_exists\s*=?\s*'pgraft\.conf'", re.MULTILINE)


def _tail(text: str, limit: int = STDERR_TAIL_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _passfile_field(value: str) -> str:
    # .pgpass: ':' and '\' inside a field are escaped with a backslash
    return value.replace("\\", "\\\\").replace(":", "\\:")


def _proc_state(pid: int) -> str | None:
    """The state letter of /proc/PID/stat (``Z`` for a zombie), None if unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    after = data.rpartition(")")[2].split()
    return after[0] if after else None


def _is_postmaster(pid: int, pgdata: str) -> bool:
    """Whether PID is a live (not zombie) PostgreSQL process working in ``pgdata``: a stale
    postmaster.pid (the postmaster was killed) may name a PID the kernel has given to
    another process since, even to a server of another cluster."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's process: a postmaster runs as the owner of PGDATA
    if _proc_state(pid) == "Z":
        return False
    try:
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
        cwd = os.readlink(f"/proc/{pid}/cwd")  # the postmaster works in its data directory
    except OSError:
        return True  # no /proc (or not allowed): alive is all we can tell
    return exe.startswith(("postgres", "postmaster")) and cwd == os.path.realpath(pgdata)


class PgControl:
    """One PostgreSQL server and its data directory, controlled by the node process.

    ``socket_dir`` is where ``unix_socket_directories`` points: a directory private to the
    node's OS user (created 0700 if missing). ``superuser`` (default: the OS user's name, as
    initdb names the bootstrap superuser) is the role the node connects as, by peer
    authentication over that socket.
    """

    def __init__(self, pgdata: str, *, bindir: str, port: int, listen_addresses: str,
                 socket_dir: str, log_path: str, superuser: str | None = None) -> None:
        if not pgdata:
            raise InvalidArgument("the PostgreSQL data directory must be given")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise InvalidArgument(f"PostgreSQL port {port!r} is not between 1 and 65535")
        if any(c in socket_dir for c in ',"\n\r\0') or not socket_dir:
            raise InvalidArgument(f"socket directory {socket_dir!r} must be a path without "
                                  "commas, double quotes or line breaks")
        self.pgdata = os.path.abspath(pgdata)
        self.bindir = os.path.abspath(bindir)
        self.port = port
        self.listen_addresses = listen_addresses
        self.socket_dir = os.path.abspath(socket_dir)
        self.log_path = os.path.abspath(log_path)
        self.superuser = superuser or pwd.getpwuid(os.geteuid()).pw_name
        sock = os.path.join(self.socket_dir, f".s.PGSQL.{port}")
        if len(os.fsencode(sock)) > SUN_PATH_MAX:
            raise InvalidArgument(
                f"the server's socket path {sock} is {len(os.fsencode(sock))} bytes long, "
                f"over the {SUN_PATH_MAX} a Unix socket path can have",
                hint="choose a shorter socket directory")
        self._proc: subprocess.Popen[bytes] | None = None
        self._last_exit: int | None = None

    # --- helpers --------------------------------------------------------------------------

    def _bin(self, name: str) -> str:
        return os.path.join(self.bindir, name)

    def _path(self, name: str) -> str:
        return os.path.join(self.pgdata, name)

    @staticmethod
    def _env(**extra: str) -> dict[str, str]:
        """The environment of every program: none of the caller's PG* variables (PGHOST,
        PGPASSWORD, PGSERVICE... would redirect or authenticate it), English messages."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        env.update(extra)
        return env

    def _run(self, what: str, cmd: list[str], *, timeout: float,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a program in its own session; on timeout kill its whole process group
        (pg_basebackup forks a WAL streamer) and raise PostgresTimeout."""
        # What only reads (pg_controldata, several times a second while a server is stopped)
        # stays out of the INFO log; the controller logs every action it takes.
        level = logging.DEBUG if os.path.basename(cmd[0]) in QUIET_PROGRAMS else logging.INFO
        log.log(level, "running %s", " ".join(cmd))
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, cwd="/",
                                    env=env if env is not None else self._env(),
                                    start_new_session=True)
        except OSError as exc:
            raise self._cannot_run(what, cmd[0], exc) from exc
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise PostgresTimeout(f"{what} did not finish within {timeout:g} s and was "
                                  f"killed: {_tail(err) or 'no output'}", command=what,
                                  stderr=_tail(err)) from None
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

    def _cannot_run(self, what: str, program: str, exc: OSError) -> PostgresCommandFailed:
        return PostgresCommandFailed(f"cannot run {what} ({program}): {errno_text(exc)}",
                                     hint=self.binaries_problem() or None, command=what)

    @staticmethod
    def _failed(what: str, res: subprocess.CompletedProcess[str],
                hint: str | None = None) -> PostgresCommandFailed:
        err = _tail(res.stderr or res.stdout or "")
        return PostgresCommandFailed(
            f"{what} failed (exit status {res.returncode}): {err or 'no output'}",
            hint=hint, command=what, returncode=res.returncode, stderr=err)

    def _check(self, what: str, cmd: list[str], *, timeout: float,
               env: dict[str, str] | None = None,
               hint: str | None = None) -> subprocess.CompletedProcess[str]:
        res = self._run(what, cmd, timeout=timeout, env=env)
        if res.returncode != 0:
            raise self._failed(what, res, hint)
        return res

    @contextlib.contextmanager
    def _passfile(self, user: str, password: str) -> Iterator[str]:
        """A password file (0600, in the private socket directory) for one program run."""
        os.makedirs(self.socket_dir, mode=0o700, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix=PASSFILE_PREFIX, dir=self.socket_dir)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(f"*:*:*:{_passfile_field(user)}:{_passfile_field(password)}\n")
            yield path
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the server log (empty if there is none)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                data = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(data.splitlines()[-lines:])

    def _append_log(self, title: str, text: str) -> None:
        """Add a program's output to the server log, where an operator looks for it."""
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        with contextlib.suppress(OSError), open(self.log_path, "a", encoding="utf-8") as f:
            f.write(f"--- pgraft {stamp}: {title} ---\n{text.rstrip()}\n--- end ---\n")

    def _write(self, path: str, text: str) -> None:
        try:
            write_file_atomic(path, text.encode())
        except OSError as exc:
            raise PostgresError(f"writing {path} failed: {errno_text(exc)}",
                                path=path) from exc

    # --- the directory, no server needed --------------------------------------------------

    def directory_state(self) -> str:
        """``missing``, ``empty``, ``cluster`` (PG_VERSION and global/pg_control), or
        ``not-a-cluster`` (anything else, a lost+found of a mount point included: initdb and
        pg_basebackup refuse it too)."""
        try:
            entries = os.listdir(self.pgdata)
        except FileNotFoundError:
            return DIR_MISSING
        except NotADirectoryError:
            return DIR_OTHER
        except OSError as exc:
            raise PostgresDirectoryRefused(
                f"cannot read the data directory {self.pgdata}: {errno_text(exc)}",
                hint="the directory must belong to the node's OS user") from exc
        if not entries:
            return DIR_EMPTY
        if "PG_VERSION" in entries and os.path.isfile(self._path("global/pg_control")):
            return DIR_CLUSTER
        return DIR_OTHER

    def _require_cluster(self, doing: str) -> None:
        state = self.directory_state()
        if state != DIR_CLUSTER:
            raise PostgresDirectoryRefused(
                f"cannot {doing}: {self.pgdata} holds no PostgreSQL cluster ({state})",
                hint="create it first (initdb or basebackup)", state=state)

    def control_data(self) -> dict[str, str]:
        """pg_controldata's fields by label ("Database system identifier", "Database cluster
        state", "Latest checkpoint's TimeLineID", ...)."""
        self._require_cluster("read pg_control")
        res = self._check("pg_controldata", [self._bin("pg_controldata"), "-D", self.pgdata],
                          timeout=30)
        fields: dict[str, str] = {}
        for line in res.stdout.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        return fields

    def system_identifier(self) -> int | None:
        """The cluster's system identifier; None when there is no cluster."""
        if self.directory_state() != DIR_CLUSTER:
            return None
        return int(self.control_data()["Database system identifier"])

    def binaries_problem(self) -> str | None:
        """None if ``bindir`` has every program HA mode runs; else a sentence saying what is
        missing."""
        if not os.path.isdir(self.bindir):
            return f"the PostgreSQL bin directory {self.bindir} does not exist"
        missing = [name for name in REQUIRED_BINARIES
                   if not os.access(self._bin(name), os.X_OK)]
        if not missing:
            return None
        return (f"the PostgreSQL bin directory {self.bindir} lacks "
                f"{', '.join(missing)} (HA mode needs {', '.join(REQUIRED_BINARIES)}); "
                "install the PostgreSQL 15 server package or point bindir at its bin")

    # --- setup ----------------------------------------------------------------------------

    def initdb(self, *, sync: bool = True, timeout: float = 300) -> None:
        """A new cluster in a missing or empty ``pgdata`` (UTF8, locale C, peer for local
        connections, SCRAM for TCP). ``sync=False`` skips the final fsync (tests only)."""
        state = self.directory_state()
        if state not in (DIR_MISSING, DIR_EMPTY):
            raise PostgresDirectoryRefused(
                f"initdb refused: {self.pgdata} is not missing or empty ({state}); "
                "nothing was changed", state=state)
        cmd = [self._bin("initdb"), "-D", self.pgdata, "-U", self.superuser, "-E", "UTF8",
               "--locale=C", "--auth-local=peer", "--auth-host=scram-sha-256",
               "--no-instructions"]
        if not sync:
            cmd.append("--no-sync")
        self._check("initdb", cmd, timeout=timeout)  # initdb removes what it made on failure

    def write_config(self, settings: Mapping[str, pgconf.Setting],
                     hba_lines: list[str]) -> None:
        """Write PGDATA/pgraft.conf (``settings`` plus port, listen_addresses,
        unix_socket_directories and hba_file, which come from this object) and
        PGDATA/pgraft_hba.conf (exactly ``hba_lines``), both 0600 and atomically, and make
        postgresql.conf end with the include of pgraft.conf exactly once.

        hba_file takes effect at the next start; the rest, where PostgreSQL allows it, at the
        next :meth:`reload`."""
        self._require_cluster("write the configuration")
        socket_value = self.socket_dir
        if any(c.isspace() for c in socket_value):
            socket_value = f'"{socket_value}"'  # a list setting: quote a path with blanks
        fixed: dict[str, pgconf.Setting] = {
            "port": self.port, "listen_addresses": self.listen_addresses,
            "unix_socket_directories": socket_value,
            "hba_file": self._path(pgconf.HBA_NAME)}
        conf = pgconf.render_conf(settings, fixed)
        hba = pgconf.render_hba(hba_lines)
        # the hba file first: once pgraft.conf names it, it must be there
        self._write(self._path(pgconf.HBA_NAME), hba)
        self._write(self._path(pgconf.CONF_NAME), conf)
        main = self._path("postgresql.conf")
        try:
            with open(main, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
        except FileNotFoundError:
            text = ""
        except OSError as exc:
            raise PostgresError(f"reading {main} failed: {errno_text(exc)}") from exc
        new = pgconf.with_include(text)
        if new != text:
            try:
                write_file_atomic(main, new.encode("utf-8", errors="surrogateescape"))
            except OSError as exc:
                raise PostgresError(f"writing {main} failed: {errno_text(exc)}") from exc

    def set_standby(self, standby: bool) -> None:
        """Create (or remove) PGDATA/standby.signal: the next start runs as a replica."""
        self._require_cluster("set the standby signal")
        path = self._path("standby.signal")
        try:
            if standby and not os.path.exists(path):
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
                fsync_dir(self.pgdata)
            elif not standby and os.path.exists(path):
                os.unlink(path)
                fsync_dir(self.pgdata)
        except OSError as exc:
            raise PostgresError(f"changing {path} failed: {errno_text(exc)}") from exc

    # --- the server -----------------------------------------------------------------------

    def start(self, timeout: float = 10) -> None:
        """Start the postmaster as a child of this process, in its own session (a signal to
        the node's process group does not reach it), its output appended to ``log_path``.
        Returns once postmaster.pid names it (within ``timeout`` s; so that
        :meth:`running_pid` finds it from any process), or raises PostgresCommandFailed with
        the end of the log if it exits first; :meth:`wait_ready` waits for connections."""
        self._require_cluster("start the server")
        pid = self.running_pid()
        if pid is not None:
            raise PostgresStateConflict(f"a postmaster (PID {pid}) already runs for "
                                        f"{self.pgdata}", pid=pid)
        try:
            with open(self._path("postgresql.conf"), encoding="utf-8",
                      errors="replace") as f:
                included = _INCLUDE_OK.search(f.read()) is not None
        except OSError:
            included = False
        if not included or not os.path.exists(self._path(pgconf.CONF_NAME)):
            raise PostgresDirectoryRefused(
                f"{self.pgdata} has no pgraft configuration: the server would start with "
                "another port and socket", hint="call write_config first")
        os.makedirs(self.socket_dir, mode=0o700, exist_ok=True)
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self._proc = subprocess.Popen(
                [self._bin("postgres"), "-D", self.pgdata], stdin=subprocess.DEVNULL,
                stdout=log_fd, stderr=subprocess.STDOUT, cwd="/", env=self._env(),
                start_new_session=True)
        except OSError as exc:
            raise self._cannot_run("postgres", self._bin("postgres"), exc) from exc
        finally:
            os.close(log_fd)
        self._last_exit = None
        log.info("started the postmaster for %s (PID %d)", self.pgdata, self._proc.pid)
        self._wait_pidfile(self._proc.pid, timeout)

    def _wait_pidfile(self, pid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._pidfile_pid() != pid:
            if self.running_pid() is None:
                raise self._not_running()
            if time.monotonic() >= deadline:
                raise PostgresTimeout(f"the postmaster of {self.pgdata} (PID {pid}) wrote no "
                                      f"postmaster.pid within {timeout:g} s",
                                      command="postgres", log=self.log_tail())
            time.sleep(0.02)

    def _pidfile_pid(self) -> int | None:
        try:
            with open(self._path("postmaster.pid"), encoding="utf-8", errors="replace") as f:
                first = f.readline().strip()
        except OSError:
            return None
        return int(first) if first.isdigit() else None

    def _not_running(self) -> PostgresCommandFailed:
        status = "" if self._last_exit is None else f" (exit status {self._last_exit})"
        tail = self.log_tail()
        return PostgresCommandFailed(
            f"the server of {self.pgdata} is not running{status}; the end of "
            f"{self.log_path}:\n{tail}", command="postgres", returncode=self._last_exit,
            log=tail)

    def running_pid(self) -> int | None:
        """The postmaster's PID: the one in postmaster.pid if that process is alive (also a
        postmaster this process did not start: after a node restart the old one may still
        run), else our child's while it lives (before it has written postmaster.pid). Reaps
        our child if it has exited."""
        child: int | None = None
        if self._proc is not None:
            rc = self._proc.poll()
            if rc is None:
                child = self._proc.pid
            else:
                self._last_exit = rc
                self._proc = None
        pid = self._pidfile_pid()
        if pid is not None and _is_postmaster(pid, self.pgdata):
            return pid
        return child

    def is_running(self) -> bool:
        return self.running_pid() is not None

    def _reap(self, timeout: float) -> None:
        if self._proc is None:
            return
        try:
            self._last_exit = self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return  # still running (another stop will reap it); running_pid() tells
        self._proc = None

    def wait_ready(self, timeout: float) -> None:
        """Wait until a connection succeeds. Raises PostgresCommandFailed (with the end of
        the log) if the postmaster exits first, PostgresTimeout after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        last: str = "no attempt"
        while True:
            if self.running_pid() is None:
                raise self._not_running()
            try:
                with self._connect():
                    return
            except psycopg.Error as exc:
                last = _first_line(exc)
            if time.monotonic() >= deadline:
                tail = self.log_tail()
                raise PostgresTimeout(
                    f"the server of {self.pgdata} accepted no connection within "
                    f"{timeout:g} s (last: {last}); the end of {self.log_path}:\n{tail}",
                    command="postgres", log=tail)
            time.sleep(0.1)

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        """``pg_ctl stop -m mode -w``; nothing to do if no server runs."""
        if mode not in STOP_MODES:
            raise InvalidArgument(f"stop mode {mode!r} is not one of {', '.join(STOP_MODES)}")
        if self.running_pid() is None:
            self._reap(1)
            return
        res = self._run("pg_ctl stop", [self._bin("pg_ctl"), "stop", "-D", self.pgdata,
                                        "-m", mode, "-w", "-t", str(max(1, math.ceil(timeout)))],
                        timeout=timeout + 15)
        if res.returncode != 0:
            if self.running_pid() is None:
                self._reap(5)
                return  # it went away by itself meanwhile
            if "did not shut down" in (res.stdout + res.stderr):
                raise PostgresTimeout(f"the server of {self.pgdata} did not stop within "
                                      f"{timeout:g} s ({mode} mode)", command="pg_ctl stop",
                                      hint="try mode 'immediate', or fence()")
            raise self._failed("pg_ctl stop", res)
        self._reap(10)

    def fence(self) -> None:
        """Stop accepting anything, now: SIGQUIT to the postmaster (PostgreSQL's immediate
        shutdown), and return at once.

        SIGQUIT rather than SIGKILL: the postmaster passes it on to every backend and WAL
        sender, which exit without finishing their transactions, so existing sessions end
        too; SIGKILL would kill the postmaster alone and leave its backends serving their
        clients (and committing) until they notice it is gone. Nothing committed is lost
        (the WAL is on disk); the next start runs crash recovery, and pg_rewind needs that
        first (:meth:`rewind` does it). :meth:`is_running` says when it is gone."""
        pid = self.running_pid()
        if pid is None:
            return
        log.warning("fencing the server of %s: SIGQUIT to the postmaster (PID %d)",
                    self.pgdata, pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)

    def promote(self, timeout: float = 60, *, checkpoint: bool = True) -> None:
        """``pg_ctl promote -w``: the replica becomes a primary on a new timeline. With
        ``checkpoint`` (the default) a CHECKPOINT follows, so that pg_control names the new
        timeline: PostgreSQL 15's pg_rewind reads the source's timeline from there and would
        find "no rewind required" against a just-promoted server."""
        if self.running_pid() is None:
            raise PostgresStateConflict(f"cannot promote: the server of {self.pgdata} is "
                                        "not running")
        self._check("pg_ctl promote", [self._bin("pg_ctl"), "promote", "-D", self.pgdata,
                                       "-w", "-t", str(max(1, math.ceil(timeout)))],
                    timeout=timeout + 15)
        if checkpoint:
            self.execute("CHECKPOINT", timeout=timeout)

    def reload(self) -> None:
        """``pg_ctl reload`` (SIGHUP: the server re-reads its files a moment later;
        primary_conninfo and primary_slot_name are reloadable in PostgreSQL 15). Nothing to
        do if no server runs: the next start reads the files."""
        if self.running_pid() is None:
            return
        self._check("pg_ctl reload", [self._bin("pg_ctl"), "reload", "-D", self.pgdata],
                    timeout=30)

    # --- copies ---------------------------------------------------------------------------

    def basebackup(self, *, host: str, port: int, user: str, password: str, slot: str | None,
                   timeout: float = 600,
                   conninfo_options: Mapping[str, str] | None = None) -> None:
        """Copy the cluster of ``host:port`` into a missing or empty ``pgdata`` with
        pg_basebackup (WAL streamed, fast checkpoint, through replication slot ``slot`` if
        given). ``conninfo_options`` are further libpq options (sslmode, ...). Anything else
        in ``pgdata`` is refused with nothing touched. On failure what it created is removed
        and PostgresCommandFailed carries pg_basebackup's error output.

        The copy holds the source's postgresql.conf, pgraft.conf and pgraft_hba.conf: call
        :meth:`write_config` (and :meth:`set_standby`) before starting it."""
        state = self.directory_state()
        if state not in (DIR_MISSING, DIR_EMPTY):
            raise PostgresDirectoryRefused(
                f"basebackup refused: {self.pgdata} is not missing or empty ({state}); "
                "nothing was changed", state=state)
        if slot is not None and not _SLOT_NAME.match(slot):
            raise InvalidArgument(f"{slot!r} is not a replication slot name")
        if state == DIR_EMPTY:
            try:
                os.chmod(self.pgdata, 0o700)  # PostgreSQL refuses a group/world-open PGDATA
            except OSError as exc:
                raise PostgresDirectoryRefused(
                    f"basebackup refused: cannot use {self.pgdata}: {errno_text(exc)}",
                    hint="the directory must belong to the node's OS user") from exc
        conninfo = make_conninfo(host=host, port=port, user=user,
                                 connect_timeout=CONNECT_TIMEOUT * 3,
                                 **dict(conninfo_options or {}))
        cmd = [self._bin("pg_basebackup"), "-D", self.pgdata, "-d", conninfo, "-X", "stream",
               "--checkpoint=fast", "--no-password"]
        if slot is not None:
            cmd += ["-S", slot]
        try:
            with self._passfile(user, password) as passfile:
                res = self._run("pg_basebackup", cmd, timeout=timeout,
                                env=self._env(PGPASSFILE=passfile))
        except BaseException:
            self._undo_basebackup(created=state == DIR_MISSING)
            raise
        if res.returncode != 0:
            self._undo_basebackup(created=state == DIR_MISSING)
            raise self._failed("pg_basebackup", res, hint=(
                "check that the source accepts a replication connection from this host "
                "(pg_hba), the role and password, and the slot"))

    def _undo_basebackup(self, *, created: bool) -> None:
        """Remove what a failed pg_basebackup left: the directory it created, or the
        contents of the directory that was empty before."""
        if created:
            shutil.rmtree(self.pgdata, ignore_errors=True)
            return
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.pgdata):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)

    @staticmethod
    def source_problem(*, host: str, port: int, user: str, password: str,
                       dbname: str = "postgres") -> str | None:
        """None if ``host:port`` accepts ``user`` and runs as a primary (a source that
        pg_basebackup and pg_rewind can use now); else why not, in a few words. Lets the
        caller tell "the primary is not there yet" (retry) from "this directory cannot be
        rewound" (rebuild)."""
        try:
            with psycopg.connect(host=host, port=port, user=user, password=password,
                                 dbname=dbname, connect_timeout=CONNECT_TIMEOUT,
                                 application_name="pgraft", autocommit=True) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        except psycopg.Error as exc:
            return f"{host}:{port} does not accept {user}: {_first_line(exc)}"
        if row is None or row[0]:
            return f"{host}:{port} is not a primary (yet)"
        return None

    def rewind(self, *, host: str, port: int, user: str, password: str,
               dbname: str = "postgres", timeout: float = 600,
               conninfo_options: Mapping[str, str] | None = None) -> str:
        """Make the stopped cluster a possible replica of ``host:port`` with pg_rewind, and
        return what it said ("no rewind required" is success too), preceded by a line about
        crash recovery when that ran.

        A cluster that was not shut down cleanly (fenced, killed: "in production", "in
        archive recovery", ...) first runs crash recovery in single-user mode, without its
        standby.signal/recovery.signal (single-user mode refuses standby mode). The source
        gets a CHECKPOINT first (pg_rewind reads its timeline from pg_control; the role needs
        pg_checkpoint, which :meth:`ensure_replication_role` grants).

        pg_rewind copies the source's configuration files: call :meth:`write_config` and
        :meth:`set_standby` afterwards."""
        deadline = time.monotonic() + timeout
        if self.running_pid() is not None:
            raise PostgresStateConflict(f"cannot rewind: the server of {self.pgdata} is "
                                        "running", hint="stop (or fence) it first")
        self._require_cluster("rewind")
        notes: list[str] = []
        state = self.control_data().get("Database cluster state", "")
        if state not in CLEAN_STATES:
            self._crash_recovery(state, deadline - time.monotonic())
            notes.append(f"crash recovery in single-user mode done (the cluster state was "
                         f"{state!r})")
        conninfo = make_conninfo(host=host, port=port, user=user, dbname=dbname,
                                 connect_timeout=CONNECT_TIMEOUT * 3,
                                 **dict(conninfo_options or {}))
        try:
            with psycopg.connect(conninfo, password=password, autocommit=True) as conn:
                conn.execute("CHECKPOINT")
        except psycopg.Error as exc:
            raise PostgresQueryFailed(
                f"CHECKPOINT on the rewind source {host}:{port} as {user} failed: "
                f"{_first_line(exc)}", sqlstate=exc.sqlstate,
                hint="run ensure_replication_role on the primary (it grants pg_checkpoint) "
                     "and check pg_hba for the postgres database") from exc
        cmd = [self._bin("pg_rewind"), f"--target-pgdata={self.pgdata}",
               f"--source-server={conninfo}"]  # pg_rewind never prompts for a password
        with self._passfile(user, password) as passfile:
            res = self._run("pg_rewind", cmd, timeout=max(1.0, deadline - time.monotonic()),
                            env=self._env(PGPASSFILE=passfile))
        if res.returncode != 0:
            raise self._failed("pg_rewind", res, hint=(
                "if the source no longer has the WAL since the divergence, rebuild this node "
                "with basebackup (move_aside first)"))
        return "\n".join([*notes, (res.stdout + res.stderr).strip()])

    def _crash_recovery(self, state: str, timeout: float) -> None:
        log.warning("%s was not shut down cleanly (%s): crash recovery in single-user mode",
                    self.pgdata, state)
        for name in ("standby.signal", "recovery.signal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(name))
        res = self._run("postgres --single",
                        [self._bin("postgres"), "--single", "-D", self.pgdata, "template1"],
                        timeout=max(1.0, timeout))
        self._append_log("crash recovery in single-user mode (for pg_rewind)",
                         res.stdout + res.stderr)
        if res.returncode != 0:
            raise self._failed("postgres --single (crash recovery)", res)
        after = self.control_data().get("Database cluster state", "")
        if after not in CLEAN_STATES:
            raise PostgresCommandFailed(
                f"crash recovery of {self.pgdata} in single-user mode left the cluster "
                f"{after!r}, not shut down", command="postgres --single")

    def move_aside(self, reason: str) -> str:
        """Rename ``pgdata`` to ``{pgdata}.pgraft-{reason}-{UTC time}`` and return the new
        path: the HA layer never deletes a data directory it cannot prove redundant."""
        if not isinstance(reason, str) or not _REASON.match(reason):
            raise InvalidArgument(f"reason {reason!r} must be 1-40 letters, digits, - or _")
        if self.running_pid() is not None:
            raise PostgresStateConflict(f"cannot move {self.pgdata} aside: its server is "
                                        "running", hint="stop it first")
        if not os.path.lexists(self.pgdata):
            raise PostgresDirectoryRefused(f"cannot move {self.pgdata} aside: it does not "
                                           "exist")
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
        base = f"{self.pgdata}.pgraft-{reason}-{stamp}"
        target = base
        for n in range(2, 102):
            if not os.path.lexists(target):
                break
            target = f"{base}-{n}"
        else:
            raise PostgresError(f"cannot move {self.pgdata} aside: {base} and 100 more exist")
        try:
            os.rename(self.pgdata, target)
            fsync_dir(os.path.dirname(self.pgdata))
        except OSError as exc:
            raise PostgresError(f"moving {self.pgdata} to {target} failed: "
                                f"{errno_text(exc)}") from exc
        log.warning("moved %s aside to %s (%s)", self.pgdata, target, reason)
        return target

    # --- SQL ------------------------------------------------------------------------------

    def _connect(self, *, statement_timeout_ms: int | None = None
                 ) -> psycopg.Connection[tuple[Any, ...]]:
        kwargs: dict[str, Any] = {}
        if statement_timeout_ms:
            kwargs["options"] = f"-c statement_timeout={statement_timeout_ms}"
        return psycopg.connect(host=self.socket_dir, port=self.port, user=self.superuser,
                               dbname="postgres", connect_timeout=CONNECT_TIMEOUT,
                               application_name="pgraft", autocommit=True, **kwargs)

    @staticmethod
    def _query_error(what: str, exc: psycopg.Error) -> PostgresQueryFailed:
        return PostgresQueryFailed(f"{what} failed: {_first_line(exc)}",
                                   sqlstate=exc.sqlstate)

    def execute(self, query: str, params: tuple[Any, ...] | Mapping[str, Any] = (), *,
                timeout: float = 30) -> list[tuple[Any, ...]]:
        """Run one statement on the local server (autocommit) and return its rows ([] for a
        statement without a result). ``%s`` (or ``%(name)s``) placeholders take ``params``."""
        try:
            with self._connect(statement_timeout_ms=max(1, int(timeout * 1000))) as conn, \
                    conn.cursor() as cur:
                cur.execute(query, params or None)
                return cur.fetchall() if cur.description is not None else []
        except psycopg.Error as exc:
            verb = query.split(None, 1)[0] if query.strip() else "an empty statement"
            raise self._query_error(f"{verb} on the local server", exc) from exc

    def _identity(self) -> tuple[int | None, int | None]:
        """(system id, checkpoint timeline) from pg_control; (None, None) if unreadable."""
        try:
            data = self.control_data()
            return (int(data["Database system identifier"]),
                    int(data["Latest checkpoint's TimeLineID"]))
        except (PostgresError, KeyError, ValueError):
            return None, None

    def observe(self, upstream_nodes: Mapping[tuple[str, int], int] | None = None
                ) -> PgObservation:
        """What the server says about itself; never raises (a failure is the ``error`` of
        the observation). A stopped server reports the system id and checkpoint timeline of
        its pg_control, no LSNs. ``upstream_nodes`` maps a (host, port) a replica may stream
        from to its node id (the sender of pg_stat_wal_receiver is looked up there: neither
        the slot name nor application_name names the upstream)."""
        try:
            return self._observe(upstream_nodes or {})
        except Exception as exc:  # never raises: the controller keeps observing
            return PgObservation(role=PG_UNKNOWN, error=f"observing {self.pgdata} failed: "
                                                        f"{_first_line(exc)}")

    def _observe(self, upstream_nodes: Mapping[tuple[str, int], int]) -> PgObservation:
        state = self.directory_state()
        if state in (DIR_MISSING, DIR_EMPTY):
            return PgObservation(role=PG_MISSING, error=f"no cluster in {self.pgdata} "
                                                        f"({state})")
        if state == DIR_OTHER:
            return PgObservation(role=PG_UNKNOWN, error=f"{self.pgdata} holds files but no "
                                                        "PostgreSQL cluster")
        if self.running_pid() is None:
            sysid, tli = self._identity()
            return PgObservation(role=PG_STOPPED, system_id=sysid, timeline=tli,
                                 error="the server is not running")
        try:
            conn = self._connect(statement_timeout_ms=OBSERVE_STATEMENT_MS)
        except psycopg.Error as exc:
            sysid, _ = self._identity()
            return PgObservation(role=PG_STARTING, system_id=sysid, error=_first_line(exc))
        try:
            with conn:
                obs = self._observe_sql(conn, upstream_nodes)
        except psycopg.Error as exc:
            return PgObservation(role=PG_UNKNOWN, error=f"querying the server failed: "
                                                        f"{_first_line(exc)}")
        if obs.role == PG_REPLICA and not obs.streaming:
            switched = self.newest_history_timeline()
            if switched is not None and (obs.timeline or 0) < switched:
                obs = dataclasses.replace(obs, timeline=switched)
        return obs

    def newest_history_timeline(self) -> int | None:
        """The newest timeline whose history file is in pg_wal: the timeline a replica has
        switched to. Without a WAL receiver PostgreSQL 15 offers only the last restartpoint's
        timeline, which predates a switch until the next restartpoint: a replica whose
        upstream died right after a promotion would otherwise look a timeline behind."""
        try:
            names = os.listdir(os.path.join(self.pgdata, "pg_wal"))
        except OSError:
            return None
        found = [int(n[:8], 16) for n in names
                 if len(n) == 16 and n.endswith(".history") and _HEX8.fullmatch(n[:8])]
        return max(found) if found else None

    @staticmethod
    def _observe_sql(conn: psycopg.Connection[tuple[Any, ...]],
                     upstream_nodes: Mapping[tuple[str, int], int]) -> PgObservation:
        row = conn.execute("SELECT pg_is_in_recovery(), system_identifier "
                           "FROM pg_control_system()").fetchone()
        assert row is not None
        in_recovery = bool(row[0])
        sysid = int(row[1]) & 0xFFFFFFFFFFFFFFFF  # bigint in SQL, unsigned in pg_control
        if in_recovery:
            rep = conn.execute(
                "SELECT pg_is_in_recovery(), pg_last_wal_receive_lsn()::text, "
                "pg_last_wal_replay_lsn()::text, "
                "(SELECT timeline_id FROM pg_control_checkpoint()), "
                "w.status, w.received_tli, w.latest_end_lsn::text, w.sender_host, "
                "w.sender_port, w.conninfo "
                "FROM (VALUES (1)) AS one(x) LEFT JOIN pg_stat_wal_receiver AS w ON true"
            ).fetchone()
            assert rep is not None
            if rep[0]:
                (_, received, replayed, ckpt_tli, status, received_tli, latest_end,
                 sender_host, sender_port, conninfo) = rep
                replayed_lsn = parse_lsn(replayed)
                received_lsn = parse_lsn(received)
                # the receiver's timeline; without one, the last restartpoint's (it lags)
                timeline = received_tli or ckpt_tli
                return PgObservation(
                    role=PG_REPLICA, timeline=int(timeline) if timeline else None,
                    received_lsn=received_lsn if received_lsn is not None else replayed_lsn,
                    replayed_lsn=replayed_lsn, upstream_lsn=parse_lsn(latest_end),
                    streaming=status == "streaming",
                    upstream_node=_upstream(upstream_nodes, sender_host, sender_port,
                                            conninfo),
                    system_id=sysid)
            # promoted between the two queries: it is a primary now
        cur = conn.execute("SELECT pg_current_wal_lsn()::text, "
                           "pg_walfile_name(pg_current_wal_lsn())").fetchone()
        assert cur is not None
        lsn = parse_lsn(cur[0])
        return PgObservation(role=PG_PRIMARY, timeline=int(cur[1][:8], 16), received_lsn=lsn,
                             replayed_lsn=lsn, system_id=sysid)

    def ensure_replication_role(self, user: str, password: str) -> None:
        """Create (or alter) ``user`` as a LOGIN REPLICATION role with ``password``, allowed
        to connect to the postgres database, to run the file functions pg_rewind needs from a
        non-superuser source, and CHECKPOINT (pg_checkpoint). Run on the primary.

        The password reaches the server only as a SCRAM verifier computed here, in a
        transaction that turns statement logging off."""
        if not user or not password:
            raise InvalidArgument("the replication role needs a name and a password")
        if user == self.superuser:
            raise InvalidArgument(f"the replication role must not be the superuser {user!r}")
        role = sql.Identifier(user)
        try:
            with self._connect() as conn:
                verifier = conn.pgconn.encrypt_password(password.encode(), user.encode(),
                                                        b"scram-sha-256").decode()
                with conn.transaction():
                    conn.execute("SET LOCAL log_statement = 'none'")
                    conn.execute("SET LOCAL log_min_duration_statement = -1")
                    conn.execute("SET LOCAL log_min_error_statement = 'panic'")
                    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                          (user,)).fetchone()
                    verb = sql.SQL("ALTER" if exists else "CREATE")
                    conn.execute(sql.SQL("{} ROLE {} WITH LOGIN REPLICATION PASSWORD {}")
                                 .format(verb, role, sql.Literal(verifier)))
                    conn.execute(sql.SQL("GRANT CONNECT ON DATABASE postgres TO {}")
                                 .format(role))
                    for grant in _REWIND_GRANTS:
                        conn.execute(sql.SQL(grant).format(role))
                    conn.execute(sql.SQL("GRANT pg_checkpoint TO {}").format(role))
        except psycopg.Error as exc:
            raise self._query_error(f"setting up the replication role {user!r}", exc) from exc

    def ensure_slots(self, wanted: set[str], prefix: str = "pgraft_node_") -> None:
        """Create the physical slots of ``wanted`` that are missing (reserving WAL at once);
        drop the inactive physical slots named ``prefix...`` that are not wanted. Other slots
        are never touched; a slot that became active meanwhile is kept."""
        wanted = set(wanted)
        for name in wanted:
            if not isinstance(name, str) or not _SLOT_NAME.match(name):
                raise InvalidArgument(f"{name!r} is not a replication slot name (lower-case "
                                      "letters, digits, _; at most 63)")
        try:
            with self._connect() as conn:
                existing = {r[0]: (r[1], bool(r[2])) for r in conn.execute(
                    "SELECT slot_name, slot_type, active FROM pg_replication_slots")}
                for name in sorted(wanted - existing.keys()):
                    with contextlib.suppress(psycopg.errors.DuplicateObject):  # made meanwhile
                        conn.execute("SELECT pg_create_physical_replication_slot(%s, true)",
                                     (name,))
                for name, (kind, active) in sorted(existing.items()):
                    if (kind == "physical" and not active and name.startswith(prefix)
                            and name not in wanted):
                        with contextlib.suppress(psycopg.errors.ObjectInUse,  # in use now
                                                 psycopg.errors.UndefinedObject):  # gone
                            conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
        except psycopg.Error as exc:
            raise self._query_error("managing the replication slots", exc) from exc

    def create_extension(self, name: str = "pgraft") -> None:
        """``CREATE EXTENSION IF NOT EXISTS name CASCADE`` (on the primary)."""
        if not name:
            raise InvalidArgument("the extension name must not be empty")
        try:
            with self._connect() as conn:
                conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {} CASCADE")
                             .format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise self._query_error(f"CREATE EXTENSION {name}", exc) from exc


def _upstream(upstream_nodes: Mapping[tuple[str, int], int], host: str | None,
              port: int | None, conninfo: str | None) -> int | None:
    """The node id of the sender a replica streams from: (sender_host, sender_port), else
    the host and port of its conninfo, looked up in ``upstream_nodes``."""
    if not upstream_nodes:
        return None
    if host and port and (host, int(port)) in upstream_nodes:
        return upstream_nodes[(host, int(port))]
    if conninfo:
        try:
            info = conninfo_to_dict(conninfo)
            key = (str(info.get("host") or info.get("hostaddr")), int(info.get("port") or 0))
        except (psycopg.Error, ValueError, TypeError):
            return None
        return upstream_nodes.get(key)
    return None
