"""A throwaway PostgreSQL server for tests (and for any end-to-end run that needs one).

:class:`PostgresServer` runs ``initdb`` into a fresh temporary folder and starts ``postgres`` on
127.0.0.1 at a free port, with its unix socket inside that folder (so it never collides with a
system cluster's /var/run/postgresql), durability off (fsync, synchronous_commit,
full_page_writes: the data is thrown away anyway) and password (scram-sha-256) authentication
for everything, unix socket included. It creates a login role for the application, separate
from the bootstrap superuser, so tests exercise what an application role may do (own its
databases and tables, not bypass permissions). ``create_database(name)`` returns a SQLAlchemy
URL for the psycopg driver. On exit -- normal, error or interpreter shutdown -- the server is
stopped with ``pg_ctl stop -m immediate`` and the folder removed.

Run as root, ``initdb`` and ``postgres`` refuse to start, so the server runs as the ``postgres``
system user (``RLSD_TEST_POSTGRES_OS_USER`` overrides it) and the folder is created with that
owner; otherwise it runs as the current user.

The binaries are found through ``RLSD_TEST_POSTGRES_BINDIR``, ``pg_config --bindir``,
``/usr/lib/postgresql/<version>/bin`` (newest first) or ``initdb`` on PATH. The session fixture
:func:`postgres_server` skips its tests when none are found, or fails them when
``RLSD_TEST_REQUIRE_POSTGRES=1`` (as CI sets; ``infra/ci/start-services.sh`` installs Debian's
``postgresql`` package). The Debian cluster itself is never used.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres")
REQUIRE_ENV = "RLSD_TEST_REQUIRE_POSTGRES"
BINDIR_ENV = "RLSD_TEST_POSTGRES_BINDIR"
OS_USER_ENV = "RLSD_TEST_POSTGRES_OS_USER"
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresUnavailable(RuntimeError):
    """No usable PostgreSQL server binaries (or no system user to run them as root)."""


class PostgresServerError(RuntimeError):
    """The server could not be set up, started or used; the message carries the log's tail."""


def _has_binaries(bindir: Path) -> bool:
    return all(os.access(bindir / exe, os.X_OK) for exe in REQUIRED_BINARIES)


