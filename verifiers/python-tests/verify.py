#!/usr/bin/env python3
"""python-tests: run a candidate Python function against unit tests (HumanEval-style).

Item fields (each looked up in ``reference`` when it is an object, then on the item, then in
``item["metadata"]``): ``test`` (code defining ``check(candidate)``, or plain top-level asserts),
``entry_point`` (the function's name), ``prompt`` (optional: the code the response completes).
A string ``reference`` is the test code. The response may be wrapped in a ```python fence; it is
either a full definition of the entry point or a completion of ``prompt`` (then the program is
``prompt + response``, as in HumanEval).

Trust model: the candidate's code and the checking code never share a process, a uid, a file or
a file descriptor.

* The **checker** (trusted) runs the test code: the prompt's own definitions (task code, not the
  candidate's), then ``check(candidate)`` where ``candidate`` is a proxy. It runs in a child of
  this process, as uid 65534, non-dumpable. The test source is never written to a file.
* The **candidate** (untrusted) runs the candidate program in a process of its own, under a uid
  drawn for this item alone, non-dumpable, with no capabilities, rlimits (address space,
  processes, file size, CPU time), a private 0700 working directory, an empty environment and
  stdin/stdout/stderr on /dev/null. Its only channel is a socket to the checker.
* Each call of the proxy sends the arguments as **plain data** and gets plain data back: None,
  bool, int, float (NaN and infinities included), str, bytes, complex, and lists, tuples, dicts,
  sets and frozensets of those (nested at most 100 deep, 16 MiB per message). The checker builds
  the returned value from the bytes itself, so no object, method, builtin, frame or trace hook of
  the candidate's reaches the comparison. A returned value outside that set fails the item, even
  if the test catches the error. An exception the candidate raises reaches the test as the
  built-in exception of the same name (else ``CandidateError``).
* When the item ends, every process of its uid is killed and every file, shared-memory object
  and SysV IPC object of that uid is removed, so nothing of one item reaches the next; limits
  that the kernel counts per uid (processes, threads) are the item's own.

The uids are handed out by a **spawner**: this program starts as root with only CAP_SETUID and
CAP_SETGID (the sandbox's ``isolation: per-item-uid``), starts the spawner as a fresh process
(clean memory, clean environment), and drops to uid 65534 for everything else. The spawner only
forks candidates and cleaners on request; it never sees an item. Standard library only.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import json
import os
import re
import secrets
import select
import signal
import socket
import sys
import time

# The shared modules (`shared:` in verifier.yaml) sit beside this file in the image (/verifier)
# and in build/ when it runs from the verifier's folder.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # the image's /verifier is read-only; keep build/ clean locally
sys.path[:0] = [p for p in (HERE, os.path.join(HERE, "build")) if p not in sys.path]

from verifier_protocol import fmt_seconds, serve  # noqa: E402

DEFAULT_TIMEOUT_S = 10.0
SANDBOX_UID = 65534


def _env_int(name: str, default: int) -> int:
    try:
        value = int(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default


# Per-item resource limits of the candidate process (read before the environment is scrubbed).
MEMORY_MB = _env_int("RLSD_ITEM_MEMORY_MB", 512)
MAX_PROCS = _env_int("RLSD_ITEM_NPROC", 16)
MAX_FILE_MB = _env_int("RLSD_ITEM_FSIZE_MB", 16)
CHECKER_MEMORY_MB = 1024  # the trusted checker: a bound on runaway test code
SPAWNER_REPLY_S = 20.0  # how long the spawner may take to answer (cleaning included)


# ---------------------------------------------------------------------------------------------
# Plain data: the only values that cross between the candidate and the checker. This source runs
# in both (the checker's copy is the one that decides: it builds every value from the bytes).
PLAIN = r'''
import base64 as _b64, json as _json, math as _math, struct as _struct

MAX_DEPTH = 100
MAX_MESSAGE = 16 * 1024 * 1024


class NotPlain(Exception):
    """A value outside the plain-data types, or a message that breaks the format."""


def _no_constant(name):
    raise NotPlain("%s is not a JSON number" % name)


def _float(x):
    if x != x:
        return {"f": "nan"}
    if x in (float("inf"), float("-inf")):
        return {"f": "inf" if x > 0 else "-inf"}
    return x


def encode(value, depth=0):
    """The wire form of a plain value (subclasses of the plain types count as their base type)."""
    if depth > MAX_DEPTH:
        raise NotPlain("nested deeper than %d" % MAX_DEPTH)
    if value is None or value is True or value is False:
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return _float(float.__float__(value))
    if isinstance(value, str):
        return str.__getitem__(value, slice(None))
    d = depth + 1
    if isinstance(value, list):
        return [encode(v, d) for v in list.__iter__(value)]
    if isinstance(value, tuple):
        return {"t": [encode(v, d) for v in tuple.__iter__(value)]}
    if isinstance(value, dict):
        return {"d": [[encode(k, d), encode(v, d)] for k, v in dict.items(value)]}
    if isinstance(value, frozenset):
        return {"fs": [encode(v, d) for v in frozenset.__iter__(value)]}
    if isinstance(value, set):
        return {"s": [encode(v, d) for v in set.__iter__(value)]}
    if isinstance(value, bytes | bytearray):
        return {"b": _b64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, complex):
        return {"c": [_float(complex.__getattribute__(value, "real")),
                      _float(complex.__getattribute__(value, "imag"))]}
    raise NotPlain("a value of type %s (not plain data)" % type(value).__name__)


def _decode_float(spec):
    if spec == "nan":
        return float("nan")
    if spec == "inf":
        return float("inf")
    if spec == "-inf":
        return float("-inf")
    raise NotPlain("bad float tag")


def decode(wire, depth=0):
    """The plain value of a wire form; only exact built-in types are ever made."""
    if depth > MAX_DEPTH + 1:
        raise NotPlain("nested deeper than %d" % MAX_DEPTH)
    if wire is None or wire is True or wire is False:
        return wire
    kind = type(wire)
    if kind is int or kind is str:
        return wire
    if kind is float:
        return wire
    d = depth + 1
    if kind is list:
        return [decode(v, d) for v in wire]
    if kind is not dict or len(wire) != 1:
        raise NotPlain("malformed plain data")
    (tag, body), = wire.items()
    try:
        if tag == "t" and type(body) is list:
            return tuple(decode(v, d) for v in body)
        if tag == "d" and type(body) is list:
            out = {}
            for pair in body:
                if type(pair) is not list or len(pair) != 2:
                    raise NotPlain("malformed dict entry")
                out[decode(pair[0], d)] = decode(pair[1], d)
            return out
        if tag == "s" and type(body) is list:
            return {decode(v, d) for v in body}
        if tag == "fs" and type(body) is list:
            return frozenset(decode(v, d) for v in body)
        if tag == "b" and type(body) is str:
            return _b64.b64decode(body.encode("ascii"), validate=True)
        if tag == "f" and type(body) is str:
            return _decode_float(body)
        if tag == "c" and type(body) is list and len(body) == 2:
            parts = [_decode_float(p["f"]) if type(p) is dict and list(p) == ["f"] else p
                     for p in body]
            if not all(type(p) in (int, float) for p in parts):
                raise NotPlain("malformed complex")
            return complex(parts[0], parts[1])
    except TypeError as exc:  # an unhashable key or member
        raise NotPlain("unhashable value in a dict key or set: %s" % exc) from None
    except ValueError as exc:
        raise NotPlain("malformed plain data: %s" % exc) from None
    raise NotPlain("unknown plain-data tag")


def send(sock, obj):
    data = _json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    data = data.encode("ascii")
    if len(data) > MAX_MESSAGE:
        raise NotPlain("message larger than %d bytes" % MAX_MESSAGE)
    sock.sendall(_struct.pack(">I", len(data)) + data)


def _recv_exact(sock, n):
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv(sock):
    """The next message (a JSON object), or None at end of stream; NotPlain if malformed."""
    head = _recv_exact(sock, 4)
    if head is None:
        return None
    (size,) = _struct.unpack(">I", head)
    if size > MAX_MESSAGE:
        raise NotPlain("message larger than %d bytes" % MAX_MESSAGE)
    data = _recv_exact(sock, size)
    if data is None:
        return None
    try:
        obj = _json.loads(data.decode("ascii"), parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise NotPlain("not a JSON message: %s" % str(exc)[:100]) from None
    if type(obj) is not dict:
        raise NotPlain("not a JSON object")
    return obj


def describe(exc, sources):
    """``Type: message (candidate line 3; test line 5: assert ...)`` for an exception."""
    text = type(exc).__name__
    try:
        msg = (exc.msg if isinstance(exc, SyntaxError) else str(exc)).strip()
    except Exception:
        msg = ""
    if msg:
        text += ": " + msg[:500]
    extra = []
    for name, src in sources.items():
        tb, line = exc.__traceback__, None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == "<%s>" % name:
                line = tb.tb_lineno
            tb = tb.tb_next
        if isinstance(exc, SyntaxError) and exc.filename == "<%s>" % name and exc.lineno:
            line = exc.lineno
        if line:
            lines = src.splitlines()
            shown = lines[line - 1].strip()[:200] if 0 < line <= len(lines) else ""
            extra.append("%s line %d: %s" % (name, line, shown) if shown else
                         "%s line %d" % (name, line))
    return text + (" (" + "; ".join(extra) + ")" if extra else "")
'''
_plain: dict = {"__name__": "rlsd_plain"}
exec(compile(PLAIN, "<plain>", "exec"), _plain)
NotPlain = _plain["NotPlain"]
encode, decode = _plain["encode"], _plain["decode"]
send_message, recv_message = _plain["send"], _plain["recv"]
describe = _plain["describe"]

# ---------------------------------------------------------------------------------------------
# The candidate process (untrusted): runs in a child of the spawner, already under its own uid.
# It loads the program, says which callables it defines, then answers calls. Anything it does to
# itself (patched builtins, trace hooks, forged replies) stays in this process: the checker only
# takes plain data from it.
RUNNER = r"""
import socket as _socket, sys as _sys, types as _types


