"""The one privileged-leak check: does student-visible text contain the privileged text?

The task record refuses a leaking task, ingestion quarantines a leaking row (and looks for
redacted remnants on top, :func:`rlsd.context.policy.leak_findings`), and the trainer refuses
to tokenise a leaking student prompt -- all three with this normalisation and this threshold,
so a task the record accepts is never refused later for a different reason, nor the reverse.

:func:`normalise` is what makes the check hold against text that *looks* the same but is spelt
differently: compatibility forms (fullwidth letters, ligatures), invisible characters (zero-width
spaces, soft hyphens, joiners, bidi controls), case, whitespace and homoglyphs from other
scripts (Cyrillic 'а' for Latin 'a', Greek omicron for 'o': the confusable skeletons of Unicode
TR39, data in :mod:`rlsd.tasks._confusables`). Every step is linear in the text, and so is
:func:`occurring`, the multi-pattern search the remnant check runs.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from array import array
from collections.abc import Iterable

from rlsd.tasks._confusables import PROTOTYPES

#: Privileged texts shorter than this (after normalisation) are not checked for leaks: a
#: two-character answer such as "10" legitimately appears in many prompts.
MIN_LEAK_CHECK_CHARS = 8

_WS = re.compile(r"\s+")

#: Default_Ignorable_Code_Point (Unicode DerivedCoreProperties.txt): rendered as nothing, so
#: an attacker can put them between any two letters. Category Cf is dropped on top of these.
_DEFAULT_IGNORABLE: tuple[tuple[int, int], ...] = (
    (0x00AD, 0x00AD),  # soft hyphen
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x061C, 0x061C),
    (0x115F, 0x1160),  # Hangul fillers
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),  # Mongolian variation selectors
    (0x200B, 0x200F),  # zero-width space / non-joiner / joiner, bidi marks
    (0x202A, 0x202E),
    (0x2060, 0x206F),  # word joiner, invisible operators
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFEFF, 0xFEFF),  # zero-width no-break space
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),  # tags, variation selectors supplement (assigned or not)
)

#: Planes that hold assigned characters (0-3) plus the ignorable plane-14 block; the rest is
#: unassigned or private use, which normalisation leaves as it is.
_SCANNED = (range(0x0, 0x40000), range(0xE0000, 0xE1000))


def _invisible() -> frozenset[str]:
    """Characters normalisation removes: default ignorables, format (Cf) and control characters
    other than whitespace (which is collapsed instead); all render as nothing."""
    out = {chr(cp) for lo, hi in _DEFAULT_IGNORABLE for cp in range(lo, hi + 1)}
    for block in _SCANNED:
        for cp in block:
            ch = chr(cp)
            cat = unicodedata.category(ch)
            if cat == "Cf" or (cat == "Cc" and not ch.isspace()):
                out.add(ch)
    return frozenset(out)


def _prototypes() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in PROTOTYPES.splitlines():
        src, *target = line.split()
        out[chr(int(src, 16))] = "".join(chr(int(t, 16)) for t in target)
    return out


def _is_ascii_letter(text: str) -> bool:
    return len(text) == 1 and text.isascii() and text.isalpha()


def _case_aware(protos: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """TR39's prototypes, split for case-insensitive use: (for capitals, for the rest).

    TR39 is case-sensitive: Cyrillic 'Н' reads as Latin 'H', but its lower case 'н' maps to a
    small capital 'ʜ', so case-folding first would let 'THE' spelt with Cyrillic capitals pass,
    and mapping first would part 'НЕТ' from 'нет'. So capitals are mapped before case folding
    (to their Latin capitals), and a lower-case letter whose own prototype is not a Latin letter
    takes its capital's ('н' -> 'h'). TR39 folds capital I into small l (alike in sans-serif):
    a capital whose prototype is 'l' maps to 'I' instead, so 'I', 'І' and 'Ι' fold to 'i' like
    'i' does.
    """
    capitals = {
        c: ("I" if t == "l" else t)
        for c, t in protos.items()
        if unicodedata.category(c) in ("Lu", "Lt")
    }
    inherited: dict[str, str] = {}
    for capital, target in capitals.items():
        small = capital.casefold()
        if (
            _is_ascii_letter(target)
            and len(small) == 1
            and small != capital
            and not small.isascii()
            and not _is_ascii_letter(protos.get(small, small))
        ):
            inherited.setdefault(small, target.casefold())
    return capitals, {**protos, **inherited}


def _fold(
    ch: str, capitals: dict[str, str], lower: dict[str, str], invisible: frozenset[str]
) -> str:
    """One character's image: decompose, map capitals, casefold, drop invisibles, map to the
    TR39 prototype, until nothing changes (a prototype may be upper case, 'O' for '0', or
    decompose further)."""
    s = ch
    for _ in range(16):
        t = "".join(capitals.get(c, c) for c in unicodedata.normalize("NFKD", s))
        t = unicodedata.normalize("NFKD", t.casefold())
        t = "".join(lower.get(c, c) for c in t if c not in invisible)
        if t == s:
            return s
        s = t
    raise RuntimeError(f"leak normalisation of U+{ord(ch):04X} does not reach a fixed point")


@functools.cache
def _table() -> dict[int, str | None]:
    """The per-character part of :func:`normalise` as one ``str.translate`` table, built once
    (a fraction of a second) on first use."""
    capitals, lower = _case_aware(_prototypes())
    invisible = _invisible()
    table: dict[int, str | None] = {cp: None for cp in map(ord, invisible)}
    for block in _SCANNED:
        for cp in block:
            ch = chr(cp)
            if ch in invisible or (
                ch not in lower and unicodedata.is_normalized("NFKD", ch) and ch.casefold() == ch
            ):
                continue
            image = _fold(ch, capitals, lower, invisible)
            if image != ch:
                table[cp] = image or None
    return table


def normalise(text: str) -> str:
    """The text as the leak check compares it: two texts that read the same normalise the same.

    NFKC's compatibility folding (kept decomposed, NFKD, as TR39 skeletons are defined on NFD),
    format (Cf), zero-width and other default-ignorable characters removed, case-folded, every
    character mapped to its TR39 confusable prototype, whitespace runs collapsed to one space.
    A pure function; linear in the text (three C passes and one regex substitution).
    """
    folded = unicodedata.normalize("NFKD", text).translate(_table())
    # a prototype may carry combining marks: put them back in canonical order (TR39's last step)
    return _WS.sub(" ", unicodedata.normalize("NFD", folded)).strip()


def holds(student_normalised: str, privileged_normalised: str) -> bool:
    """:func:`contains` on texts already passed through :func:`normalise`."""
    return (
        len(privileged_normalised) >= MIN_LEAK_CHECK_CHARS
        and privileged_normalised in student_normalised
    )


def contains(student_text: str, privileged: str) -> bool:
    """Whether ``student_text`` holds ``privileged`` (both normalised; short texts never count).

    Linear: ``str.__contains__`` is the two-way algorithm for long needles (CPython >= 3.10).
    """
    return holds(normalise(student_text), normalise(privileged))


def _common_prefix(a: str, b: str) -> int:
    """Length of the common prefix, by bisection on slices (C comparisons, not a Python loop)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


