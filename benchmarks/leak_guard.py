"""The privileged-leak guard's time on large rows: the old quadratic remnant check against the
linear one, on the same inputs.

    .venv/bin/python benchmarks/leak_guard.py [--sizes 10000 100000 1000000 2000000]
        [--old-cap 8] [--quick]

Each row holds a student text and a privileged text of the given size (in characters), both
sentences of random words, and no PII, so ``leak_findings`` runs all three of its checks and the
remnant check has one piece per short sentence, none of which is in the student text: the worst
case of the old check, which scanned the whole student text once per piece. The old algorithm
(copied below as it was: whitespace-and-casefold normalisation, ``p in student`` per piece) stops
after ``--old-cap`` seconds on a row; its full time is then projected from the pieces it got
through. The new one is :func:`rlsd.context.policy.leak_findings` (TR39 normalisation, then
one substring search per piece while that is cheap, the 10 KB row, else one Aho-Corasick pass).
Printed: seconds per row and per MB, whether the two agree where the old one finished, and how
each time grows from row to row (x10 for ten times the size is linear; x100 is quadratic).
"""

from __future__ import annotations

import argparse
import itertools
import platform
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlsd.context.policy import LeakageSettings, Redactor, leak_findings  # noqa: E402
from rlsd.tasks.leak import normalise  # noqa: E402

# ------------------------------------------------------------------------------------------
# The old guard, as it was before issue 14 (rlsd/tasks/leak.py and rlsd/context/policy.py)

_OLD_WS = re.compile(r"\s+")
_OLD_MIN = 8
_PIECE_BREAK = r"(?<=[.;:!?,])\s+|\n+"


def old_normalise(text: str) -> str:
    return _OLD_WS.sub(" ", text).strip().casefold()


def old_contains(student_text: str, privileged: str) -> bool:
    hint = old_normalise(privileged)
    return len(hint) >= _OLD_MIN and hint in old_normalise(student_text)


class Capped(Exception):
    def __init__(self, done: int, total: int) -> None:
        self.done, self.total = done, total


def old_leak_findings(
    student_text: str,
    privileged_raw: str,
    privileged_redacted: str,
    redactor: Redactor,
    leakage: LeakageSettings,
    deadline: float,
) -> list[str]:
    student = old_normalise(student_text)
    reasons = []
    if old_contains(student_text, privileged_raw):
        reasons.append("contains_privileged")
    if old_normalise(privileged_redacted) != old_normalise(privileged_raw) and old_contains(
        student_text, privileged_redacted
    ):
        reasons.append("contains_redacted_privileged")
    if not reasons:
        splitter = re.compile(f"{redactor.placeholder_regex().pattern}|{_PIECE_BREAK}")
        pieces = [p for p in (old_normalise(x) for x in splitter.split(privileged_redacted)) if p]
        total = sum(len(p) for p in pieces)
        # the old sum(... if len(p) >= min and p in student), unrolled only to stop at the cap
        covered = 0
        for i, p in enumerate(pieces):
            if len(p) >= leakage.min_piece_chars and p in student:
                covered += len(p)
            if i % 64 == 0 and time.perf_counter() > deadline:
                raise Capped(i + 1, len(pieces))
        if total and covered / total >= leakage.max_covered_fraction:
            reasons.append("contains_redacted_remnant")
    return reasons


# ------------------------------------------------------------------------------------------


def make_text(size: int, seed: int, vocabulary: list[str]) -> str:
    """Sentences of three random words: ~20 characters a piece, each one longer than the
    12-character minimum, so every piece is searched for."""
    rnd, out, n = random.Random(seed), [], 0
    while n < size:
        sentence = " ".join(rnd.choice(vocabulary) for _ in range(3)).capitalize() + "."
        out.append(sentence)
        n += len(sentence) + 1
    return " ".join(out)[:size]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000, 2_000_000])
    ap.add_argument("--old-cap", type=float, default=8.0, help="seconds the old check may run")
    ap.add_argument("--quick", action="store_true", help="10 KB and 100 KB rows, 2 s cap")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.old_cap = [10_000, 100_000], 2.0
    rnd = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocabulary = ["".join(rnd.choices(letters, k=rnd.randint(3, 8))) for _ in range(4000)]
    redactor, leakage = Redactor(), LeakageSettings()
    normalise("warm up")  # the translate table is built once per process: not a row's cost

    print(f"Python {platform.python_version()} on {platform.machine()}; old check capped at "
          f"{args.old_cap:g} s a row")  # fmt: skip
    print(f"{'row':>9} {'pieces':>8} {'old s':>14} {'new s':>8} {'new s/MB':>9} "
          f"{'speed-up':>9}  same result")  # fmt: skip
    times: list[tuple[float, float]] = []
    for size in args.sizes:
        privileged = make_text(size, 1, vocabulary)
        student = make_text(size, 2, vocabulary)
        pieces = len(re.split(_PIECE_BREAK, privileged))
        t0 = time.perf_counter()
        new = leak_findings(student, privileged, privileged, redactor, leakage)
        t_new = time.perf_counter() - t0
        t0 = time.perf_counter()
        try:
            old = old_leak_findings(
                student, privileged, privileged, redactor, leakage, t0 + args.old_cap
            )
            t_old, same = time.perf_counter() - t0, str(old == new)
            old_txt = f"{t_old:.3f}"
        except Capped as cap:
            elapsed = time.perf_counter() - t0
            t_old = elapsed * cap.total / cap.done
            old_txt, same = f"~{t_old:.0f} (proj.)", "-"
        times.append((t_old, t_new))
        print(f"{size / 1e3:>7.0f}KB {pieces:>8} {old_txt:>14} {t_new:>8.3f} "
              f"{t_new / (size / 1e6):>9.3f} {t_old / t_new:>8.1f}x  {same}")  # fmt: skip
    for (size_a, (old_a, new_a)), (size_b, (old_b, new_b)) in itertools.pairwise(
        zip(args.sizes, times, strict=True)
    ):
        print(f"{size_a / 1e3:.0f}KB -> {size_b / 1e3:.0f}KB (x{size_b / size_a:.0f} the size): "
              f"old x{old_b / old_a:.1f}, new x{new_b / new_a:.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
