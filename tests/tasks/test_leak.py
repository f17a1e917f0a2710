"""The privileged-leak guard under attack: text that reads like the privileged text is caught
by the record, by ingestion and by the trainer alike; text that does not is left alone."""

from __future__ import annotations

import random
import unicodedata

import pytest
from pydantic import ValidationError

from rlsd.context.policy import Redactor, leak_findings
from rlsd.tasks import leak
from rlsd.tasks.record import ChatMessage, Task

SOLUTION = "Add the two invoices, then subtract the credit note: 120 + 80 - 35 = 165."

_CYRILLIC = str.maketrans("eaopcxEAOPCXHTMK", "еаорсхЕАОРСХНТМК")


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def _between_letters(text: str, sep: str) -> str:
    return "".join(c + sep if c.isalpha() else c for c in text)


HOSTILE = {
    "zero_width_spaces": _between_letters(SOLUTION, "\u200b"),
    "zero_width_joiners_and_bom": _between_letters(SOLUTION, "\u200d\ufeff"),
    "soft_hyphens": _between_letters(SOLUTION, "\u00ad"),
    "cyrillic_homoglyphs": SOLUTION.translate(_CYRILLIC),
    "fullwidth": _fullwidth(SOLUTION),
    # upper case spelt with Cyrillic capitals: case-folding alone does not make it Latin
    "mixed_case_cyrillic": "".join(
        c.upper() if i % 2 else c for i, c in enumerate(SOLUTION)
    ).translate(_CYRILLIC),
    "greek_omicron": SOLUTION.replace("o", "\u03bf"),
    "nbsp_and_rewrapping": SOLUTION.replace(" ", "\u00a0\n "),
}


def _task(prompt: str, privileged: str) -> Task:
    return Task(
        id="t",
        prompt=[ChatMessage(role="user", content=prompt)],
        answer="165",
        privileged_context=privileged,
        verifier="math-answer",
        split="train",
        source="test",
    )


@pytest.mark.parametrize("variant", sorted(HOSTILE))
def test_disguised_privileged_text_is_a_leak_everywhere(variant: str) -> None:
    disguised = HOSTILE[variant]
    assert disguised != SOLUTION
    prompt = f"How much is owed? Hint: {disguised}"
    assert leak.contains(prompt, SOLUTION)
    # the disguise may sit on either side: in the privileged text as well as the prompt
    assert leak.contains(f"Hint: {SOLUTION}", disguised)
    with pytest.raises(ValidationError, match="contains the privileged context"):
        _task(prompt, SOLUTION)
    r = Redactor()
    assert leak_findings(prompt, SOLUTION, SOLUTION, r) == ["contains_privileged"]


def test_the_trainer_refuses_what_the_record_refuses(tiny_model_dir) -> None:
    from transformers import AutoTokenizer

    from rlsd.train.batch import PrivilegedLeakError, student_prompt_ids

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    for variant, disguised in sorted(HOSTILE.items()):
        # model_construct skips the record's validator, as a task from a buggy source might
        task = Task.model_construct(
            id=variant,
            prompt=[ChatMessage(role="user", content=f"Hint: {disguised}")],
            answer="165",
            privileged_context=SOLUTION,
            verifier="math-answer",
            images=[],
            split="train",
            source="test",
            metadata={},
        )
        with pytest.raises(PrivilegedLeakError, match=variant):
            student_prompt_ids(tokenizer, task)
    honest = _task("A shop sends two invoices and one credit note. How much is owed?", SOLUTION)
    assert student_prompt_ids(tokenizer, honest)


def test_combining_characters_match_their_precomposed_letters() -> None:
    precomposed = "Le café crème coûte 4,50 € à Besançon."
    decomposed = unicodedata.normalize("NFD", precomposed)
    assert decomposed != precomposed
    assert leak.contains(f"Indice : {decomposed}", precomposed)
    assert leak.contains(f"Indice : {precomposed}", decomposed)
    assert leak.normalise(precomposed) == leak.normalise(decomposed)