_callable, _list, _sorted, _type, _str = callable, list, sorted, type, str


def _main(fd):
    sock = _socket.socket(fileno=fd)
    msg = recv(sock)
    if msg is None or msg.get("op") != "load":
        return
    program = msg.get("program")
    tag = msg.get("tag")
    module = _types.ModuleType("__candidate__")
    _sys.modules["__candidate__"] = module
    space = module.__dict__
    sources = {"candidate": program}
    try:
        exec(compile(program, "<candidate>", "exec", dont_inherit=True), space)
    except BaseException as exc:
        send(sock, {"load_error": describe(exc, sources), "tag": tag})
        return
    # the builtins as they were before the candidate ran (it may have replaced them)
    names = _sorted(n for n, v in _list(space.items()) if _type(n) is _str and _callable(v))
    send(sock, {"loaded": names, "tag": tag})
    while True:
        msg = recv(sock)
        if msg is None or msg.get("op") != "call":
            return
        tag = msg.get("tag")
        fn = space.get(msg.get("name"))
        try:
            args = decode(msg.get("args"))
            kwargs = decode(msg.get("kwargs"))
            if not _callable(fn):
                raise NotPlain("%r is not callable in the candidate" % msg.get("name"))
        except NotPlain as exc:
            send(sock, {"bad_call": _str(exc), "tag": tag})
            continue
        try:
            value = fn(*args, **kwargs)
        except Exception as exc:
            send(sock, {"raised": [type(exc).__name__, describe(exc, sources)], "tag": tag})
            continue
        except BaseException as exc:
            send(sock, {"aborted": describe(exc, sources), "tag": tag})
            return
        try:
            reply = {"value": encode(value)}
        except NotPlain as exc:
            reply = {"not_plain": str(exc)}
        except RecursionError:
            reply = {"not_plain": "nested too deep"}
        reply["tag"] = tag
        send(sock, reply)
