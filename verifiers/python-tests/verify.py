#!/usr/bin/env python3
"""python-tests: run a candidate Python function against unit tests (HumanEval-style).

Item fields (each looked up in ``reference`` when it is an object, then on the item, then in
``item["metadata"]``): ``test`` (code defining ``check(candidate)``, or plain top-level asserts),
``entry_point`` (the function's name), ``prompt`` (optional: the code the response completes).
A string ``reference`` is the test code. The response may be wrapped in a ```python fence; it is
either a full definition of the entry point or a completion of ``prompt`` (then the program is
``prompt + response``, as in HumanEval).

Each item runs in its own ``python3 -I`` process in a fresh directory under /tmp, with the
per-item wall-clock limit, rlimits (address space, processes, file size, CPU time), an empty
environment (PATH/LANG/HOME only) and its stdout/stderr captured with a size cap. The harness
process forks: the child runs the candidate and the tests, the parent (which the candidate
cannot reach without going out of its way) reports the outcome on a private pipe, tagged with a
token it reads from stdin only after the child has finished -- so nothing the candidate prints,
and no early exit, can pass an item. Standard library only.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import resource
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time

DEFAULT_TIMEOUT_S = 10.0


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
OUTPUT_CAP = 64 * 1024  # bytes kept of the candidate's stdout / stderr (the rest is drained)
GRACE_S = 0.25  # how long pipes may stay open after the harness exited

# --- rlsd verifier protocol: keep this block identical in every verifiers/*/verify.py ---------
# stdin: one JSON item per line {"id", "response", "reference", ...}; stdout: one JSON result per
# item {"id", "passed", "score", "detail", "nonce"}, written and flushed as soon as it is ready.
# Only results reach the real stdout: fd 1 is pointed at stderr before any item is checked.
_MAX_LINE = 32 * 1024 * 1024
_MAX_DETAIL = 4000
_KEEP_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "HOME", "TMPDIR")
_LEADING_ID = re.compile(rb'\A\s*\{\s*"id"\s*:\s*("(?:[^"\\\r\n]|\\.){0,512}")')


class ItemTimeout(Exception):
    """Raised (by SIGALRM) when checking one item overruns its time limit."""


def item_timeout(default: float) -> float:
    """The per-item time limit: env RLSD_ITEM_TIMEOUT_S when set and sane, else ``default``."""
    try:
        value = float(os.environ.get("RLSD_ITEM_TIMEOUT_S", ""))
    except ValueError:
        return default
    return value if 0 < value < 86400 else default


def child_env(home: str = "/tmp") -> dict:
    """The whole environment a child process gets: no nonce, no credentials, nothing inherited."""
    return {"PATH": os.environ.get("PATH") or "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home}


def _fmt_seconds(value: float) -> str:
    return f"{value:g}"


def _result(ident, passed, score, detail, nonce) -> str:
    try:
        score = float(score)
    except (TypeError, ValueError):
        score = 0.0
    if not 0.0 <= score <= 1.0:  # also false for NaN
        score = 0.0 if not score > 0.0 else 1.0
    detail = str(detail)
    if len(detail) > _MAX_DETAIL:
        detail = detail[: _MAX_DETAIL - 3] + "..."
    record = {"id": ident, "passed": bool(passed), "score": score, "detail": detail}
    record["nonce"] = nonce
    return json.dumps(record, ensure_ascii=True) + "\n"


def _harden() -> None:
    """Make this process non-dumpable (Linux): a same-uid child can then no longer open
    /proc/<our pid>/fd/* (our stdin and stdout), /proc/<our pid>/environ (the nonce's initial
    copy) or /proc/<our pid>/mem. Children that exec a program are dumpable again, so this does
    not restrict them otherwise."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except Exception:  # not Linux, no libc: nothing to harden
        pass


def _check_one(check, item, timeout: float, alarm: bool):
    def on_alarm(signum, frame):
        raise ItemTimeout

    try:
        try:
            if alarm:
                signal.signal(signal.SIGALRM, on_alarm)
                signal.setitimer(signal.ITIMER_REAL, timeout)
            passed, score, detail = check(item, timeout)
        finally:
            if alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
    except ItemTimeout:
        return False, 0.0, f"timeout: {_fmt_seconds(timeout)} s"
    except Exception as exc:  # a bad item is a failed item, never a crash
        return False, 0.0, f"verifier error: {type(exc).__name__}: {exc}"
    return bool(passed), score, detail


def serve(check, *, default_timeout: float, alarm: bool = True) -> int:
    """Run ``check(item, timeout) -> (passed, score, detail)`` over the JSON lines on stdin.

    ``alarm`` enforces the per-item limit with SIGALRM (for checks that run in this process;
    a check that runs children enforces it itself). Returns the exit code.
    """
    _harden()
    nonce = os.environ.pop("RLSD_RESULT_NONCE", None)
    timeout = item_timeout(default_timeout)
    for key in list(os.environ):
        if key not in _KEEP_ENV:
            del os.environ[key]
    out = os.fdopen(os.dup(1), "w", encoding="ascii", newline="\n")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    source = sys.stdin.buffer
    while True:
        line = source.readline(_MAX_LINE + 1)
        if not line:
            break
        ident = None
        if len(line) > _MAX_LINE and not line.endswith(b"\n"):
            while True:  # drop the rest of the overlong line
                chunk = source.readline(1 << 20)
                if not chunk or chunk.endswith(b"\n"):
                    break
            verdict = (False, 0.0, f"malformed item: line longer than {_MAX_LINE} bytes")
        elif not line.strip():
            continue
        else:
            try:
                item = json.loads(line.decode("utf-8", "replace"))
            except ValueError as exc:
                verdict = (False, 0.0, f"malformed item: not valid JSON ({exc})")
            else:
                if isinstance(item, dict):
                    ident = item.get("id")
                if not isinstance(ident, str):
                    print("verifier: skipped an item without a string id", file=sys.stderr)
                    continue
                verdict = _check_one(check, item, timeout, alarm)
        if ident is None:
            found = _LEADING_ID.match(line)
            try:
                ident = json.loads(found.group(1)) if found else None
            except ValueError:
                ident = None
            if not isinstance(ident, str):
                print("verifier: skipped a malformed line without a readable id", file=sys.stderr)
                continue
        try:
            out.write(_result(ident, *verdict, nonce))
            out.flush()
        except BrokenPipeError:
            return 0
    return 0


# --- end of rlsd verifier protocol --------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# The harness: ``python3 -I -c HARNESS status_fd program test entry mem_bytes nproc fsize cpu``.
HARNESS = r"""
import os, sys, types
sys.dont_write_bytecode = True

def where(exc, name):
    tb, line = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == name:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line

def describe(exc, test_src):
    text = type(exc).__name__
    msg = (exc.msg if isinstance(exc, SyntaxError) else str(exc)).strip()
    if msg:
        text += ": " + msg[:500]
    extra = []
    line = where(exc, "<candidate>")
    if line:
        extra.append("candidate line %d" % line)
    line = where(exc, "<test>")
    if line:
        lines = test_src.splitlines()
        src = lines[line - 1].strip()[:200] if 0 < line <= len(lines) else ""
        extra.append("test line %d: %s" % (line, src) if src else "test line %d" % line)
    if isinstance(exc, SyntaxError) and exc.lineno and not extra:
        extra.append("%s line %d" % ((exc.filename or "?").strip("<>"), exc.lineno))
        if exc.text and exc.text.strip():
            extra[-1] += ": " + exc.text.strip()[:200]
    return text + (" (" + "; ".join(extra) + ")" if extra else "")

def run(program, test, entry):
    module = types.ModuleType("__candidate__")
    sys.modules["__candidate__"] = module
    g = module.__dict__
    try:
        exec(compile(program, "<candidate>", "exec"), g)
    except BaseException as exc:
        return "error", describe(exc, test) + " while loading the candidate"
    before = g.get("check")
    try:
        exec(compile(test, "<test>", "exec"), g)
    except SyntaxError as exc:
        return "error", "the test code does not compile: " + describe(exc, test)
    except BaseException as exc:
        if g.get("check") is before:  # plain top-level asserts: they were the tests
            return "failed", describe(exc, test)
        return "error", "the test code raised " + describe(exc, test)
    check = g.get("check")
    if check is before or not callable(check):
        return "pass", "passed: the test code ran without error"
    if not entry:
        return "error", "no entry_point given for check(candidate)"
    if entry not in g:
        return "error", "the candidate does not define %r" % entry
    try:
        check(g[entry])
    except BaseException as exc:
        return "failed", describe(exc, test)
    return "pass", "passed: check(%s)" % entry

def child(program, test, entry, report_fd, limits):
    write, dumps, exit_ = os.write, __import__("json").dumps, os._exit
    try:
        import resource
        mem, nproc, fsize, cpu = limits
        for what, soft, hard in ((resource.RLIMIT_AS, mem, mem),
                                 (resource.RLIMIT_NPROC, nproc, nproc),
                                 (resource.RLIMIT_FSIZE, fsize, fsize),
                                 (resource.RLIMIT_CORE, 0, 0),
                                 (resource.RLIMIT_CPU, cpu, cpu + 1)):
            _, current = resource.getrlimit(what)  # never above an existing hard limit
            if current != resource.RLIM_INFINITY:
                soft, hard = min(soft, current), min(hard, current)
            resource.setrlimit(what, (soft, hard))
        outcome = run(program, test, entry)
    except BaseException as exc:
        outcome = ("error", "harness: %s: %s" % (type(exc).__name__, exc))
    try:
        write(report_fd, dumps(outcome)[:8000].encode("utf-8", "replace"))
    finally:
        exit_(0)

def main():
    status_fd = int(sys.argv[1])
    entry = sys.argv[4]
    limits = tuple(int(x) for x in sys.argv[5:9])
    with open(sys.argv[2], encoding="utf-8") as f:
        program = f.read()
    with open(sys.argv[3], encoding="utf-8") as f:
        test = f.read()
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(status_fd)
        os.close(report_r)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        child(program, test, entry, report_w, limits)
    os.close(report_w)
    _, status = os.waitpid(pid, 0)
    os.set_blocking(report_r, False)
    try:
        report = os.read(report_r, 16384)
    except BlockingIOError:
        report = b""
    token = sys.stdin.readline().strip()
    os.write(status_fd, (__import__("json").dumps(
        {"token": token, "status": status, "report": report.decode("utf-8", "replace")}
    )).encode())

main()
"""
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


def _preexec() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _tail(data: bytes, limit: int = 400) -> str:
    text = data.decode("utf-8", "replace").strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def _rmtree(path: str) -> None:
    def retry(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=retry)


def run_program(program: str, test: str, entry: str, timeout: float) -> tuple[bool, str]:
    """Run one candidate program against its tests in a fresh process; (passed, detail)."""
    workdir = tempfile.mkdtemp(prefix="rlsd-pytests-")
    status_r = status_w = -1
    try:
        prog_path = os.path.join(workdir, "candidate.py")
        test_path = os.path.join(workdir, "test_candidate.py")
        with open(prog_path, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(program)
        with open(test_path, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(test)
        token = secrets.token_hex(16)
        status_r, status_w = os.pipe()
        cpu = int(timeout) + 2
        argv = [sys.executable, "-I", "-c", HARNESS, str(status_w), prog_path, test_path, entry]
        argv += [str(MEMORY_MB << 20), str(MAX_PROCS), str(MAX_FILE_MB << 20), str(cpu)]
        start = time.monotonic()
        deadline = start + timeout
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=child_env(workdir),
            pass_fds=(status_w,),
            start_new_session=True,
            preexec_fn=_preexec,
        )
        os.close(status_w)
        status_w = -1
        try:
            try:
                proc.stdin.write((token + "\n").encode())
                proc.stdin.close()
            except OSError:
                pass
            captured, timed_out = _drain(proc, status_r, deadline)
        finally:
            _kill_group(proc.pid)
            proc.wait()
            for stream in (proc.stdout, proc.stderr):
                stream.close()
        elapsed = time.monotonic() - start
        if timed_out:
            return False, f"timeout: {_fmt_seconds(timeout)} s"
        return _verdict(captured, token, proc.returncode, elapsed, cpu)
    finally:
        for fd in (status_r, status_w):
            if fd >= 0:
                os.close(fd)
        _rmtree(workdir)


def _drain(proc: subprocess.Popen, status_r: int, deadline: float) -> tuple[dict, bool]:
    """Read the harness's stdout, stderr and status pipe (each capped) until it is done."""
    sel = selectors.DefaultSelector()
    captured: dict[str, bytes] = {"stdout": b"", "stderr": b"", "status": b""}
    for name, fd in (("stdout", proc.stdout.fileno()), ("stderr", proc.stderr.fileno())):
        sel.register(fd, selectors.EVENT_READ, name)
    sel.register(status_r, selectors.EVENT_READ, "status")
    exited_at = None
    try:
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                return captured, True
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > GRACE_S:
                break  # a leftover process holds a pipe open; the harness has spoken
            wait = min(deadline - now, 0.05 if exited_at is None else GRACE_S)
            for key, _ in sel.select(wait):
                try:
                    chunk = os.read(key.fd, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    sel.unregister(key.fd)
                elif len(captured[key.data]) < OUTPUT_CAP:
                    captured[key.data] += chunk[: OUTPUT_CAP - len(captured[key.data])]
        if proc.poll() is None:  # all pipes closed but the harness lingers
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                return captured, True
    finally:
        sel.close()
    return captured, False


def _verdict(
    captured: dict, token: str, returncode: int, elapsed: float, cpu: int
) -> tuple[bool, str]:
    stderr = _tail(captured["stderr"])
    try:
        status = json.loads(captured["status"].decode("utf-8", "replace"))
        if not isinstance(status, dict) or status.get("token") != token:
            raise ValueError("bad token")
    except ValueError:
        how = (
            f"was killed by {_signal_name(-returncode)}"
            if returncode < 0
            else f"exited with code {returncode}"
        )
        detail = f"error: the test harness {how} without a verdict (did the candidate kill it?)"
        return False, detail + (f"; stderr: {stderr}" if stderr else "")
    wait_status = status.get("status")
    if isinstance(wait_status, int) and os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        if sig == signal.SIGXCPU:
            return False, f"timeout: cpu time limit {cpu} s"
        detail = f"error: the candidate process was killed by {_signal_name(sig)}"
        if sig in (signal.SIGKILL, signal.SIGSEGV, signal.SIGBUS):
            detail += " (memory limit or crash?)"
        return False, detail + (f"; stderr: {stderr}" if stderr else "")
    try:
        outcome, text = json.loads(status.get("report") or "null")
    except (TypeError, ValueError):
        code = os.WEXITSTATUS(wait_status) if isinstance(wait_status, int) else "?"
        detail = f"error: the candidate process exited (code {code}) before the tests finished"
        return False, detail + (f"; stderr: {stderr}" if stderr else "")
    if outcome == "pass" and returncode == 0:
        return True, f"{text} in {elapsed:.2f} s"
    if outcome == "failed":
        return False, f"failed: {text}"
    if outcome == "pass":
        return False, f"error: the test harness exited with code {returncode}"
    return False, f"error: {text}"


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
    program = build_program(response, _field(item, "prompt"), entry or None)
    if "\x00" in program or "\x00" in test:
        return False, 0.0, "error: the code contains NUL bytes"
    passed, detail = run_program(program, test, entry, timeout)
    return passed, 1.0 if passed else 0.0, detail


if __name__ == "__main__":
    sys.exit(serve(check, default_timeout=DEFAULT_TIMEOUT_S, alarm=False))
