"""Jail setup for the ``local-unshare`` sandbox (used when bubblewrap is not available).

Run as ``unshare --mount --propagation private --pid --fork --kill-child [--net] ... python3 -I -S
_unshare_jail.py CONFIG_JSON``: in the fresh mount namespace it builds a root like bubblewrap's
(system directories bound read-only, the verifier at ``/verifier``, a size-limited tmpfs at
``/tmp``, a new ``/proc``, a few device nodes), chroots into it, then forks: the child drops to
the unprivileged uid/gid (``setpriv`` semantics: groups cleared, no new privileges) and execs the
verifier with a clean environment; this process stays as pid 1 of the namespace, reaps orphans and
exits with the verifier's status (which kills everything left in the namespace).

Standard library only: it runs under ``python3 -I -S``.
"""

import ctypes
import json
import os
import sys

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_NO_NEW_PRIVS = 38

_libc = ctypes.CDLL(None, use_errno=True)


def _mount(src, target, fstype, flags, data=None):
    rc = _libc.mount(
        src.encode() if src else None,
        target.encode(),
        fstype.encode() if fstype else None,
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {src} on {target} ({fstype}): {os.strerror(err)}")


def _bind_ro(src, target):
    _mount(src, target, None, MS_BIND)
    _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _mountpoint(path, is_dir):
    if is_dir:
        os.makedirs(path, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a"):
            pass


def _loopback_up():
    """Bring ``lo`` up in the new network namespace (as bubblewrap and Docker do)."""
    import fcntl
    import socket
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = fcntl.ioctl(s, siocgifflags, struct.pack("16sH14x", b"lo", 0))
        flags = struct.unpack("16sH14x", ifr)[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))


def main():
    cfg = json.loads(sys.argv[1])
    root = cfg["root"]
    if cfg.get("loopback"):
        _loopback_up()
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=0755")
    for name, kind, value in cfg["system"]:
        dest = os.path.join(root, name)
        if kind == "symlink":
            os.symlink(value, dest)
        else:
            _mountpoint(dest, True)
            _bind_ro(value, dest)
    os.makedirs(os.path.join(root, "verifier"))
    for src, name in cfg["verifier"]:
        dest = os.path.join(root, "verifier", name)
        if not os.path.lexists(dest):
            _mountpoint(dest, os.path.isdir(src))
        _bind_ro(src, dest)
    dev = os.path.join(root, "dev")
    os.makedirs(dev)
    for node in ("null", "zero", "full", "random", "urandom"):
        if os.path.exists("/dev/" + node):
            _mountpoint(os.path.join(dev, node), False)
            _mount("/dev/" + node, os.path.join(dev, node), None, MS_BIND)
    for link, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, os.path.join(dev, link))
    os.makedirs(os.path.join(root, "proc"))
    _mount("proc", os.path.join(root, "proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.makedirs(os.path.join(root, "tmp"))
    _mount(
        "tmpfs",
        os.path.join(root, "tmp"),
        "tmpfs",
        MS_NOSUID | MS_NODEV,
        f"size={int(cfg['tmpfs_mb'])}m,mode=1777",
    )
    _mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chroot(root)
    os.chdir("/tmp")

    pid = os.fork()
    if pid == 0:
        try:
            if cfg["drop"]:
                os.setgroups([])
                os.setresgid(cfg["gid"], cfg["gid"], cfg["gid"])
                os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
            if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
            os.setsid()
            os.execvpe(cfg["argv"][0], cfg["argv"], cfg["env"])
        except BaseException as exc:  # noqa: BLE001 - report and die, never return into pid 1
            os.write(2, f"rlsd-unshare-jail: cannot start {cfg['argv'][0]}: {exc}\n".encode())
            os._exit(127)
    # pid 1: nothing of ours may keep the verifier's pipes open
    devnull = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1):
        os.dup2(devnull, fd)
    while True:
        try:
            done, status = os.wait()
        except ChildProcessError:
            os._exit(1)
        if done == pid:
            os._exit(
                os.waitstatus_to_exitcode(status) % 256
                if os.WIFEXITED(status)
                else 128 + os.WTERMSIG(status)
            )


if __name__ == "__main__":
    main()