"""

# ---------------------------------------------------------------------------------------------
# The spawner: a fresh process (``python3 -I -c SPAWNER``, clean memory and environment) that
# keeps root's CAP_SETUID/CAP_SETGID and does two things on request, over a socketpair only this
# program holds: fork a candidate under a newly drawn uid, and clean up after a uid (kill all
# its processes, remove all its files and IPC objects). It is non-dumpable and a subreaper, so
# daemons that candidates leave behind are re-parented to it and reaped.
SPAWNER = r'''
import ctypes, json, os, random, resource, select, signal, socket, stat, sys, time

RUNNER = sys.argv[1]
ctl = socket.socket(fileno=int(sys.argv[2]))
UID_MIN, UID_MAX = int(sys.argv[3]), int(sys.argv[4])
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 0
libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
CLEAN_ROOTS = ("/tmp", "/dev/shm", "/dev/mqueue", "/var/tmp")
given = set()


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


# A seccomp filter for candidates (as Docker's default profile, and the same on every backend):
# no namespaces, mounts, ptrace, keyrings, BPF, io_uring, kernel modules or clock changes;
# clone3 answers ENOSYS so libc falls back to clone, whose namespace flags are refused.
DENIED = {
    0xC000003E: [272, 308, 165, 166, 155, 101, 310, 311, 246, 320, 321, 298, 323, 250, 248, 249,
                 175, 313, 176, 304, 303, 425, 426, 427, 430, 432, 429, 428, 442, 167, 168, 169,
                 163, 164, 227, 135, 179, 212, 153, 103, 161],  # x86_64
    0xC00000B7: [97, 268, 40, 39, 41, 117, 270, 271, 104, 294, 280, 241, 282, 219, 217, 218, 105,
                 273, 106, 265, 264, 425, 426, 427, 430, 432, 429, 428, 442, 224, 225, 142, 89,
                 170, 112, 92, 116, 51],  # aarch64
}
CLONE = {0xC000003E: (56, 435), 0xC00000B7: (220, 435)}
NS_FLAGS = 0x20000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 \
    | 0x40000000 | 0x80


def seccomp_program():
    import platform, struct
    arch = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}.get(platform.machine())
    if arch is None:
        return None
    eperm, enosys = 0x00050000 | 1, 0x00050000 | 38
    allow, kill = 0x7FFF0000, 0x80000000
    ins = [(0x20, 0, 0, 4), (0x15, 1, 0, arch), (0x06, 0, 0, kill), (0x20, 0, 0, 0)]
    if arch == 0xC000003E:  # x32 system calls
        ins += [(0x35, 0, 1, 0x40000000), (0x06, 0, 0, eperm)]
    for nr in DENIED[arch]:
        ins += [(0x15, 0, 1, nr), (0x06, 0, 0, eperm)]
    clone, clone3 = CLONE[arch]
    ins += [(0x15, 0, 1, clone3), (0x06, 0, 0, enosys)]
    ins += [(0x15, 0, 4, clone), (0x20, 0, 0, 16), (0x54, 0, 0, NS_FLAGS), (0x15, 1, 0, 0),
            (0x06, 0, 0, eperm), (0x06, 0, 0, allow)]
    return b"".join(struct.pack("HBBI", *i) for i in ins), len(ins)


def install_seccomp():
    found = seccomp_program()
    if found is None:
        raise OSError("no seccomp filter for this architecture")
    code, count = found
    buf = ctypes.create_string_buffer(code, len(code))

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = Prog(count, ctypes.addressof(buf))
    if libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:  # PR_SET_SECCOMP, MODE_FILTER
        raise OSError(ctypes.get_errno(), "seccomp filter")


def candidate(uid, chan, limits):
    mem, nproc, fsize, cpu = limits
    os.setsid()
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.dup2(chan, 3)
    os.closerange(4, 1 << 16)
    with open("/proc/self/oom_score_adj", "w") as f:  # the memory cgroup kills candidates first
        f.write("1000")
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "no_new_privs")
    libc.prctl(4, 0, 0, 0, 0)
    install_seccomp()
    for what, soft, hard in ((resource.RLIMIT_AS, mem, mem),
                             (resource.RLIMIT_NPROC, nproc, nproc),
                             (resource.RLIMIT_FSIZE, fsize, fsize),
                             (resource.RLIMIT_CORE, 0, 0),
                             (resource.RLIMIT_CPU, cpu, cpu + 1)):
        _, current = resource.getrlimit(what)  # never above an existing hard limit
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        resource.setrlimit(what, (soft, hard))
    os.umask(0o077)
    work = "/tmp/rlsd-item-%d" % uid
    os.mkdir(work, 0o700)
    os.chdir(work)
    os.environ.clear()
    os.environ.update({"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": work, "TMPDIR": work})
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    space = {"__name__": "__runner__"}
    exec(compile(RUNNER, "<runner>", "exec"), space)
    space["_main"](3)


def live(uid, me):
    """Pids of uid's processes that are not zombies (and not ``me``)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open("/proc/%s/status" % entry) as f:
                status = f.read()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("State", "").strip().startswith("Z"):
            continue
        uids = fields.get("Uid", "").split()
        if str(uid) in uids:
            found.append(int(entry))
    return found