def _version_key(path: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin: numeric order, so 16 beats 9.6
    parts = re.findall(r"\d+", path.parent.name)
    return tuple(int(p) for p in parts) or (-1,)


def find_bindir() -> Path:
    """The folder holding initdb, pg_ctl and postgres; raises PostgresUnavailable saying where
    it looked."""
    override = os.environ.get(BINDIR_ENV)
    if override:
        # an explicit choice is honoured or refused, never silently replaced by another install
        if _has_binaries(Path(override)):
            return Path(override)
        raise PostgresUnavailable(
            f"{BINDIR_ENV}={override} does not hold executable {', '.join(REQUIRED_BINARIES)}"
        )
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out:
                candidates.append(Path(out))
    # Debian's layout; pg_config may belong to libpq-dev alone and name a folder with no server
    candidates.extend(
        sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    )
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)  # follows /usr/local/bin symlinks
    for bindir in candidates:
        if _has_binaries(bindir):
            return bindir
    looked = ", ".join(str(c) for c in candidates) or "no candidates"
    raise PostgresUnavailable(
        f"no PostgreSQL server binaries ({', '.join(REQUIRED_BINARIES)}) found via "
        f"{BINDIR_ENV}, pg_config --bindir, /usr/lib/postgresql/*/bin or PATH (looked in: "
        f"{looked}); install Debian's 'postgresql' package (infra/ci/start-services.sh does)"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the server retries if it loses the race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """A private PostgreSQL server in a temporary folder; use as a context manager.

    ``user``/``password`` are the application role's credentials (created with CREATEDB; it
    owns the databases made by :meth:`create_database`). The bootstrap superuser
    ``admin_user`` has its own random password and is used only for administration.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        bindir: Path | str | None = None,
        *,
        user: str = "rlsd",
        password: str | None = None,
        os_user: str | None = None,
        parent_dir: Path | str | None = None,
        start_timeout_s: float = 60.0,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.bindir = Path(bindir) if bindir is not None else find_bindir()
        if not _has_binaries(self.bindir):
            raise PostgresUnavailable(
                f"{self.bindir} does not hold executable {', '.join(REQUIRED_BINARIES)}"
            )
        if not _DB_NAME.match(user):
            raise ValueError(f"role name {user!r} must match {_DB_NAME.pattern}")
        self.user = user
        self.password = password or secrets.token_hex(16)
        self.admin_user = "postgres" if user != "postgres" else "pg_admin"
        self.admin_password = secrets.token_hex(16)
        self.start_timeout_s = start_timeout_s
        self.extra_settings = dict(settings or {})
        self._parent_dir = Path(parent_dir) if parent_dir is not None else None
        self._run_as: tuple[int, int] | None = None
        if os.geteuid() == 0:
            name = os_user or os.environ.get(OS_USER_ENV) or "postgres"
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                raise PostgresUnavailable(
                    f"running as root, but there is no system user {name!r} to run PostgreSQL "
                    f"as (initdb and postgres refuse root); create it or set {OS_USER_ENV}"
                ) from None
            self._run_as = (entry.pw_uid, entry.pw_gid)
        self.root: Path | None = None
        self.port: int | None = None
        self._running = False

    # -- paths -------------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self._require_root() / "data"

    @property
    def socket_dir(self) -> Path:
        return self._require_root()

    @property
    def log_file(self) -> Path:
        return self._require_root() / "postgres.log"

    def _require_root(self) -> Path:
        if self.root is None:
            raise PostgresServerError("the server has not been started")
        return self.root

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> PostgresServer:
        """initdb, start and wait until the server accepts the application role's login."""
        if self.root is not None:
            raise PostgresServerError(f"server already started in {self.root}")
        # Registered before anything exists, so an interrupted start is cleaned up too.
        atexit.register(self.stop)
        try:
            self._make_root()
            self._initdb()
            self._start_with_retries()
            self._create_app_role()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (immediate mode: the data is discarded) and remove its folder."""
        atexit.unregister(self.stop)
        root, self.root = self.root, None
        if root is None:
            return
        try:
            if self._running or (root / "data" / "postmaster.pid").exists():
                self._stop_server(root / "data")
        finally:
            self._running = False
            shutil.rmtree(root, ignore_errors=True)

    def _stop_server(self, data_dir: Path) -> None:
        proc = self._run(
            [self._bin("pg_ctl"), "stop", "-D", str(data_dir), "-m", "immediate", "-w", "-t", "30"],
            check=False,
        )
        if proc.returncode == 0:
            return
        # pg_ctl could not do it (e.g. the postmaster is wedged): kill it by its pid file
        pid_file = data_dir / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)

    def _make_root(self) -> None:
        parent = self._parent_dir or Path(tempfile.gettempdir())
        # Short prefix: the unix socket path must stay under ~107 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="rlsd-pg-", dir=parent))
        if self._run_as is not None:
            os.chown(self.root, *self._run_as)
            # The system user must reach the folder through its parents (a 0700 pytest tmp dir
            # owned by root would not do): say so plainly instead of an initdb error.
            probe = self._run(
                ["test", "-w", str(self.root), "-a", "-x", str(self.root)], check=False
            )
            if probe.returncode != 0:
                raise PostgresServerError(
                    f"the system user for PostgreSQL cannot reach {self.root}; pass a parent_dir "
                    "whose parents are world-traversable (the system temp dir normally is)"
                )

    def _initdb(self) -> None:
        pwfile = self._require_root() / "admin.pw"
        pwfile.write_text(self.admin_password + "\n")
        pwfile.chmod(0o600)
        if self._run_as is not None:
            os.chown(pwfile, *self._run_as)
        try:
            self._run(
                [
                    self._bin("initdb"),
                    "-D", str(self.data_dir),
                    "-U", self.admin_user,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    # C collation: text sorts by code point, as SQLite's BINARY does
                    "--encoding=UTF8", "--locale=C",
                    "--no-sync", "--no-instructions",
                ],
                what="initdb",
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)

    def _write_conf(self, port: int) -> None:
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "100",
            "shared_buffers": "64MB",
            "logging_collector": "off",
            "log_min_messages": "warning",
            "timezone": "'UTC'",
            **self.extra_settings,
        }
        # a file of its own, included last: restarts on another port rewrite only this
        (self.data_dir / "rlsd-test.conf").write_text(
            "".join(f"{k} = {v}\n" for k, v in settings.items())
        )
        conf = self.data_dir / "postgresql.conf"
        text = conf.read_text()
        if "include = 'rlsd-test.conf'" not in text:
            conf.write_text(text + "\ninclude = 'rlsd-test.conf'\n")

    def _start_with_retries(self, attempts: int = 3) -> None:
        for attempt in range(1, attempts + 1):
            self.port = free_port(self.host)
            self._write_conf(self.port)
            self.log_file.unlink(missing_ok=True)  # so the log read below is this attempt's
            proc = self._run(
                [
                    self._bin("pg_ctl"), "start", "-D", str(self.data_dir), "-l",
                    str(self.log_file), "-w", "-t", str(int(self.start_timeout_s)),
                ],
                check=False,
            )  # fmt: skip
            if proc.returncode == 0:
                self._running = True
                break
            log = self.log_tail()
            # Another process took the port between free_port() and the bind: try another.
            lost_port = "could not bind" in log or "could not create any TCP/IP sockets" in log
            if lost_port and attempt < attempts:
                continue
            raise PostgresServerError(
                f"pg_ctl start failed (exit {proc.returncode}) on port {self.port}: "
                f"{proc.stdout.strip()} {proc.stderr.strip()}\n--- {self.log_file} ---\n{log}"
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with self.admin_connect():
                    return
            except Exception as exc:  # noqa: BLE001 - retried until the deadline
                last = exc
                time.sleep(0.1)
        raise PostgresServerError(
            f"server on {self.host}:{self.port} did not accept connections within "
            f"{self.start_timeout_s:.0f} s: {last}\n--- {self.log_file} ---\n{self.log_tail()}"
        )

    def _create_app_role(self) -> None:
        # the password is random hex: safe inside a literal (DDL takes no bind parameters)
        with self.admin_connect() as conn:
            conn.execute(f"CREATE ROLE \"{self.user}\" LOGIN CREATEDB PASSWORD '{self.password}'")

    # -- use ---------------------------------------------------------------------------------

    def admin_connect(self, dbname: str = "postgres") -> Any:
        """A psycopg connection (autocommit) as the bootstrap superuser."""
        import psycopg

        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.admin_user,
            password=self.admin_password,
            dbname=dbname,
            autocommit=True,
            connect_timeout=5,
        )

    def url(self, dbname: str = "postgres", *, driver: str = "psycopg") -> str:
        """SQLAlchemy URL of a database, as the application role (driver: psycopg, asyncpg...)."""
        self._require_root()
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{self.user}:{self.password}@{self.host}:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """Create a database owned by the application role; returns its SQLAlchemy URL."""
        if not _DB_NAME.match(name):
            raise ValueError(f"database name {name!r} must match {_DB_NAME.pattern}")
        import psycopg

        try:
            with self.admin_connect() as conn:
                conn.execute(f'CREATE DATABASE "{name}" OWNER "{self.user}" TEMPLATE template0')
        except psycopg.errors.DuplicateDatabase:
            raise PostgresServerError(
                f"database {name!r} already exists on this server; pick another name"
            ) from None
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting its sessions first."""
        if not _DB_NAME.match(name):
            raise ValueError(f"database name {name!r} must match {_DB_NAME.pattern}")
        with self.admin_connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, PostgresServerError):
            return "(no log)"

    # -- processes ---------------------------------------------------------------------------

    def _bin(self, name: str) -> str:
        return str(self.bindir / name)

    def _run(
        self,
        cmd: list[str],
        *,
        check: bool = True,
        what: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        # PG* variables from the caller's environment (PGDATA, PGPORT...) must not steer the
        # tools towards another cluster.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        kwargs: dict[str, Any] = {}
        if self._run_as is not None:
            uid, gid = self._run_as
            kwargs.update(user=uid, group=gid, extra_groups=[])
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env=env,
            # "/": the system user may not be able to enter the caller's working directory
            cwd="/",
            timeout=self.start_timeout_s + 30,
            **kwargs,
        )
        if check and proc.returncode != 0:
            raise PostgresServerError(
                f"{what or cmd[0]} failed (exit {proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()}"
            )
        return proc


def postgres_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway server per test session; tests make their own databases on it."""
    try:
        server = PostgresServer()
    except PostgresUnavailable as exc:
        if postgres_required():
            pytest.fail(f"{REQUIRE_ENV} is set but PostgreSQL cannot run here: {exc}")
        pytest.skip(f"PostgreSQL not available: {exc}")
    with server:
        yield server
