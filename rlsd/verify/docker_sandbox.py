"""The Docker sandbox: one locked-down container per batch, stdin/stdout over the attach socket.

Each batch runs in a fresh container: network mode ``none`` (unless the spec asks for network),
read-only root filesystem, a size-limited tmpfs at ``/tmp`` (the cwd and the only writable
place), memory limit with swap at the same value, CPU quota, pids limit, every capability dropped,
``no-new-privileges``, user ``65534:65534``, a small non-dumpable init as pid 1 (see
:data:`DOCKER_INIT`; ``image.ref`` images run their command as pid 1 instead), and an environment
holding only the protocol variables. The container is killed at the batch timeout or
when its stdout passes the output cap, and always removed. The next batch's container is started
ahead of time (``prestart``), so a batch's latency is mostly the checking itself.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlsd.verify import engine
from rlsd.verify.images import BASE_IMAGE, ImageError, build_image, image_id
from rlsd.verify.protocol import (
    ITEM_TIMEOUT_ENV,
    NONCE_ENV,
    STDERR_TAIL_BYTES,
    ResultStream,
    RunOutcome,
    new_nonce,
)
from rlsd.verify.sandbox import Sandbox, SandboxError, SandboxUnavailable
from rlsd.verify.spec import VerifierSpec, image_digest, image_tag
from rlsd.verify.warm_pool import WarmPool

KILL_GRACE_S = 10.0

#: pid 1 of every container built on the base image: non-dumpable (so code running as the same
#: uid can neither read the nonce from /proc/1/environ nor write into /proc/1/fd/1, which
#: docker-init would allow), reaps orphans (fork bombs leave no zombies holding pids), holds no
#: copy of stdin/stdout, and exits with the verifier's status. Killing pid 1 from inside the
#: container is impossible; the verifier itself (pid 2) can be killed by what it runs.
DOCKER_INIT = """\
import ctypes, os, sys
ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)
argv = sys.argv[1:]
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    except BaseException as exc:
        os.write(2, ("rlsd-init: cannot start %s: %s\\n" % (argv[0], exc)).encode())
        os._exit(127)
null = os.open("/dev/null", os.O_RDWR)
os.dup2(null, 0)
os.dup2(null, 1)
while True:
    try:
        done, status = os.wait()
    except ChildProcessError:
        os._exit(1)
    if done == pid:
        os._exit(os.waitstatus_to_exitcode(status) % 256 if os.WIFEXITED(status)
                 else 128 + os.WTERMSIG(status))
