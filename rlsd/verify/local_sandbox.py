"""The local sandbox, for machines without a Docker engine: the image's root filesystem under
bubblewrap, so a verdict does not depend on the backend.

The jail is built like the container: the verifier base image's root filesystem
(:mod:`rlsd.verify.rootfs`) read-only at ``/`` (its ``python3``, its packages, not the host's),
the files the verifier's Dockerfile COPYs at the same paths under ``/verifier`` (the local
sandbox refuses Dockerfiles that do more than COPY, ENV and the like), size-limited tmpfs at
``/tmp`` (the cwd) and ``/dev/shm``, a new ``/proc``, a minimal ``/dev``, no network (a new
network namespace holding only ``lo``), new pid, ipc and uts namespaces, no new privileges, the
image's environment plus the protocol variables. Started by root, the program runs without
capabilities under a uid drawn for this batch alone (in ``BATCH_UIDS``), or, for ``isolation:
per-item-uid``, as root with only CAP_SETUID and CAP_SETGID (as in Docker); started by another
user, as 65534 in a user namespace. A uid of its own matters because the kernel counts
``RLIMIT_NPROC`` per uid across the host: under the shared 65534 every container and jail of that
uid would draw on one count, and a busy neighbour would make an honest batch fail to start.

Limits: rlimits set on the sandbox process (inherited by the verifier): ``RLIMIT_AS`` =
``memory_mb`` (per process; Docker's cgroup bounds the whole container), ``RLIMIT_NPROC`` =
``pids`` (not for ``per-item-uid`` programs, which drop to 65534 themselves and bound every
candidate under the candidate's own uid), ``RLIMIT_CPU`` = the batch timeout, ``RLIMIT_FSIZE`` = ``tmpfs_mb``, no core files.
``cpus`` has no local equivalent (not enforced). The per-item limits a verifier sets itself
(python-tests' candidates) are the same on both backends. The batch timeout, the per-result
deadline and the output cap are enforced by this process, which kills the whole sandbox (its pid
namespace dies with it).
"""

from __future__ import annotations

import contextlib
import os
import resource
import secrets
import select
import shlex
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from rlsd.verify.images import ImageError, run_prepare
from rlsd.verify.protocol import (
    ITEM_TIMEOUT_ENV,
    NONCE_ENV,
    STDERR_TAIL_BYTES,
    ResultStream,
    RunOutcome,
    new_nonce,
)
from rlsd.verify.rootfs import Rootfs, RootfsError, ensure_rootfs
from rlsd.verify.sandbox import Sandbox, SandboxError, SandboxUnavailable
from rlsd.verify.spec import VerifierSpec
from rlsd.verify.warm_pool import WarmPool

SANDBOX_UID = 65534
SANDBOX_GID = 65534
#: uids for batches started by root, one drawn per jail; below python-tests' per-item uids
#: (2**30 and up) and far above any uid a distribution hands out.
BATCH_UIDS = range(1 << 29, 1 << 30)
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Dockerfile instructions the local sandbox can reproduce exactly (everything else: use Docker).
_SAFE_INSTRUCTIONS = {"ARG", "FROM", "COPY", "USER", "WORKDIR", "CMD", "ENV", "LABEL"}

_probe_lock = threading.Lock()
_probed: dict[str, str | None] = {}


class ImageLayout:
    """What a Dockerfile built on the base image puts in it: files under /verifier, and ENV."""

    def __init__(self, files: list[tuple[str, str]], env: dict[str, str]) -> None:
        self.files = files
        self.env = env


