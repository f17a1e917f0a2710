"""Real Prefect and MLflow servers on loopback, backed by a throwaway PostgreSQL server.

For end-to-end tests that must talk to the same kind of servers the pipeline uses in production
(no ephemeral Prefect API, no file/SQLite MLflow store):

* :class:`PrefectServer` creates a ``prefect`` database on a :class:`PostgresServer` and runs
  ``prefect server start`` (the venv's executable) on 127.0.0.1 at a free port, with
  ``PREFECT_HOME`` in a folder of the caller's choosing, the asyncpg driver, migrations on start
  and analytics off. The UI stays on (``.ui_url``).
* :class:`MlflowServer` creates an ``mlflow`` database and runs ``mlflow server`` with that
  backend store, proxied artifact serving into ``<root>/artifacts`` and one uvicorn worker.
* :class:`ModelServer` runs ``mlflow models serve`` on a registered model (no database of its
  own: it reads the registry of the tracking URI it is given).

Each server runs in its own session (process group) with stdout and stderr in a log file;
``stop()`` sends SIGTERM to the whole group, then SIGKILL after a timeout, is idempotent and is
registered with :mod:`atexit`; on Linux a server started from the main thread also gets SIGTERM
(``PR_SET_PDEATHSIG``) if the test process dies without running atexit (SIGKILL, an unhandled
SIGTERM from a CI timeout), so an interrupted test run leaves no server behind. A start that
fails or times out raises :class:`ServerStartError` carrying the log's tail. ``launch()`` and
``wait_ready()`` split ``start()`` so that both servers can boot concurrently (the fixture does
that); ``startup_s`` records how long each took, from spawn to a healthy API.

``env()`` gives the variables a client process needs (merge them into ``os.environ``); every
process started here also gets ``DO_NOT_TRACK=1``, ``MLFLOW_DISABLE_TELEMETRY=true`` and
``PREFECT_SERVER_ANALYTICS_ENABLED=false`` (the machines have no internet).

Notes on the servers' settings:

* The Prefect server's environment is the caller's minus every ``PREFECT_*`` variable (so a
  developer's profile or ``PREFECT_API_URL`` cannot steer it), plus ours.
* MLflow 3.x's security middleware accepts ``Host: 127.0.0.1:<port>`` and ``localhost`` by
  default, so no ``--allowed-hosts`` is needed on loopback.
* MLflow's server would also launch a job-execution runner (huey consumers: extra processes
  for GenAI jobs) unless ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``; it is off here
  (``enable_jobs=True`` turns it back on).

:func:`prefect_mlflow_servers` is a session fixture starting both on the session's
``postgres_server`` (so it skips, or fails under ``RLSD_TEST_REQUIRE_POSTGRES=1``, exactly as
that fixture does).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.postgres import PostgresServer, free_port

HOST = "127.0.0.1"

#: No telemetry, analytics or update checks from anything started here.
NO_TELEMETRY_ENV = {
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


class ServerStartError(RuntimeError):
    """A server did not come up; the message carries its log's tail."""


def _venv_executable(name: str) -> Path:
    exe = Path(sys.executable).parent / name
    if not os.access(exe, os.X_OK):
        raise ServerStartError(f"{exe} is not an executable (is {name} installed in this venv?)")
    return exe


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """Status and body of a GET; (0, b"") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError, TimeoutError):
        return 0, b""


def check_database(url: str, what: str) -> None:
    """Fail fast, and plainly, when a server's database is unreachable: MLflow's server would
    otherwise retry its connection for about 100 s before it exits."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, connect_args={"connect_timeout": 5}, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        raise ServerStartError(f"{what}: cannot connect to its database: {exc}") from exc
    finally:
        engine.dispose()