"""


@dataclass
class _Started:
    """A started batch container whose program is waiting for its stdin."""

    cid: str
    nonce: str
    created: float
    sock: Any = None
    raw: Any = None
    start_error: str | None = None


#: Containers this process created and has not removed yet (the atexit hook removes them).
_OWNED: set[str] = set()
_OWNED_LOCK = threading.Lock()
OWNER_LABEL = "rlsd.owner"


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@atexit.register
def _remove_owned() -> None:
    with _OWNED_LOCK:
        left = list(_OWNED)
        _OWNED.clear()
    if not left:
        return
    try:
        client = engine.docker_client(timeout=30)
    except Exception:
        return
    for cid in left:
        with contextlib.suppress(Exception):
            client.api.remove_container(cid, force=True)


def sweep_orphans(client: Any) -> int:
    """Remove batch containers left behind by dead processes of this host (best effort)."""
    host = socket.gethostname()
    removed = 0
    try:
        found = client.api.containers(all=True, filters={"label": "rlsd.sandbox"})
    except Exception:
        return 0
    for c in found:
        owner = (c.get("Labels") or {}).get(OWNER_LABEL, "")
        owner_host, _, pid = owner.rpartition(":")
        if owner_host != host or not pid.isdigit() or os.path.exists(f"/proc/{pid}"):
            continue
        with contextlib.suppress(Exception):
            client.api.remove_container(c["Id"], force=True)
            removed += 1
    return removed


class DockerSandbox(Sandbox):
    """``prestart``: containers per verifier started ahead of the next batch (default 1), so
    that a batch pays for feeding and checking only; each still serves exactly one batch, and
    the idle ones are removed by :meth:`close` (also at interpreter exit) or after
    ``prestart_ttl_s``. Leftovers of a killed process carry the label ``rlsd.sandbox``.
    """

    backend = "docker"

    def __init__(
        self,
        *,
        client: Any = None,
        base_image: str = BASE_IMAGE,
        build_missing: bool = True,
        pull: bool = False,
        pool_size: int = 4,
        retries: int = 2,
        prestart: int = 1,
        prestart_ttl_s: float = 300.0,
    ) -> None:
        super().__init__(pool_size=pool_size, retries=retries)
        if client is None:
            reason = engine.docker_available()
            if reason is not None:
                raise SandboxUnavailable(f"no Docker engine answers: {reason}")
            client = engine.docker_client(timeout=120, max_pool_size=max(10, 2 * pool_size + 2))
        self.client = client
        self.base_image = base_image
        self.build_missing = build_missing
        self.pull = pull
        self.prestart = max(0, int(prestart))
        self.prestart_ttl_s = prestart_ttl_s
        self._pool: WarmPool[_Started] = WarmPool(
            self._start,
            self._remove,
            size=self.prestart,
            ttl_s=prestart_ttl_s,
            name="rlsd-docker-bg",
        )
        sweep_orphans(self.client)

    def describe(self) -> str:
        try:
            v = self.client.version()
            return f"docker (engine {v.get('Version')}, API {v.get('ApiVersion')})"
        except Exception:
            return "docker"

    def _prepare(self, spec: VerifierSpec, folder: Path) -> str:
        """The image id to run (building a Dockerfile spec's image when allowed and missing)."""
        if spec.image.ref is None and not self.build_missing:
            tag = image_tag(spec, image_digest(folder))
            found = image_id(self.client, tag)
            if found is None:
                raise SandboxError(
                    f"image {tag} of verifier {spec.name!r} is not built: run `rlsd verifiers build`"
                )
            return found
        try:
            built = build_image(spec, folder, self.base_image, client=self.client, pull=self.pull)
        except ImageError as exc:
            raise SandboxError(f"verifier {spec.name!r}: {exc}") from None
        assert built.image_id is not None
        return built.image_id

    # -- containers -------------------------------------------------------------------------
    def _start(self, spec: VerifierSpec, image: str) -> _Started:
        """Create, attach to and start one batch container (its program then waits on stdin)."""
        import docker.errors

        api = self.client.api
        lim = spec.limits
        mem = lim.memory_mb * 1024 * 1024
        per_item_uid = spec.isolation == "per-item-uid"
        host_config = api.create_host_config(
            network_mode=None if lim.network else "none",
            read_only=True,
            tmpfs={"/tmp": f"rw,nosuid,nodev,size={lim.tmpfs_mb}m,mode=1777"},
            shm_size=f"{lim.tmpfs_mb}m",
            mem_limit=mem,
            memswap_limit=mem,
            nano_cpus=int(lim.cpus * 1e9),
            pids_limit=lim.pids,
            cap_drop=["ALL"],
            # per-item-uid: the program's own spawner needs these two to give each candidate a
            # uid of its own; everything else in the container runs without capabilities
            cap_add=["SETUID", "SETGID"] if per_item_uid else None,
            security_opt=["no-new-privileges"],
            ulimits=[docker.types.Ulimit(name="core", soft=0, hard=0)],
        )
        nonce = new_nonce()
        env = {NONCE_ENV: nonce, ITEM_TIMEOUT_ENV: f"{lim.item_timeout_s:g}"}
        command = list(spec.command)
        if spec.image.dockerfile is not None:  # built on our base image: it has python3
            command = ["python3", "-I", "-S", "-c", DOCKER_INIT, *command]
        try:
            container = api.create_container(
                image,
                command=command,
                user="0:0" if per_item_uid else "65534:65534",
                environment=env,
                working_dir="/tmp",
                stdin_open=True,  # with detach=False: AttachStdin and StdinOnce too
                tty=False,
                use_config_proxy=False,  # no proxy variables from ~/.docker/config.json
                network_disabled=not lim.network,
                host_config=host_config,
                labels={
                    "rlsd.verifier": spec.name,
                    "rlsd.sandbox": "batch",
                    OWNER_LABEL: _owner(),
                },
            )
        except docker.errors.APIError as exc:
            raise SandboxError(
                f"verifier {spec.name!r}: cannot create a container: {exc}"
            ) from None
        cid = container["Id"]
        with _OWNED_LOCK:
            _OWNED.add(cid)
        started = _Started(cid=cid, nonce=nonce, created=time.monotonic())
        try:
            started.sock = api.attach_socket(
                cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
            started.raw = getattr(started.sock, "_sock", started.sock)
            api.start(cid)
        except docker.errors.APIError as exc:
            started.start_error = str(exc)[:500]
        return started

    def _remove(self, started: _Started) -> None:
        import docker.errors

        for f in (started.raw, started.sock):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        for attempt in range(2):
            try:
                self.client.api.remove_container(started.cid, force=True)
                break
            except docker.errors.NotFound:
                break
            except docker.errors.APIError:  # being removed already, or the engine is busy
                if attempt == 0:
                    time.sleep(0.5)
        with _OWNED_LOCK:
            _OWNED.discard(started.cid)

    def close(self) -> None:
        """Remove the pre-started containers and wait for pending removals."""
        self._pool.close()

    def _run_once(
        self,
        spec: VerifierSpec,
        folder: Path,
        prepared: Any,
        data: bytes,
        ids: list[str],
        nonce: str,
    ) -> RunOutcome:
        started = self._pool.take((spec.name, prepared), spec, prepared)
        try:
            out = self._feed_and_collect(started, data, spec.limits, ids)
        except BaseException:
            self._remove(started)
            raise
        self._pool.later(started)
        out.nonce = started.nonce
        return out

    def _feed_and_collect(
        self, started: _Started, data: bytes, lim: Any, ids: list[str]
    ) -> RunOutcome:
        import docker.errors

        api = self.client.api
        cid, raw = started.cid, started.raw
        out = RunOutcome()
        if started.start_error or raw is None:
            out.start_error = started.start_error or "no attach socket"
            return out
        stdout = bytearray()
        stderr = bytearray()
        stream = ResultStream(started.nonce, ids, result_timeout_s=lim.result_deadline_s())
        out.parsed = stream.parsed
        t0 = time.monotonic()
        deadline = t0 + lim.batch_timeout_s

        def feed() -> None:
            # the program may exit or close its stdin early: its problem, not ours
            with contextlib.suppress(OSError):
                raw.sendall(data)
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_WR)

        writer = threading.Thread(target=feed, daemon=True, name="rlsd-docker-stdin")
        writer.start()
        raw.settimeout(0.2)
        buf = bytearray()
        complete = False
        while True:
            if time.monotonic() >= deadline:
                out.timed_out = True
                break
            if stream.stalled():
                out.stalled = True
                break
            try:
                chunk = raw.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while len(buf) >= 8:
                size = int.from_bytes(buf[4:8], "big")
                if len(buf) < 8 + size:
                    break
                kind = buf[0]
                payload = bytes(buf[8 : 8 + size])
                del buf[: 8 + size]
                if kind == 2:
                    stderr += payload
                    if len(stderr) > 2 * STDERR_TAIL_BYTES:
                        del stderr[:-STDERR_TAIL_BYTES]
                else:
                    room = lim.output_bytes - len(stdout)
                    stdout += payload[: max(0, room)]
                    stream.feed(payload[: max(0, room)])
                    if len(payload) > room:
                        out.output_capped = True
            if out.output_capped:
                break
            if stream.complete():
                # every item has its verdict: do not wait for the program and the container to
                # wind down (it is killed and removed in the background)
                complete = True
                break
        stream.close()
        killed = out.timed_out or out.output_capped or out.stalled
        if complete or (not killed and stream.complete()):
            # every item has its result: the exit status cannot change any verdict, so do not
            # wait for it (the container is removed in the background)
            out.exit_code = 0
            out.duration_s = time.monotonic() - t0
            out.stdout = bytes(stdout)
            out.stderr_tail = bytes(stderr[-STDERR_TAIL_BYTES:])
            return out
        if killed:
            # stop the stream first: the engine will not finish a container whose attached
            # output nobody reads
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(docker.errors.APIError):
                api.kill(cid)
        wait_s = KILL_GRACE_S if killed else max(1.0, deadline - time.monotonic())
        try:
            out.exit_code = int(api.wait(cid, timeout=wait_s).get("StatusCode", -1))
        except Exception:  # still running after closing its stdout: the batch timeout
            out.timed_out = out.timed_out or not killed
            with contextlib.suppress(docker.errors.APIError):
                api.kill(cid)
            out.exit_code = None
        out.duration_s = time.monotonic() - t0
        out.stdout = bytes(stdout)
        out.stderr_tail = bytes(stderr[-STDERR_TAIL_BYTES:])
        return out