def test_tr39_skeletons_and_compatibility_forms() -> None:
    n = leak.normalise
    assert n("ｅｘａｍｐｌｅ") == n("example") == n("ЕХАМРLЕ") == n("EXAMPLE")  # Cyrillic caps
    assert n("\u03bfpen") == n("open") == n("\u043epen")  # Greek omicron, Cyrillic o
    assert n("ﬁnal") == n("final")  # ligature
    assert n("a\u200b\u200c\u200d\u2060\ufeff\u00adb") == "ab"
    assert n("  two\t\n words\u3000here ") == "two words here"
    assert n("ABC") == n("abc")
    # case-insensitive within a script as well as across: Cyrillic capitals read as Latin ones,
    # and their lower case follows them
    assert n("НЕТ") == n("нет") == n("HET") == n("het")
    assert n("INVOICE") == n("invoice") == n("\u0406NVOICE")  # Latin I, Cyrillic І


def test_short_texts_are_not_checked_after_normalisation() -> None:
    # the 8-character minimum counts what is left once invisibles are gone
    padded = "10" + "\u200b" * 10
    assert len(padded) >= leak.MIN_LEAK_CHECK_CHARS
    assert not leak.contains(f"There are {padded} birds and 10 cats.", padded)
    _task("There are 10 birds and 10 cats.", "10")


@pytest.mark.parametrize(
    ("prompt", "privileged"),
    [
        ("What is 3 plus 4? Answer with a number.", "3 + 4 = 7. The answer is 7."),
        ("Griffin had 24 french fries. How many are left?", "24 - 5 = 19; 19 - 10 = 9."),
        ("Translate 'the example' into French.", "L'exemple est traduit ainsi."),
        ("Сколько будет два плюс два?", "Два плюс два равно четырём."),  # Cyrillic, honest
    ],
)
def test_honest_prompts_are_not_flagged(prompt: str, privileged: str) -> None:
    assert not leak.contains(prompt, privileged)
    assert _task(prompt, privileged).privileged_context == privileged
    assert leak_findings(prompt, privileged, privileged, Redactor()) == []


def test_normalise_is_idempotent_on_every_character() -> None:
    for cp in range(0x30000):
        once = leak.normalise(chr(cp))
        assert leak.normalise(once) == once, f"U+{cp:04X}"


@pytest.mark.parametrize("search", [leak.occurring, leak._aho_corasick])
def test_occurring_agrees_with_substring_search(search) -> None:
    rnd = random.Random(0)
    for trial in range(500):
        alphabet = "ab" if trial % 2 else "abcé"
        haystack = "".join(rnd.choices(alphabet, k=rnd.randint(0, 80)))
        needles = ["".join(rnd.choices(alphabet, k=rnd.randint(0, 8))) for _ in range(20)]
        assert search(haystack, needles) == {n for n in needles if n and n in haystack}


@pytest.mark.parametrize("search", [leak.occurring, leak._aho_corasick])
def test_occurring_on_2mb_of_nested_needles(search) -> None:
    # needles that are suffixes and prefixes of one another, in 2 MB of one letter: the worst
    # case for reporting every match at every position
    haystack = "a" * 2_000_000
    needles = ["a" * k for k in range(12, 2000, 7)] + ["a" * 500 + "b", "b" + "a" * 30]
    assert search(haystack, needles) == {"a" * k for k in range(12, 2000, 7)}
    assert search(haystack + "b", needles) == set(needles) - {"b" + "a" * 30}


def test_occurring_on_2mb_of_many_needles() -> None:
    # 100,000 distinct needles, none of them in the text: where one search per needle was
    # quadratic (2 x 10^11 character steps)
    rnd = random.Random(1)
    haystack = "".join(rnd.choices("abcdefgh ", k=2_000_000))
    needles = ["".join(rnd.choices("abcdefgh", k=12)) + "z" for _ in range(100_000)]
    planted = [needles[i][:-1] for i in range(0, 100_000, 1000)]
    assert leak.occurring(haystack, needles) == set()
    assert leak.occurring(haystack, needles + planted) == {p for p in planted if p in haystack}