#: Up to this many characters searched per character of input, one C substring search per
#: needle beats the automaton (which runs at Python speed, some thousand times slower a step),
#: and the work stays linear in the input: needles x haystack <= budget x (needles + haystack).
_DIRECT_SEARCH_BUDGET = 256


def occurring(haystack: str, needles: Iterable[str]) -> set[str]:
    """The needles that occur in ``haystack``, in O(len(haystack) + total needle length).

    Few needles in a short text: one substring search each (C speed). Otherwise one
    Aho-Corasick pass, :func:`_aho_corasick`. Empty needles are ignored.
    """
    patterns = {n for n in needles if n}
    if not patterns or not haystack:
        return set()
    total = sum(map(len, patterns))
    if len(patterns) * len(haystack) <= _DIRECT_SEARCH_BUDGET * (len(haystack) + total):
        return {p for p in patterns if p in haystack}
    return _aho_corasick(haystack, patterns)


def _aho_corasick(haystack: str, needles: Iterable[str]) -> set[str]:
    """The needles that occur in ``haystack``, in one pass: linear however they overlap.

    Each needle is reported once, and the walk along the output links stops at the first needle
    already reported (everything further along that chain was reported with it), so needles
    that are suffixes of one another do not cost a step each at every position.
    """
    patterns = sorted({n for n in needles if n})
    if not patterns or not haystack:
        return set()
    # The trie. A node's first child sits in two arrays, further children in a dict keyed by
    # node * K + code point: most nodes of long needles have one child, and a dict per node
    # would cost ~200 bytes each. Sorted needles share their prefix with the previous one, so
    # only the rest of each needle makes new nodes and no lookups are needed to build it.
    K = 0x110000
    cap = sum(map(len, patterns)) + 1
    first_code = array("l", [-1]) * cap
    first_child = array("l", [0]) * cap
    parent = array("l", [0]) * cap
    code = array("l", [-1]) * cap
    more: dict[int, int] = {}
    terminal: dict[int, str] = {}
    by_depth: list[list[int]] = [[]]  # failure links are computed shallowest first
    path, previous, n_nodes = [0], "", 1
    for pattern in patterns:
        shared = _common_prefix(previous, pattern)
        del path[shared + 1 :]
        node = path[shared]
        for depth in range(shared, len(pattern)):
            o, new = ord(pattern[depth]), n_nodes
            n_nodes += 1
            parent[new], code[new] = node, o
            if first_code[node] < 0:
                first_code[node], first_child[node] = o, new
            else:
                more[node * K + o] = new
            if len(by_depth) <= depth + 1:
                by_depth.append([])
            by_depth[depth + 1].append(new)
            path.append(new)
            node = new
        terminal[node] = pattern
        previous = pattern

    fail = array("l", [0]) * n_nodes
    out = array("l", [0]) * n_nodes  # nearest needle along the failure chain (0: none)
    is_needle = bytearray(n_nodes)
    for node in terminal:
        is_needle[node] = 1
    for level in by_depth[2:]:  # depth 1 fails to the root
        for node in level:
            o, f = code[node], fail[parent[node]]
            while True:
                if first_code[f] == o:
                    target = first_child[f]
                    break
                target = more.get(f * K + o, -1)
                if target >= 0 or not f:
                    break
                f = fail[f]
            if target > 0:
                fail[node] = target
                out[node] = target if is_needle[target] else out[target]

    reported = bytearray(n_nodes)
    remaining = len(terminal)
    node = 0
    for o in map(ord, haystack):
        while True:
            if first_code[node] == o:
                node = first_child[node]
                break
            target = more.get(node * K + o, -1)
            if target >= 0:
                node = target
                break
            if not node:
                break
            node = fail[node]
        v = node if is_needle[node] else out[node]
        while v and not reported[v]:
            reported[v] = 1
            remaining -= 1
            v = out[v]
        if not remaining:
            break
    return {pattern for node, pattern in terminal.items() if reported[node]}