def _in_main_thread() -> bool:
    return sys.platform.startswith("linux") and (
        threading.current_thread() is threading.main_thread()
    )


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM this child when the process that started it dies, even by SIGKILL
    or an unhandled SIGTERM (atexit handlers run in neither case). Linux only; a no-op
    elsewhere."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _live_group_members(pgid: int) -> list[int]:
    """The processes of group ``pgid`` that are still running (zombies excluded: an orphan is
    reaped by whoever adopts it, whenever that is). Linux reads /proc; elsewhere any member."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    out = []
    for stat in proc.glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp
                out.append(int(stat.parent.name))
    return out


class _ServerProcess:
    """A server subprocess in its own process group, logging into one file."""

    name = "server"
    start_timeout_s = 120.0
    stop_timeout_s = 15.0
    #: log lines that mean the port was taken between free_port() and the bind
    _PORT_TAKEN = ("address already in use", "already in use", "errno 98")

    def __init__(self, log_file: Path) -> None:
        self.log_file = log_file
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None
        self._t0: float | None = None

    # -- to be provided by subclasses ---------------------------------------------------------

    def _command(self, port: int) -> list[str]:
        raise NotImplementedError

    def _server_env(self) -> dict[str, str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    # -- lifecycle ---------------------------------------------------------------------------

    def launch(self) -> None:
        """Spawn the process (returns at once; :meth:`wait_ready` waits for it)."""
        if self.proc is not None:
            raise ServerStartError(f"{self.name} server already launched (pid {self.proc.pid})")
        atexit.register(self.stop)
        self.port = free_port(HOST)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._t0 = time.monotonic()
        with self.log_file.open("ab") as log:
            log.write(f"=== {self.name} server on port {self.port} ===\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self._command(self.port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._server_env(),
                cwd=str(self.log_file.parent),
                start_new_session=True,  # its own process group: stop() signals all of it
                # The death signal fires when the starting THREAD ends, so only a server
                # started from the main thread gets it (a fixture's case).
                preexec_fn=_die_with_parent if _in_main_thread() else None,
            )

    def wait_ready(self, timeout_s: float | None = None, *, port_retries: int = 2) -> None:
        """Block until the API answers; on failure stop the process and raise with the log.

        If the process dies because another one took its port between :func:`free_port` and
        the bind, it is relaunched on another port (``port_retries`` times).
        """
        if self.proc is None or self._t0 is None:
            raise ServerStartError(f"{self.name} server was not launched")
        timeout_s = timeout_s or self.start_timeout_s
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                code = self.proc.poll()
                if code is not None:
                    tail = self.log_tail(15).lower()
                    if port_retries > 0 and any(p in tail for p in self._PORT_TAKEN):
                        port_retries -= 1
                        self.proc = None
                        self.launch()
                        continue
                    raise ServerStartError(
                        f"{self.name} server exited with code {code} before it was ready "
                        f"(port {self.port})\n--- {self.log_file} ---\n{self.log_tail()}"
                    )
                if self._ready():
                    self.startup_s = time.monotonic() - self._t0
                    return
                if time.monotonic() > deadline:
                    raise ServerStartError(
                        f"{self.name} server on port {self.port} not ready after "
                        f"{timeout_s:.0f} s\n--- {self.log_file} ---\n{self.log_tail()}"
                    )
                time.sleep(0.25)
        except BaseException:
            self.stop()
            raise

    def start(self) -> _ServerProcess:
        """Launch and wait until ready (see :meth:`wait_ready`)."""
        self.launch()
        self.wait_ready()
        return self

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after ``stop_timeout_s``; idempotent."""
        atexit.unregister(self.stop)
        proc = self.proc
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the group id is the leader's pid
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=self.stop_timeout_s)
        # children may outlive the leader (uvicorn workers, job runners): kill what is left
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise ServerStartError(f"{self.name} server was not launched")
        return f"http://{HOST}:{self.port}"

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PrefectServer(_ServerProcess):
    """``prefect server start`` on a ``prefect`` database of ``pg``, ``PREFECT_HOME=home``."""

    name = "prefect"

    def __init__(
        self,
        pg: PostgresServer,
        home: Path,
        *,
        database: str = "prefect",
        ui: bool = True,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        super().__init__(self.home / "prefect-server.log")
        self.pg = pg
        self.database = database
        self.ui = ui
        self.extra_env = dict(extra_env or {})
        self._database_created = False

    def launch(self) -> None:
        if not self._database_created:
            self.pg.create_database(self.database)
            self._database_created = True
        check_database(self.sync_database_url, "prefect server")
        super().launch()

    @property
    def database_url(self) -> str:
        """The server's database as the server sees it (asyncpg; the password included)."""
        return self.pg.url(self.database, driver="asyncpg")

    @property
    def sync_database_url(self) -> str:
        """The same database for a test's own SQLAlchemy engine (psycopg)."""
        return self.pg.url(self.database)

    def _command(self, port: int) -> list[str]:
        return [
            str(_venv_executable("prefect")),
            "server",
            "start",
            "--host",
            HOST,
            "--port",
            str(port),
            "--ui" if self.ui else "--no-ui",
        ]

    def _server_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(NO_TELEMETRY_ENV)
        env.update(
            {
                "PREFECT_HOME": str(self.home),
                "PREFECT_API_DATABASE_CONNECTION_URL": self.database_url,
                "PREFECT_API_DATABASE_MIGRATE_ON_START": "true",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_UI_ENABLED": "true" if self.ui else "false",
                # the API URL the UI's JavaScript calls
                "PREFECT_UI_API_URL": self.api_url,
                "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def _ready(self) -> bool:
        status, body = http_get(f"{self.api_url}/health", timeout=3)
        return status == 200 and body.strip() == b"true"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api"

    @property
    def ui_url(self) -> str:
        return self.base_url

    def env(self) -> dict[str, str]:
        """Variables a client process (a flow, ``prefect`` CLI) needs to use this server."""
        return {
            **NO_TELEMETRY_ENV,
            "PREFECT_API_URL": self.api_url,
            "PREFECT_HOME": str(self.home),
            # a client never starts a throwaway server of its own if the API is unreachable
            "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "false",
        }


class MlflowServer(_ServerProcess):
    """``mlflow server`` on an ``mlflow`` database of ``pg``, artifacts under ``root``."""

    name = "mlflow"

    def __init__(
        self,
        pg: PostgresServer,
        root: Path,
        *,
        database: str = "mlflow",
        workers: int = 1,
        enable_jobs: bool = False,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        super().__init__(self.root / "mlflow-server.log")
        self.pg = pg
        self.database = database
        self.workers = workers
        self.enable_jobs = enable_jobs
        self.extra_env = dict(extra_env or {})
        self._database_created = False

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    @property
    def backend_store_uri(self) -> str:
        return self.pg.url(self.database)  # postgresql+psycopg://user:password@host:port/db

    def launch(self) -> None:
        if not self._database_created:
            self.pg.create_database(self.database)
            self._database_created = True
        check_database(self.backend_store_uri, "mlflow server")
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        super().launch()

    def _command(self, port: int) -> list[str]:
        return [
            str(_venv_executable("mlflow")),
            "server",
            "--host",
            HOST,
            "--port",
            str(port),
            "--backend-store-uri",
            self.backend_store_uri,
            "--serve-artifacts",
            "--artifacts-destination",
            str(self.artifacts_dir),
            "--workers",
            str(self.workers),
        ]

    def _server_env(self) -> dict[str, str]:
        # MLFLOW_TRACKING_URI etc. from the caller must not point the server elsewhere
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env.update(NO_TELEMETRY_ENV)
        env.update(
            {
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true" if self.enable_jobs else "false",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def _ready(self) -> bool:
        status, body = http_get(f"{self.tracking_uri}/health", timeout=3)
        if status != 200 or body.strip() != b"OK":
            return False
        # /health answers before the store is usable on some versions: ask the REST API too
        status, body = http_get(
            f"{self.tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10
        )
        if status != 200:
            return False
        with contextlib.suppress(ValueError):
            return "experiments" in json.loads(body)
        return False

    @property
    def tracking_uri(self) -> str:
        return self.base_url

    def env(self) -> dict[str, str]:
        """Variables a client process needs to log to this server."""
        return {
            **NO_TELEMETRY_ENV,
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            # a dead server should fail a test in seconds, not after minutes of retries
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
        }


class ModelServer(_ServerProcess):
    """``mlflow models serve -m MODEL_URI --env-manager local`` (MLflow's scoring server under
    uvicorn) reading the registry at ``tracking_uri``; ready when ``/ping`` answers 200.

    The venv's ``bin`` goes first on ``PATH``: the CLI starts ``uvicorn`` by name.
    """

    name = "model"
    start_timeout_s = 180.0

    def __init__(self, model_uri: str, tracking_uri: str, log_file: Path) -> None:
        super().__init__(log_file)
        self.model_uri = model_uri
        self.tracking_uri = tracking_uri

    def _command(self, port: int) -> list[str]:
        return [
            str(_venv_executable("mlflow")), "models", "serve", "-m", self.model_uri,
            "--env-manager", "local", "-h", HOST, "-p", str(port),
        ]  # fmt: skip

    def _server_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env.update(NO_TELEMETRY_ENV)
        env.update(
            {
                "MLFLOW_TRACKING_URI": self.tracking_uri,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "OMP_NUM_THREADS": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def _ready(self) -> bool:
        status, _ = http_get(f"{self.base_url}/ping", timeout=3)
        return status == 200

    def stop(self) -> None:
        """SIGTERM the group and wait until every process in it has exited, then the base
        class's stop. The CLI exits at once on SIGTERM; uvicorn, its child, needs a moment to
        shut down, and the base class would SIGKILL it as soon as the CLI is gone."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout_s
            while time.monotonic() < deadline:
                proc.poll()  # reap the leader
                if not _live_group_members(proc.pid):
                    break
                time.sleep(0.1)
        super().stop()

    def invoke(self, payload: dict, timeout: float = 120.0) -> tuple[int, object]:
        """POST ``payload`` to ``/invocations``: the status and the decoded JSON answer."""
        req = urllib.request.Request(
            f"{self.base_url}/invocations", data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"}, method="POST",
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")


@dataclass
class PrefectMlflowServers:
    """Both servers and the PostgreSQL server behind them."""

    pg: PostgresServer
    prefect: PrefectServer
    mlflow: MlflowServer

    def env(self) -> dict[str, str]:
        """Everything a client process needs for both servers (merge into ``os.environ``)."""
        return {**self.prefect.env(), **self.mlflow.env()}

    @property
    def startup_s(self) -> dict[str, float | None]:
        return {"prefect": self.prefect.startup_s, "mlflow": self.mlflow.startup_s}

    def log_tails(self, lines: int = 40) -> str:
        return (
            f"--- prefect ({self.prefect.log_file}) ---\n{self.prefect.log_tail(lines)}\n"
            f"--- mlflow ({self.mlflow.log_file}) ---\n{self.mlflow.log_tail(lines)}"
        )

    def stop(self) -> None:
        for server in (self.prefect, self.mlflow):
            server.stop()


def start_servers(
    pg: PostgresServer, root: Path, *, concurrently: bool = True
) -> PrefectMlflowServers:
    """Start both servers under ``root`` (``prefect-home/``, ``mlflow/``); both or neither.

    ``concurrently`` launches both before waiting on either: the first Prefect start spends
    most of its time in migrations and MLflow's in its own, so they overlap well even on two
    cores.
    """
    servers = PrefectMlflowServers(
        pg=pg,
        prefect=PrefectServer(pg, Path(root) / "prefect-home"),
        mlflow=MlflowServer(pg, Path(root) / "mlflow"),
    )
    try:
        if concurrently:
            steps: list[Callable[[], None]] = [
                servers.prefect.launch,
                servers.mlflow.launch,
                servers.prefect.wait_ready,
                servers.mlflow.wait_ready,
            ]
            for step in steps:
                step()
        else:
            servers.prefect.start()
            servers.mlflow.start()
    except BaseException:
        servers.stop()
        raise
    return servers


@pytest.fixture(scope="session")
def prefect_mlflow_servers(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrefectMlflowServers]:
    """Real Prefect and MLflow servers on loopback for the whole session, on PostgreSQL."""
    servers = start_servers(postgres_server, tmp_path_factory.mktemp("servers"))
    try:
        yield servers
    finally:
        servers.stop()
