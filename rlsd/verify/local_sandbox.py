"""The local sandbox, for machines without a Docker engine: bubblewrap, else unshare + setpriv.

Both modes build the same view as the container image: ``/usr`` and ``/etc`` (and the ``/bin``,
``/lib``... symlinks or directories) read-only from the host, the verifier folder read-only at
``/verifier`` with each file of its ``build/`` folder at ``/verifier/<file>`` (the layout the
Dockerfiles COPY), a size-limited tmpfs at ``/tmp`` (the cwd and the only writable place), a new
``/proc``, a minimal ``/dev``, no network (a new network namespace holding only ``lo``), new pid,
ipc and uts namespaces, uid/gid 65534, no capabilities, no new privileges, and an environment
holding only the protocol variables plus ``PATH=/usr/bin:/bin`` (so ``python3`` is the host's
Debian ``/usr/bin/python3``; install ``python3-jsonschema`` for verifiers that need it).

Limits: rlimits set on the sandbox process (inherited by the verifier): ``RLIMIT_AS`` =
``memory_mb`` (per process, not per batch as in Docker), ``RLIMIT_NPROC`` = ``pids`` (counted per
uid on the host: concurrent sandboxes share it), ``RLIMIT_CPU`` = the batch timeout,
``RLIMIT_FSIZE`` = ``tmpfs_mb``, no core files. ``cpus`` has no local equivalent (not enforced). The
batch timeout and the output cap are enforced by this process, which kills the whole sandbox (its
pid namespace dies with it).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rlsd.verify.images import ImageError, run_prepare
from rlsd.verify.protocol import (
    ITEM_TIMEOUT_ENV,
    NONCE_ENV,
    STDERR_TAIL_BYTES,
    RunOutcome,
    encode_items,
)
from rlsd.verify.sandbox import Sandbox, SandboxError, SandboxUnavailable
from rlsd.verify.spec import VerifierSpec

JAIL = Path(__file__).with_name("_unshare_jail.py")
SANDBOX_UID = 65534
SANDBOX_GID = 65534
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc")
SANDBOX_PATH = "/usr/bin:/bin"
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_probe_lock = threading.Lock()
_probed: dict[str, str | None] = {}


def _system_entries() -> list[tuple[str, str, str]]:
    """(name, 'symlink' | 'bind', target) for the host's system directories."""
    out = []
    for name in SYSTEM_DIRS:
        path = "/" + name
        if os.path.islink(path):
            out.append((name, "symlink", os.readlink(path)))
        elif os.path.isdir(path):
            out.append((name, "bind", path))
    return out


def verifier_entries(folder: Path) -> list[tuple[str, str]]:
    """(host path, name under /verifier): the folder's entries, then each ``build/`` entry."""
    out = [
        (str(p), p.name)
        for p in sorted(folder.iterdir())
        if p.name not in ("build", "__pycache__") and not p.name.startswith(".")
    ]
    build = folder / "build"
    if build.is_dir():
        names = {n for _, n in out}
        for p in sorted(build.iterdir()):
            if p.name in names:  # build/ wins, as the later COPY in the Dockerfile does
                out = [(s, n) for s, n in out if n != p.name]
            out.append((str(p), p.name))
    return out


def _is_root() -> bool:
    return os.geteuid() == 0


def _count_uid_processes(uid: int) -> int:
    n = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n


def _rlimits(spec: VerifierSpec) -> list[tuple[int, int]]:
    lim = spec.limits
    nproc = lim.pids if _is_root() else lim.pids + _count_uid_processes(os.getuid())
    cpu = int(lim.batch_timeout_s) + 2
    return [
        (resource.RLIMIT_AS, lim.memory_mb * 1024 * 1024),
        (resource.RLIMIT_NPROC, nproc),
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_FSIZE, lim.tmpfs_mb * 1024 * 1024),
        (resource.RLIMIT_CORE, 0),
    ]


def _preexec(limits: list[tuple[int, int]]):
    def apply() -> None:  # runs in the forked child before exec: syscalls only
        for which, value in limits:
            hard = value + 1 if which == resource.RLIMIT_CPU else value
            resource.setrlimit(which, (value, hard))

    return apply


