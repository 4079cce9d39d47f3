"""
A real PostgreSQL server for the tests, started once per test run.

C{initdb} and C{pg_ctl} (Debian's C{postgresql} package, which
C{scripts/test} installs when missing) build a cluster in a temporary
directory and start it on a free loopback port, with its socket in the same
directory.  PostgreSQL refuses to run as root, so under root (CI) the
cluster belongs to the C{postgres} system user (or C{nobody}).  The server is
stopped, in bounded time, when the test process exits.  C{pg_ctl} detaches
the server from the test's process group, so a test run killed before it
could stop its server leaves one behind: the next run stops and removes such
leftovers (their C{owner} file names a test process that is gone).

Tests reach it as the unprivileged role L{ROLE} with a password (so URLs
carry a real password to keep out of messages); the superuser connection
(trusted, over the socket) creates databases and can lock the role out to
play "the database is down".
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from typing import Any

from twisted.trial.unittest import SkipTest

__all__ = ["PASSWORD", "ROLE", "PostgresServer", "server"]

ROLE = "callback"
PASSWORD = "s3cret-Pw"
_STOP_TIMEOUT = 15


def _binDir() -> str | None:
    """Debian's newest PostgreSQL server binaries, else initdb on PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0,
    )
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(os.path.realpath(initdb)) if initdb else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _removeLeftovers(binDir: str) -> None:
    """Stop and remove clusters whose test process has died."""
    pattern = os.path.join(tempfile.gettempdir(), "callback-pg-*", "owner")
    for owner in glob.glob(pattern):
        directory = os.path.dirname(owner)
        try:
            with open(owner) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if _alive(pid):
            continue
        leftover = PostgresServer(binDir, directory)
        leftover._running = True
        leftover.stop()


def _freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """
    One running cluster.

    @ivar port: its TCP port on 127.0.0.1.
    @ivar directory: the temporary directory (data, socket, log).
    """

    def __init__(
        self, binDir: str, directory: str | None = None, fsync: bool = False
    ) -> None:
        self._bin = binDir
        # Tests run without fsync (they test behaviour, and a crash of the
        # test machine loses nothing of value); a benchmark of what a
        # commit costs runs with it, as deployed.
        self._fsync = fsync
        if directory is None:
            directory = tempfile.mkdtemp(prefix="callback-pg-")
            with open(os.path.join(directory, "owner"), "w") as f:
                f.write(str(os.getpid()))
        self.directory = directory
        self._data = os.path.join(self.directory, "data")
        self._prefix: list[str] = []
        if os.geteuid() == 0:
            user = "postgres"
            try:
                entry = pwd.getpwnam(user)
            except KeyError:
                user, entry = "nobody", pwd.getpwnam("nobody")
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
            self._prefix = ["runuser", "-u", user, "--"]
        self.port = _freePort()
        self._running = False

    def _run(self, *command: str, timeout: float = 60) -> None:
        subprocess.run(
            [*self._prefix, *command],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
            cwd=self.directory,
        )

    def start(self) -> None:
        """initdb, then start and wait until it accepts connections."""
        self._run(
            os.path.join(self._bin, "initdb"),
            "-D",
            self._data,
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
            f" -c fsync={'on' if self._fsync else 'off'} -c max_connections=50"
        )
        self._run(
            os.path.join(self._bin, "pg_ctl"),
            "-D",
            self._data,
            "-l",
            os.path.join(self.directory, "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
            timeout=90,
        )
        self._running = True
        self.admin(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")

    def stop(self) -> None:
        """Stop the server (immediate mode, bounded) and remove its files."""
        if self._running:
            self._running = False
            try:
                self._run(
                    os.path.join(self._bin, "pg_ctl"),
                    "-D",
                    self._data,
                    "-m",
                    "immediate",
                    "-w",
                    "-t",
                    str(_STOP_TIMEOUT),
                    "stop",
                    timeout=_STOP_TIMEOUT + 5,
                )
            except (subprocess.SubprocessError, OSError):
                self._killPostmaster()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _killPostmaster(self) -> None:
        try:
            with open(os.path.join(self._data, "postmaster.pid")) as f:
                pid = int(f.readline())
            os.kill(pid, 9)
        except (OSError, ValueError):
            pass

    def admin(self, sql: str) -> list[tuple[Any, ...]]:
        """Run one statement as the superuser; return its rows, if any."""
        import psycopg

        with psycopg.connect(
            host=self.directory,
            port=self.port,
            user="postgres",
            dbname="postgres",
            autocommit=True,
        ) as connection:
            cursor = connection.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def createDatabase(self, name: str) -> str:
        """A new, empty database owned by L{ROLE}; return its store URL."""
        self.admin(f"DROP DATABASE IF EXISTS {name}")
        self.admin(f"CREATE DATABASE {name} OWNER {ROLE}")
        return f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{self.port}/{name}"

    def lockOut(self) -> None:
        """
        Make the database unreachable for L{ROLE}: no new logins, and its
        open connections are ended (as a restarting server would).
        """
        self.admin(f"ALTER ROLE {ROLE} NOLOGIN")
        self.admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE usename = '{ROLE}'"
        )

    def letIn(self) -> None:
        """Undo L{lockOut}."""
        self.admin(f"ALTER ROLE {ROLE} LOGIN")


_server: PostgresServer | None = None
_failure: str | None = None


def server() -> PostgresServer:
    """
    The test run's PostgreSQL server, started on first use.

    @raise SkipTest: no PostgreSQL server binaries or no psycopg here.
    """
    global _server, _failure
    if _server is not None:
        return _server
    if _failure is not None:
        raise RuntimeError(_failure)
    binDir = _binDir()
    if binDir is None:
        raise SkipTest(
            "no PostgreSQL server binaries (initdb): install Debian's"
            " postgresql package (scripts/test does)"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise SkipTest("psycopg 3 is not installed (pip install -e .)") from None
    _removeLeftovers(binDir)
    _server = _started(binDir, fsync=False)
    return _server


def durableServer() -> PostgresServer:
    """
    A PostgreSQL server of its own with fsync on (COMMIT waits for the WAL
    on disk, as deployed), for benchmarks of what a commit costs; stopped
    at exit.

    @raise SkipTest: as L{server}.
    """
    binDir = _binDir()
    if binDir is None:
        raise SkipTest("no PostgreSQL server binaries (initdb)")
    return _started(binDir, fsync=True)


def _started(binDir: str, fsync: bool) -> PostgresServer:
    global _failure
    candidate = PostgresServer(binDir, fsync=fsync)
    try:
        candidate.start()
    except BaseException as e:
        detail = getattr(e, "stderr", b"") or b""
        _failure = f"cannot start PostgreSQL: {e} {detail.decode(errors='replace')}"
        candidate.stop()
        raise RuntimeError(_failure) from e
    atexit.register(candidate.stop)
    return candidate