def purge(path):
    """Remove ``path`` and everything under it (an entry of the uid being cleaned)."""
    stack, dirs = [path], []
    removed = 0
    while stack:
        cur = stack.pop()
        try:
            st = os.lstat(cur)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            try:
                os.chmod(cur, 0o700)
                names = os.listdir(cur)
            except OSError:
                names = []
            dirs.append(cur)
            stack.extend(os.path.join(cur, n) for n in names)
        else:
            try:
                os.unlink(cur)
                removed += 1
            except OSError:
                pass
    for cur in reversed(dirs):
        try:
            os.rmdir(cur)
            removed += 1
        except OSError:
            pass
    return removed


def remove_owned(root, uid):
    """Purge the entries of ``uid`` under ``root``, looking into world-writable directories of
    others too (where the uid may also have written), but nowhere else."""
    removed, todo, seen = 0, [root], 0
    while todo and seen < 100000:
        base = todo.pop()
        try:
            names = os.listdir(base)
        except OSError:
            continue
        for name in names:
            seen += 1
            path = os.path.join(base, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if st.st_uid == uid:
                removed += purge(path)
            elif stat.S_ISDIR(st.st_mode) and st.st_mode & 0o002:
                todo.append(path)
    return removed


def remove_ipc(uid):
    removed = 0
    for kind in ("shm", "msg", "sem"):
        try:
            with open("/proc/sysvipc/" + kind) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        if not lines:
            continue
        head = lines[0].split()
        try:
            at_id, at_uid, at_cuid = head.index(kind + "id" if kind != "msg" else "msqid"), \
                head.index("uid"), head.index("cuid")
        except ValueError:
            continue
        for row in lines[1:]:
            cols = row.split()
            if len(cols) <= max(at_id, at_uid, at_cuid):
                continue
            if uid not in (int(cols[at_uid]), int(cols[at_cuid])):
                continue
            ident = int(cols[at_id])
            if kind == "shm":
                rc = libc.shmctl(ident, 0, None)  # IPC_RMID
            elif kind == "msg":
                rc = libc.msgctl(ident, 0, None)
            else:
                rc = libc.semctl(ident, 0, 0)
            removed += rc == 0
    return removed


def cleaner(uid):
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    me = os.getpid()
    for _ in range(2000):
        try:
            os.kill(-1, signal.SIGKILL)  # as this uid: every process of it, and nothing else
        except ProcessLookupError:
            break
        if not live(uid, me):
            break
        time.sleep(0.001)
    left = len(live(uid, me))
    removed = sum(remove_owned(root, uid) for root in CLEAN_ROOTS) + remove_ipc(uid)
    os.write(1, json.dumps({"left": left, "removed": removed}).encode())


def run_child(target, *args):
    """Fork ``target(*args)``; the child never returns into this loop."""
    pid = os.fork()
    if pid == 0:
        try:
            target(*args)
        except BaseException as exc:
            try:
                os.write(2, ("rlsd-spawner: %s: %s\n" % (type(exc).__name__, exc)).encode())
            except OSError:
                pass
            os._exit(1)
        os._exit(0)
    return pid


def clean(uid):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.dup2(w, 1)
        try:
            cleaner(uid)
        finally:
            os._exit(0)
    os.close(w)
    deadline = time.monotonic() + 15
    out = b""
    done = False
    while time.monotonic() < deadline:
        try:
            wpid, _ = os.waitpid(pid, os.WNOHANG)
            done = wpid == pid
        except ChildProcessError:
            done = True
        reap()
        if done:
            break
        select.select([r], [], [], 0.01)
    try:
        os.set_blocking(r, False)
        out = os.read(r, 4096)
    except OSError:
        pass
    os.close(r)
    if not done:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        return {"error": "the cleaner of uid %d did not finish" % uid}
    try:
        return json.loads(out.decode())
    except ValueError:
        return {"error": "the cleaner of uid %d failed" % uid}


def draw_uid():
    for _ in range(100):
        uid = random.SystemRandom().randrange(UID_MIN, UID_MAX)
        if uid not in given and not os.path.exists("/tmp/rlsd-item-%d" % uid):
            given.add(uid)
            return uid
    raise RuntimeError("no free uid")


def serve():
    while True:
        ready, _, _ = select.select([ctl], [], [], 0.5)
        reap()
        if not ready:
            continue
        try:
            msg, fds, _, _ = socket.recv_fds(ctl, 65536, 1)
        except OSError:
            return
        if not msg:
            return
        try:
            req = json.loads(msg.decode())
            if req.get("op") == "spawn":
                if len(fds) != 1:
                    raise ValueError("spawn needs one channel")
                limits = [int(x) for x in req["limits"]][:4]
                uid = draw_uid()
                pid = run_child(candidate, uid, fds[0], limits)
                reply = {"uid": uid, "pid": pid}
            elif req.get("op") == "clean":
                uid = int(req["uid"])
                if uid not in given:
                    raise ValueError("uid %d was not handed out here" % uid)
                reply = clean(uid)
            else:
                raise ValueError("unknown request")
        except Exception as exc:
            reply = {"error": "%s: %s" % (type(exc).__name__, exc)}
        finally:
            for fd in fds:
                os.close(fd)
        ctl.send(json.dumps(reply).encode())


try:
    serve()
finally:
    # the program ended: nothing of any candidate outlives it
    for uid in sorted(given):
        clean(uid)
'''

# ---------------------------------------------------------------------------------------------
# This process: started as root, it starts the spawner and drops to uid 65534.
UID_MIN, UID_MAX = 1 << 30, (1 << 31) - 2  # a range no system or container user normally has


class SpawnerError(RuntimeError):
    """The spawner is gone or refused: the program cannot isolate items any more."""


class Spawner:
    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock = sock
        self.pid = pid

    def _ask(self, request: dict, fds: list[int] | None = None) -> dict:
        data = json.dumps(request).encode()
        try:
            if fds:
                socket.send_fds(self.sock, [data], fds)
            else:
                self.sock.send(data)
            self.sock.settimeout(SPAWNER_REPLY_S)
            reply = self.sock.recv(65536)
        except OSError as exc:
            raise SpawnerError(f"the spawner did not answer: {exc}") from None
        if not reply:
            raise SpawnerError("the spawner exited")
        answer = json.loads(reply.decode())
        if "error" in answer:
            raise SpawnerError(answer["error"])
        return answer

    def spawn(self, channel: int, limits: list[int]) -> int:
        return int(self._ask({"op": "spawn", "limits": limits}, [channel])["uid"])

    def clean(self, uid: int) -> dict:
        return self._ask({"op": "clean", "uid": uid})


def start_spawner() -> Spawner:
    """Start the spawner (as root) and drop this process to uid 65534; exit if not root."""
    if os.geteuid() != 0:
        sys.stderr.write(
            "python-tests: this program must start as root with CAP_SETUID and CAP_SETGID (the "
            "sandbox does so for `isolation: per-item-uid`), to run every candidate under a uid "
            f"of its own; it started as uid {os.geteuid()}\n"
        )
        sys.exit(2)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:  # the spawner: a fresh interpreter, nothing of this process's memory
        try:
            ours.close()
            os.set_inheritable(theirs.fileno(), True)
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(null, 1)
            argv = [sys.executable, "-I", "-c", SPAWNER, PLAIN + RUNNER, str(theirs.fileno())]
            argv += [str(UID_MIN), str(UID_MAX)]
            os.execve(sys.executable, argv, {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
        finally:
            os._exit(127)
    theirs.close()
    os.setgroups([])
    os.setresgid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID)
    os.setresuid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID)
    return Spawner(ours, pid)


# ---------------------------------------------------------------------------------------------
# The checker (trusted): the test code, with the candidate's functions as proxies.
class ItemDeadline(BaseException):
    """The item's time is up (BaseException: a test's ``except Exception`` cannot swallow it)."""


class CandidateBroke(BaseException):
    """The candidate broke the contract (not plain data, died, aborted): the item fails."""


class CandidateError(Exception):
    """An exception the candidate raised, with a type name that is no built-in exception."""


_BUILTIN_EXCEPTIONS = {
    name: obj
    for name, obj in vars(builtins).items()
    if isinstance(obj, type) and issubclass(obj, Exception)
}


def free_names(test: str) -> set[str]:
    """Names the test code reads but never binds itself (over-approximated: any scope)."""
    tree = ast.parse(test)
    loads, bound = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loads if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return loads - bound


class Channel:
    """The checker's end of the candidate's socket; every reply is decoded here."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.broken: str | None = None

    def ask(self, request: dict) -> dict:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ItemDeadline
        self.sock.settimeout(left)
        tag = secrets.token_hex(8)  # a reply must answer this call, not be sent ahead of it
        try:
            send_message(self.sock, {**request, "tag": tag})
            reply = recv_message(self.sock)
        except TimeoutError:
            raise ItemDeadline from None
        except NotPlain as exc:
            self.fail(f"the candidate's reply is malformed ({exc})")
        except OSError as exc:
            self.fail(f"the candidate process ended during the tests ({type(exc).__name__})")
        if reply is None:
            self.fail("the candidate process ended during the tests")
        if reply.pop("tag", None) != tag:
            self.fail("the candidate sent a reply that answers no call it was given")
        return reply

    def fail(self, why: str):
        self.broken = self.broken or why
        raise CandidateBroke(why)


class Proxy:
    """Stands for one of the candidate's functions: arguments out, a plain value back."""

    __slots__ = ("_channel", "_name")

    def __init__(self, channel: Channel, name: str) -> None:
        self._channel = channel
        self._name = name

    def __repr__(self) -> str:
        return f"<candidate function {self._name}>"

    def __call__(self, *args, **kwargs):
        try:
            wire_args, wire_kwargs = encode(list(args)), encode(kwargs)
        except NotPlain as exc:
            raise TypeError(
                f"python-tests passes plain data only, and the test gave {self._name} {exc}"
            ) from None
        reply = self._channel.ask(
            {"op": "call", "name": self._name, "args": wire_args, "kwargs": wire_kwargs}
        )
        if len(reply) != 1:
            self._channel.fail("the candidate's reply is malformed")
        ((kind, body),) = reply.items()
        if kind == "value":
            try:
                return decode(body)
            except (NotPlain, RecursionError) as exc:
                self._channel.fail(f"{self._name}() returned {exc}")
        if kind == "raised" and type(body) is list and len(body) == 2:
            name, text = (str(x)[:700] for x in body)
            cls = _BUILTIN_EXCEPTIONS.get(name, CandidateError)
            raise cls(f"{text} [raised by the candidate's {self._name}]")
        if kind == "not_plain":
            self._channel.fail(f"{self._name}() returned {str(body)[:300]}")
        if kind == "bad_call":
            self._channel.fail(f"the candidate could not take the call: {str(body)[:300]}")
        if kind == "aborted":
            self._channel.fail(f"{self._name}() ended the candidate: {str(body)[:300]}")
        self._channel.fail("the candidate's reply is malformed")


def _prompt_space(prompt: str | None) -> dict:
    """The prompt's own definitions (task code) in a fresh namespace, when they run."""
    space: dict = {"__name__": "__test__", "__builtins__": builtins}
    if not prompt:
        return space
    for source in (prompt, prompt.rstrip() + "\n    pass\n"):
        try:
            code = compile(source, "<prompt>", "exec", dont_inherit=True)
        except (SyntaxError, ValueError):
            continue
        with contextlib.suppress(Exception):  # a prompt that fails alone: keep what it defined
            exec(code, space)
        break
    return space


def run_checker(channel: Channel, program: str, prompt: str | None, test: str, entry: str):
    """("pass" | "failed" | "error", text): the test run against the candidate's proxies."""
    sources = {"test": test}
    try:
        wanted = free_names(test)
    except (SyntaxError, ValueError) as exc:
        return "error", "the test code does not compile: " + describe(exc, sources)
    space = _prompt_space(prompt)
    loaded = channel.ask({"op": "load", "program": program})
    if "load_error" in loaded:
        return "error", f"{str(loaded['load_error'])[:800]} while loading the candidate"
    names = loaded.get("loaded")
    if type(names) is not list or not all(type(n) is str for n in names):
        channel.fail("the candidate's reply is malformed")
    defined = set(names)
    if entry:
        wanted.add(entry)
    for name in wanted - set(vars(builtins)):
        if name in defined and (name == entry or name not in space):
            space[name] = Proxy(channel, name)
    before = space.get("check")
    try:
        exec(compile(test, "<test>", "exec", dont_inherit=True), space)
    except SyntaxError as exc:
        return "error", "the test code does not compile: " + describe(exc, sources)
    except (ItemDeadline, CandidateBroke):
        raise
    except BaseException as exc:
        if space.get("check") is before:  # plain top-level asserts: they were the tests
            return "failed", describe(exc, sources)
        return "error", "the test code raised " + describe(exc, sources)
    check_fn = space.get("check")
    if check_fn is before or not callable(check_fn):
        return "pass", "passed: the test code ran without error"
    if not entry:
        return "error", "no entry_point given for check(candidate)"
    if entry not in defined:
        return "error", f"the candidate does not define {entry!r}"
    try:
        check_fn(space[entry])
    except (ItemDeadline, CandidateBroke):
        raise
    except BaseException as exc:
        return "failed", describe(exc, sources)
    return "pass", f"passed: check({entry})"


def checker_main(sock: socket.socket, report: int, job: tuple, deadline: float) -> None:
    """The checker process's body: run the tests, write the verdict to ``report``, exit."""
    import resource

    limit = CHECKER_MEMORY_MB << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    channel = Channel(sock, deadline)
    try:
        verdict = run_checker(channel, *job)
    except ItemDeadline:
        verdict = ("timeout", "")
    except CandidateBroke as exc:
        verdict = ("failed", str(exc))
    except BaseException as exc:  # noqa: BLE001 - the checker reports, it never raises
        verdict = ("error", f"checker: {type(exc).__name__}: {exc}")
    if channel.broken and verdict[0] == "pass":  # the test swallowed the contract breach
        verdict = ("failed", channel.broken)
    data = json.dumps(list(verdict), ensure_ascii=True).encode()[:60000]
    os.write(report, data)


# ---------------------------------------------------------------------------------------------
# One item: a candidate under a fresh uid, a checker, the verdict, then the uid's clean-up.
class Runner:
    def __init__(self, spawner: Spawner) -> None:
        self.spawner = spawner
        self.dirty: list[int] = []

    def clean_up(self) -> None:
        """After each result: the previous item's uid leaves nothing behind, or we stop."""
        while self.dirty:
            uid = self.dirty.pop()
            try:
                done = self.spawner.clean(uid)
            except SpawnerError as exc:
                sys.stderr.write(f"python-tests: cleaning up uid {uid} failed ({exc}); stopping\n")
                sys.exit(3)
            if done.get("left"):
                sys.stderr.write(
                    f"python-tests: {done['left']} process(es) of uid {uid} survived; stopping\n"
                )
                sys.exit(3)

    def run(self, program: str, prompt: str | None, test: str, entry: str, timeout: float):
        start = time.monotonic()
        deadline = start + timeout
        cpu = int(timeout) + 2
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                uid = self.spawner.spawn(
                    theirs.fileno(), [MEMORY_MB << 20, MAX_PROCS, MAX_FILE_MB << 20, cpu]
                )
            except SpawnerError as exc:
                sys.stderr.write(f"python-tests: the spawner failed ({exc}); stopping\n")
                sys.exit(3)
            self.dirty.append(uid)
        finally:
            theirs.close()
        report_r, report_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                _isolate_checker({ours.fileno(), report_w})
                checker_main(ours, report_w, (program, prompt, test, entry), deadline)
            finally:
                os._exit(0)
        os.close(report_w)
        ours.close()
        data = b""
        try:
            while True:
                left = deadline + 2.0 - time.monotonic()
                if left <= 0:
                    break
                ready, _, _ = select.select([report_r], [], [], left)
                if not ready:
                    break
                chunk = os.read(report_r, 65536)
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(report_r)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        elapsed = time.monotonic() - start
        try:
            outcome, text = json.loads(data.decode())
        except ValueError:
            outcome, text = "timeout", ""
        if outcome == "timeout":
            return False, f"timeout: {fmt_seconds(timeout)} s"
        if outcome == "pass":
            return True, f"{text} in {elapsed:.2f} s"
        if outcome == "failed":
            return False, f"failed: {text}"
        return False, f"error: {text}"


def _isolate_checker(keep: set[int]) -> None:
    """In the checker: stdin and stdout on /dev/null, every descriptor but ``keep`` closed."""
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    keep = keep | {0, 1, 2}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


# ---------------------------------------------------------------------------------------------
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def strip_fences(response: str, entry: str | None) -> str:
    """The code in a response: the fenced block that defines the entry point, else the first."""
    blocks = [
        body
        for lang, body in _FENCE.findall(response)
        if lang.lower() in ("", "python", "py", "python3")
    ]
    if not blocks:
        return response
    if entry:
        pattern = re.compile(r"^\s*(?:async\s+)?def\s+" + re.escape(entry) + r"\s*\(", re.M)
        for body in blocks:
            if pattern.search(body):
                return body
    return blocks[0]


def defines(code: str, name: str | None) -> bool:
    """Whether ``code`` parses on its own and defines ``name`` at top level."""
    if not name:
        return False
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name == name:
                return True
        elif isinstance(node, ast.Assign):
            if any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                return True
        elif isinstance(node, ast.ImportFrom | ast.Import) and any(
            (a.asname or a.name) == name for a in node.names
        ):
            return True
    return False


def compiles(code: str) -> bool:
    try:
        compile(code, "<candidate>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return False
    return True


def build_program(response: str, prompt: str | None, entry: str | None) -> str:
    """The candidate program: the response itself, or ``prompt + response`` for a completion."""
    code = strip_fences(response, entry)
    if not prompt:
        return code
    if defines(code, entry):
        # A full definition: keep the prompt's imports and helpers when they still compile.
        joined = prompt.rstrip("\n") + "\n\n" + code
        return joined if compiles(joined) else code
    return prompt + code


def _field(item: dict, name: str):
    reference = item.get("reference")
    places = [reference if isinstance(reference, dict) else {}, item]
    if isinstance(item.get("metadata"), dict):
        places.append(item["metadata"])
    for place in places:
        value = place.get(name)
        if isinstance(value, str) and value.strip():
            return value
    if name == "test" and isinstance(reference, str) and reference.strip():
        return reference
    return None


_RUNNER: list[Runner] = []


def check(item: dict, timeout: float) -> tuple[bool, float, str]:
    response = item.get("response")
    if not isinstance(response, str):
        return False, 0.0, f"error: response is not a string (got {type(response).__name__})"
    if not response.strip():
        return False, 0.0, "error: empty response"
    test = _field(item, "test")
    if test is None:
        return False, 0.0, "error: the item has no test code (reference.test / test)"
    entry = _field(item, "entry_point") or ""
    if entry and not entry.isidentifier():
        return False, 0.0, f"error: entry_point {entry[:80]!r} is not an identifier"
    prompt = _field(item, "prompt")
    program = build_program(response, prompt, entry or None)
    if "\x00" in program or "\x00" in test:
        return False, 0.0, "error: the code contains NUL bytes"
    if not _RUNNER:
        return False, 0.0, "error: python-tests runs items through its spawner only"
    passed, detail = _RUNNER[0].run(program, prompt, test, entry, timeout)
    return passed, 1.0 if passed else 0.0, detail


def main() -> int:
    nonce = os.environ.pop("RLSD_RESULT_NONCE", None)
    runner = Runner(start_spawner())
    _RUNNER.append(runner)
    try:
        return serve(
            check,
            default_timeout=DEFAULT_TIMEOUT_S,
            alarm=False,
            nonce=nonce,
            after=runner.clean_up,
        )
    finally:
        runner.clean_up()


if __name__ == "__main__":
    sys.exit(main())