class LocalSandbox(Sandbox):
    """``mode``: ``auto`` (bubblewrap when it works, else unshare), ``bwrap`` or ``unshare``."""

    def __init__(self, *, mode: str = "auto", pool_size: int = 2, retries: int = 2) -> None:
        super().__init__(pool_size=pool_size, retries=retries)
        if mode not in ("auto", "bwrap", "unshare"):
            raise ValueError(f"unknown local sandbox mode {mode!r}: auto, bwrap or unshare")
        self.mode = self._choose(mode)
        self.backend = f"local-{self.mode}"

    # -- mode selection -------------------------------------------------------------------
    def _choose(self, mode: str) -> str:
        reasons = []
        for candidate in ("bwrap", "unshare") if mode == "auto" else (mode,):
            why = self._probe(candidate)
            if why is None:
                return candidate
            reasons.append(f"{candidate}: {why}")
        raise SandboxUnavailable("no local sandbox works here: " + "; ".join(reasons))

    def _probe(self, mode: str) -> str | None:
        with _probe_lock:
            if mode not in _probed:
                _probed[mode] = self._probe_uncached(mode)
            return _probed[mode]

    def _probe_uncached(self, mode: str) -> str | None:
        tool = "bwrap" if mode == "bwrap" else "unshare"
        if shutil.which(tool, path=HOST_PATH) is None:
            return f"{tool} is not installed"
        with tempfile.TemporaryDirectory() as tmp:
            os.chmod(tmp, 0o755)
            argv, cleanup = self._argv(mode, _probe_spec(), Path(tmp), "probe", ["true"])
            try:
                proc = subprocess.run(
                    argv, capture_output=True, timeout=30, env={"PATH": HOST_PATH}
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                return str(exc)
            finally:
                cleanup()
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            return f"exit {proc.returncode}: {err[-1] if err else ''}"
        return None

    # -- preparation ----------------------------------------------------------------------
    def _prepare(self, spec: VerifierSpec, folder: Path) -> None:
        if spec.image.ref is not None:
            raise SandboxError(
                f"verifier {spec.name!r} only has an image reference ({spec.image.ref}); "
                "the local sandbox runs Dockerfile verifiers from their folder: use Docker"
            )
        try:
            run_prepare(spec, folder)
        except ImageError as exc:
            raise SandboxError(f"verifier {spec.name!r}: {exc}") from None
        if _is_root():
            unreadable = [
                src
                for src, _ in [(str(folder), "")] + verifier_entries(folder)
                if not os.stat(src).st_mode & (0o005 if os.path.isdir(src) else 0o004)
            ]
            if unreadable:
                raise SandboxError(
                    f"verifier {spec.name!r}: the sandbox user (uid {SANDBOX_UID}) cannot read "
                    f"{', '.join(unreadable[:3])}: make the folder world-readable"
                )

    # -- one run ----------------------------------------------------------------------------
    def _env(self, spec: VerifierSpec, nonce: str) -> dict[str, str]:
        return {
            "PATH": SANDBOX_PATH,
            "LANG": "C.UTF-8",
            NONCE_ENV: nonce,
            ITEM_TIMEOUT_ENV: f"{spec.limits.item_timeout_s:g}",
        }

    def _argv(
        self, mode: str, spec: VerifierSpec, folder: Path, nonce: str, command: list[str]
    ) -> tuple[list[str], Any]:
        lim = spec.limits
        env = self._env(spec, nonce)
        root = _is_root()
        if mode == "bwrap":
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
            for name, kind, target in _system_entries():
                argv += (
                    ["--symlink", target, "/" + name]
                    if kind == "symlink"
                    else ["--ro-bind", target, "/" + name]
                )
            argv += [
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "--perms",
                "1777",
                "--size",
                str(lim.tmpfs_mb * 1024 * 1024),
                "--tmpfs",
                "/tmp",
                "--perms",
                "0755",
                "--tmpfs",
                "/verifier",
            ]
            for src, name in verifier_entries(folder):
                argv += ["--ro-bind", src, "/verifier/" + name]
            argv += ["--remount-ro", "/verifier", "--chdir", "/tmp", "--clearenv"]
            for k, v in env.items():
                argv += ["--setenv", k, v]
            argv.append("--")
            if root:  # bwrap ran privileged (no user namespace): drop to the sandbox user
                argv += [
                    "setpriv",
                    "--reuid",
                    str(SANDBOX_UID),
                    "--regid",
                    str(SANDBOX_GID),
                    "--clear-groups",
                    "--no-new-privs",
                    "--bounding-set",
                    "-all",
                    "--inh-caps",
                    "-all",
                    "--",
                ]
            return argv + list(command), lambda: None
        # unshare: the jail script builds the same root and drops privileges itself
        jail_root = tempfile.mkdtemp(prefix="rlsd-jail-")
        cfg = {
            "root": jail_root,
            "system": _system_entries(),
            "verifier": verifier_entries(folder),
            "tmpfs_mb": lim.tmpfs_mb,
            "env": env,
            "argv": list(command),
            "uid": SANDBOX_UID,
            "gid": SANDBOX_GID,
            "drop": root,
            "loopback": not lim.network,
        }
        argv = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--ipc",
            "--uts",
            "--pid",
            "--fork",
            "--kill-child",
        ]
        if not lim.network:
            argv.append("--net")
        if not root:
            argv += ["--user", "--map-root-user"]
        python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"
        argv += [python, "-I", "-S", str(JAIL), json.dumps(cfg)]

        def cleanup() -> None:
            with contextlib.suppress(OSError):
                os.rmdir(jail_root)

        return argv, cleanup

    def _run_once(
        self, spec: VerifierSpec, folder: Path, prepared: Any, items: list[dict], nonce: str
    ) -> RunOutcome:
        argv, cleanup = self._argv(self.mode, spec, folder, nonce, list(spec.command))
        try:
            return _pump(argv, encode_items(items), spec, _preexec(_rlimits(spec)))
        finally:
            cleanup()


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