def _instructions(text: str) -> list[tuple[int, str, str]]:
    """(line number, INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    out: list[tuple[int, str, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        word, _, rest = pending.partition(" ")
        out.append((start, word.upper(), rest.strip()))
        pending = ""
    return out


def image_layout(spec: VerifierSpec, folder: Path) -> ImageLayout:
    """The verifier's files as its Dockerfile COPYs them, for the local jail; SandboxError for
    a Dockerfile whose image the local sandbox cannot reproduce exactly."""
    assert spec.image.dockerfile is not None
    path = folder / spec.image.dockerfile
    where = f"verifier {spec.name!r}: {path}"
    files: list[tuple[str, str]] = []
    env: dict[str, str] = {}
    for number, word, args in _instructions(path.read_text(encoding="utf-8")):
        if word not in _SAFE_INSTRUCTIONS:
            raise SandboxError(
                f"{where} line {number}: {word} makes an image the local sandbox cannot "
                "reproduce (it copies files onto the base image only): use Docker"
            )
        if word == "FROM" and args.split()[0] not in ("${BASE_IMAGE}", "$BASE_IMAGE"):
            raise SandboxError(f"{where} line {number}: FROM must be ${{BASE_IMAGE}}")
        if word == "ENV":
            parts = shlex.split(args)
            if len(parts) == 2 and "=" not in parts[0]:
                env[parts[0]] = parts[1]
            else:
                env.update(p.split("=", 1) for p in parts if "=" in p)
        if word == "COPY":
            files += _copy(folder, shlex.split(args), f"{where} line {number}")
    return ImageLayout(files, env)


def _copy(folder: Path, args: list[str], where: str) -> list[tuple[str, str]]:
    if any(a.startswith("--") for a in args) or len(args) < 2:
        raise SandboxError(f"{where}: COPY with options or without a destination: use Docker")
    *sources, dest = args
    if not dest.startswith("/verifier"):
        raise SandboxError(f"{where}: COPY to {dest} (outside /verifier): use Docker")
    into_dir = dest.endswith("/") or len(sources) > 1
    out: list[tuple[str, str]] = []
    root = folder.resolve()
    for src in sources:
        if any(c in src for c in "*?["):
            raise SandboxError(f"{where}: COPY with a wildcard ({src}): use Docker")
        host = (folder / src).resolve()
        if root not in (host, *host.parents):
            raise SandboxError(f"{where}: COPY {src} is outside the verifier folder")
        if host.is_dir():
            for item in sorted(host.rglob("*")):
                if item.is_file() and "__pycache__" not in item.parts:
                    rel = item.relative_to(host).as_posix()
                    out.append((str(item), dest.rstrip("/") + "/" + rel))
        elif host.is_file():
            target = dest.rstrip("/") + "/" + host.name if into_dir else dest
            out.append((str(host), target))
        else:
            raise SandboxError(f"{where}: COPY {src}: no such file in {folder}")
    return out


def _is_root() -> bool:
    return os.geteuid() == 0


def _rlimits(spec: VerifierSpec) -> list[tuple[int, int]]:
    lim = spec.limits
    cpu = int(lim.batch_timeout_s) + 2
    limits = [
        (resource.RLIMIT_AS, lim.memory_mb * 1024 * 1024),
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_FSIZE, lim.tmpfs_mb * 1024 * 1024),
        (resource.RLIMIT_CORE, 0),
    ]
    if spec.isolation != "per-item-uid":
        limits.append((resource.RLIMIT_NPROC, lim.pids))
    return limits


def batch_uid() -> int:
    """A fresh uid for one jail started by root (see the module docstring)."""
    return BATCH_UIDS.start + secrets.randbelow(len(BATCH_UIDS))


def _preexec(limits: list[tuple[int, int]]):
    def apply() -> None:  # runs in the forked child before exec: syscalls only
        for which, value in limits:
            hard = value + 1 if which == resource.RLIMIT_CPU else value
            resource.setrlimit(which, (value, hard))

    return apply


class LocalSandbox(Sandbox):
    """``mode``: ``auto`` or ``bwrap`` (the only local jail); ``rootfs``: a tree to use instead
    of the cached base image (tests); ``prestart``: jails started ahead of the next batch (each
    still serves one batch), as in the Docker sandbox."""

    backend = "local-bwrap"

    def __init__(
        self,
        *,
        mode: str = "auto",
        pool_size: int = 2,
        retries: int = 1,
        rootfs: Rootfs | None = None,
        prestart: int = 1,
        prestart_ttl_s: float = 300.0,
    ) -> None:
        super().__init__(pool_size=pool_size, retries=retries)
        self._pool: WarmPool[Launched] = WarmPool(
            self._launch, Launched.kill, size=prestart, ttl_s=prestart_ttl_s, name="rlsd-local"
        )
        if mode not in ("auto", "bwrap"):
            raise ValueError(
                f"unknown local sandbox mode {mode!r}: the local sandbox is bubblewrap over the "
                "image's root filesystem ('auto' or 'bwrap')"
            )
        try:
            self.rootfs = rootfs or ensure_rootfs()
        except RootfsError as exc:
            raise SandboxUnavailable(str(exc)) from None
        why = self._probe()
        if why is not None:
            raise SandboxUnavailable(f"no local sandbox works here: bwrap: {why}")
        self.mode = "bwrap"

    def describe(self) -> str:
        return f"local-bwrap (root filesystem of {self.rootfs.tag})"

    def _probe(self) -> str | None:
        key = str(self.rootfs.path)
        with _probe_lock:
            if key not in _probed:
                _probed[key] = self._probe_uncached()
            return _probed[key]

    def _probe_uncached(self) -> str | None:
        if shutil.which("bwrap", path=HOST_PATH) is None:
            return "bubblewrap is not installed (apt-get install bubblewrap)"
        argv = self._argv(_probe_spec(), ImageLayout([], {}), "probe", ["true"])
        try:
            proc = subprocess.run(argv, capture_output=True, timeout=30, env={"PATH": HOST_PATH})
        except (OSError, subprocess.TimeoutExpired) as exc:
            return str(exc)
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            return f"exit {proc.returncode}: {err[-1] if err else ''}"
        return None

    # -- preparation ----------------------------------------------------------------------
    def _prepare(self, spec: VerifierSpec, folder: Path) -> ImageLayout:
        if spec.image.ref is not None:
            raise SandboxError(
                f"verifier {spec.name!r} only has an image reference ({spec.image.ref}); "
                "the local sandbox runs Dockerfile verifiers from their folder: use Docker"
            )
        if spec.isolation == "per-item-uid" and not _is_root():
            raise SandboxError(
                f"verifier {spec.name!r} needs isolation 'per-item-uid' (a uid of its own for "
                "every candidate), which the local sandbox can give only when it runs as root: "
                "run as root or use Docker"
            )
        try:
            run_prepare(spec, folder)
        except ImageError as exc:
            raise SandboxError(f"verifier {spec.name!r}: {exc}") from None
        layout = image_layout(spec, folder)
        if _is_root():
            unreadable = [
                src
                for src in [str(folder)] + [s for s, _ in layout.files]
                if not os.stat(src).st_mode & (0o005 if os.path.isdir(src) else 0o004)
            ]
            if unreadable:
                raise SandboxError(
                    f"verifier {spec.name!r}: the sandbox user (any uid) cannot read "
                    f"{', '.join(unreadable[:3])}: make the folder world-readable"
                )
        return layout

    # -- one run ----------------------------------------------------------------------------
    def _env(self, spec: VerifierSpec, layout: ImageLayout, nonce: str) -> dict[str, str]:
        env = {**self.rootfs.env, **layout.env}
        env.update({NONCE_ENV: nonce, ITEM_TIMEOUT_ENV: f"{spec.limits.item_timeout_s:g}"})
        env.setdefault("HOME", "/")
        return env

    def _argv(
        self, spec: VerifierSpec, layout: ImageLayout, nonce: str, command: list[str]
    ) -> list[str]:
        lim = spec.limits
        root = _is_root()
        per_item_uid = spec.isolation == "per-item-uid"
        tree = str(self.rootfs.path)
        argv = [
            "bwrap",
            "--die-with-parent",
            "--new-session",
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-uts",
            "--unshare-cgroup-try",
        ]
        if not lim.network:
            argv.append("--unshare-net")
        if not root:  # an unprivileged user maps itself to 65534 in a user namespace
            argv += ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID)]
        for entry in sorted(os.listdir(tree)):
            if entry in ("proc", "dev", "tmp", "sys", "verifier"):
                continue
            src = os.path.join(tree, entry)
            if os.path.islink(src):
                argv += ["--symlink", os.readlink(src), "/" + entry]
            elif os.path.isdir(src):
                argv += ["--ro-bind", src, "/" + entry]
            else:
                argv += ["--ro-bind", src, "/" + entry]
        size = str(lim.tmpfs_mb * 1024 * 1024)
        argv += ["--proc", "/proc", "--dev", "/dev"]
        argv += ["--perms", "1777", "--size", size, "--tmpfs", "/tmp"]
        argv += ["--perms", "1777", "--size", size, "--tmpfs", "/dev/shm"]
        argv += ["--perms", "0755", "--tmpfs", "/verifier"]
        for src, dest in layout.files:
            argv += ["--ro-bind", src, dest]
        argv += ["--remount-ro", "/verifier", "--chdir", "/tmp", "--clearenv"]
        for k, v in self._env(spec, layout, nonce).items():
            argv += ["--setenv", k, v]
        if root and per_item_uid:
            argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        argv.append("--")
        if root and not per_item_uid:  # bwrap ran privileged: drop to this batch's own uid
            uid = str(batch_uid())
            argv += [
                "/usr/bin/setpriv",
                "--reuid",
                uid,
                "--regid",
                uid,
                "--clear-groups",
                "--no-new-privs",
                "--bounding-set",
                "-all",
                "--inh-caps",
                "-all",
                "--",
            ]
        return argv + list(command)

    def _launch(self, spec: VerifierSpec, prepared: ImageLayout) -> Launched:
        nonce = new_nonce()
        argv = self._argv(spec, prepared, nonce, list(spec.command))
        return Launched(argv, _preexec(_rlimits(spec)), nonce)

    def _run_once(
        self,
        spec: VerifierSpec,
        folder: Path,
        prepared: Any,
        data: bytes,
        ids: list[str],
        nonce: str,
    ) -> RunOutcome:
        launched = self._pool.take((spec.name, str(folder)), spec, prepared)
        return launched.collect(data, spec, ids)

    def close(self) -> None:
        """End the pre-started sandboxes."""
        self._pool.close()


def _probe_spec() -> VerifierSpec:
    return VerifierSpec.model_validate(
        {
            "name": "probe",
            "version": "0",
            "description": "probe",
            "owner": "rlsd",
            "image": {"dockerfile": "Dockerfile"},
            "command": ["true"],
            "self_tests": [
                {"id": "a", "expect": "pass", "item": {"response": ""}},
                {"id": "b", "expect": "fail", "item": {"response": ""}},
            ],
        }
    )


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


class Launched:
    """A started program waiting for its stdin (its stderr drained from the start)."""

    def __init__(
        self, argv: list[str], preexec: Any, nonce: str, env: dict[str, str] | None = None
    ) -> None:
        self.nonce = nonce
        self.created = time.monotonic()
        self.start_error: str | None = None
        self.stderr = bytearray()
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env if env is not None else {"PATH": HOST_PATH},
                preexec_fn=preexec,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise SandboxError(f"cannot start the local sandbox ({argv[0]}): {exc}") from None
        self._drain = threading.Thread(
            target=self._drain_stderr, daemon=True, name="rlsd-local-stderr"
        )
        self._drain.start()

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            self.stderr.extend(chunk)
            if len(self.stderr) > 2 * STDERR_TAIL_BYTES:
                del self.stderr[:-STDERR_TAIL_BYTES]

    def kill(self) -> None:
        if self.proc.poll() is None:
            _kill(self.proc)
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=10)
        self._drain.join(timeout=2)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            with contextlib.suppress(OSError):
                if f is not None:
                    f.close()

    def collect(
        self, data: bytes, spec: VerifierSpec, ids: list[str], *, stop_when_complete: bool = True
    ) -> RunOutcome:
        """Feed ``data``; read stdout up to the cap until EOF, the batch timeout or the
        per-result deadline (the item being checked without a result for too long).

        ``stop_when_complete``: kill the run as soon as every item has its result (a jail's
        namespaces take everything in it down; a bare process is left to exit by itself).
        """
        proc = self.proc
        lim = spec.limits
        out = RunOutcome(nonce=self.nonce)
        stream = ResultStream(self.nonce, ids, result_timeout_s=lim.result_deadline_s())
        out.parsed = stream.parsed
        t0 = time.monotonic()
        deadline = t0 + lim.batch_timeout_s

        def feed() -> None:
            assert proc.stdin is not None
            with contextlib.suppress(BrokenPipeError, OSError):
                proc.stdin.write(data)
            with contextlib.suppress(BrokenPipeError, OSError):
                proc.stdin.close()

        writer = threading.Thread(target=feed, daemon=True, name="rlsd-local-stdin")
        writer.start()
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        stdout = bytearray()
        complete = False
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    out.timed_out = True
                    break
                if stream.stalled():
                    out.stalled = True
                    break
                ready, _, _ = select.select([fd], [], [], min(remaining, 0.2))
                if not ready:
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                room = lim.output_bytes - len(stdout)
                stdout += chunk[: max(0, room)]
                stream.feed(chunk[: max(0, room)])
                if len(chunk) > room:
                    out.output_capped = True
                    break
                if stop_when_complete and stream.complete():
                    complete = True  # every verdict is in: the exit status cannot change one
                    break
            stream.close()
            if out.timed_out or out.output_capped or out.stalled or complete:
                _kill(proc)
            try:
                out.exit_code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                out.timed_out = True
                _kill(proc)
                out.exit_code = proc.wait()
            if complete:
                out.exit_code = 0
        finally:
            writer.join(timeout=2)
            self.kill()
        out.duration_s = time.monotonic() - t0
        out.stdout = bytes(stdout)
        out.stderr_tail = bytes(self.stderr[-STDERR_TAIL_BYTES:])
        return out