def _pump(
    argv: list[str],
    data: bytes,
    spec: VerifierSpec,
    preexec: Any,
    env: dict[str, str] | None = None,
) -> RunOutcome:
    """Run ``argv``; feed ``data``; read stdout up to the cap until EOF or the batch timeout.

    ``env`` is the environment of ``argv`` itself (default: only a PATH; the jails set the
    verifier's own environment inside).
    """
    lim = spec.limits
    out = RunOutcome()
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(
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
    deadline = t0 + lim.batch_timeout_s
    stderr = bytearray()

    def feed() -> None:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):
            proc.stdin.write(data)
        with contextlib.suppress(BrokenPipeError, OSError):
            proc.stdin.close()

    def drain_stderr() -> None:
        assert proc.stderr is not None
        fd = proc.stderr.fileno()
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            stderr.extend(chunk)
            if len(stderr) > 2 * STDERR_TAIL_BYTES:
                del stderr[:-STDERR_TAIL_BYTES]

    threads = [
        threading.Thread(target=feed, daemon=True, name="rlsd-local-stdin"),
        threading.Thread(target=drain_stderr, daemon=True, name="rlsd-local-stderr"),
    ]
    for t in threads:
        t.start()
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    stdout = bytearray()
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                out.timed_out = True
                break
            ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            stdout += chunk
            if len(stdout) > lim.output_bytes:
                out.output_capped = True
                del stdout[lim.output_bytes :]
                break
        if out.timed_out or out.output_capped:
            _kill(proc)
        try:
            out.exit_code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            out.timed_out = True
            _kill(proc)
            out.exit_code = proc.wait()
    finally:
        if proc.poll() is None:
            _kill(proc)
            proc.wait()
        for t in threads:
            t.join(timeout=2)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
    out.duration_s = time.monotonic() - t0
    out.stdout = bytes(stdout)
    out.stderr_tail = bytes(stderr[-STDERR_TAIL_BYTES:])
    return out
