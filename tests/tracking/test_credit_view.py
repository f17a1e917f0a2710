"""The token-credit HTML view: escaping, one span per token, colours, tooltips, validation."""

from __future__ import annotations

import html
import json
import re

import pytest
import torch

from rlsd.algo.credit import lambda_schedule, rlsd_token_advantages, rlsd_token_weights
from rlsd.tracking.credit_view import (
    CreditSample,
    CreditSampleWarning,
    read_credit_samples,
    render_credit_html,
    weight_colour,
    write_credit_samples,
)

EPS_W = 0.2
HOSTILE = ["<script>", "alert(1)", "</script>", " &amp;", ' "quoted"', " it's", "\n", "####", " 1"]
TOKEN_SPAN = re.compile(r'<span class="tok" style="background:(#[0-9a-f]{6})" title="([^"]*)">')


def _sample(tokens: list[str], reward: float, adv: float, step: int = 12, **kw) -> CreditSample:
    """Build a record the way a trainer would: real RLSD weights/advantages from log-probs."""
    n = len(tokens)
    gen = torch.Generator().manual_seed(n + step)
    student = -torch.rand(1, n, generator=gen) * 2.0
    teacher = student + torch.randn(1, n, generator=gen) * 0.3
    a, mask = torch.tensor([adv]), torch.ones(1, n)
    lam = lambda_schedule(step, 0.5, 50)
    w = rlsd_token_weights(a, teacher, student, mask)[0]
    token_adv = rlsd_token_advantages(a, teacher, student, mask, lam, EPS_W)[0]
    fields = dict(
        step=step,
        task_id="arith-331a1cd463c5a93e",
        prompt_preview="Diego has 5 points and loses 4. <b>How many</b> are left?",
        reward=reward,
        seq_advantage=adv,
        tokens=tokens,
        token_advantage=token_adv.tolist(),
        weight=w.tolist(),
        lam=lam,
    )
    return CreditSample(**(fields | kw))


def _spans(page: str) -> list[tuple[str, str]]:
    return TOKEN_SPAN.findall(page)


def test_hostile_tokens_are_escaped_one_span_each(tmp_path):
    s = _sample(HOSTILE, reward=1.0, adv=0.93)
    page = render_credit_html([s], tmp_path / "credit.html", eps_w=EPS_W).read_text()
    assert "<script>" not in page and "</script>" not in page
    assert "&lt;script&gt;" in page and "&lt;/script&gt;" in page
    assert "&amp;amp;" in page  # the literal text "&amp;" survives as text, not as "&"
    assert "&quot;quoted&quot;" in page
    assert "&lt;b&gt;How many&lt;/b&gt;" in page  # the prompt preview is escaped too
    assert len(_spans(page)) == len(HOSTILE)
    assert page.count('class="tok"') == len(HOSTILE)
    # The newline token shows a mark and breaks the line; spaces are kept by pre-wrap.
    assert '<span class="mark">↵</span><br>' in page
    assert "white-space: pre-wrap" in page
    # Self-contained: no scripts, no external assets.
    assert not re.search(r"<script|src=|href=|@import|url\(", page, re.IGNORECASE)


def test_tooltips_carry_token_advantage_and_weight(tmp_path):
    s = _sample(["The", " answer", " is", " 1", "."], reward=1.0, adv=0.93)
    page = render_credit_html([s], tmp_path / "c.html").read_text()
    spans = _spans(page)
    for i, (_, title) in enumerate(spans):
        tip = html.unescape(title)
        assert f"Â_t = {s.token_advantage[i]:+.4f}" in tip
        assert f"w_t = {s.weight[i]:.4f}" in tip
        assert repr(s.tokens[i]) in tip


def test_colours_diverge_around_one(tmp_path):
    assert weight_colour(1.0, EPS_W) == "#f7f7f7"
    more, less = weight_colour(1.15, EPS_W), weight_colour(0.85, EPS_W)
    assert len({more, less, "#f7f7f7"}) == 3
    assert weight_colour(1.2, EPS_W) == weight_colour(1.9, EPS_W)  # saturates at the clip bound
    r, g, b = (int(more[i : i + 2], 16) for i in (1, 3, 5))
    assert g > r and g > b, "more credit is green"
    r, g, b = (int(less[i : i + 2], 16) for i in (1, 3, 5))
    assert r > g and b > g, "less credit is purple"

    s = _sample(["a", "b", "c"], reward=0.0, adv=-0.93)
    s = s.model_copy(update={"weight": [1.3, 1.0, 0.7], "eps_w": EPS_W})
    page = render_credit_html([s], tmp_path / "c.html").read_text()
    assert [c for c, _ in _spans(page)] == [
        weight_colour(1.3, EPS_W),
        "#f7f7f7",
        weight_colour(0.7, EPS_W),
    ]
    assert "penalised (A &lt; 0)" in page
    # Two of three weights sit beyond the clip bounds.
    assert "clipped at [0.8, 1.2]</dt><dd>66.7%" in page


def test_header_summary_and_notes(tmp_path):
    good = _sample([" 4", " -", " 1"], reward=1.0, adv=1.1, step=3)
    flat = _sample([" 5"], reward=1.0, adv=0.0, step=4)
    late = _sample([" 5"], reward=0.0, adv=-0.7, step=60)  # λ decayed to 0: plain GRPO
    page = render_credit_html(
        [good, flat, late], tmp_path / "c.html", title="RLSD <credit> & co", eps_w=EPS_W
    ).read_text()
    assert "<title>RLSD &lt;credit&gt; &amp; co</title>" in page
    assert page.count('<section class="sample">') == 3
    assert "step 3 · task <code>arith-331a1cd463c5a93e</code>" in page
    assert "+1.1000 — reinforced (A &gt; 0)" in page
    assert f"<dt>λ</dt><dd>{good.lam:.4f}</dd>" in page
    ws = good.weight
    assert f"<dt>mean w</dt><dd>{sum(ws) / 3:.4f}</dd>" in page
    assert f"<dt>min w</dt><dd>{min(ws):.4f}</dd>" in page
    assert f"<dt>max w</dt><dd>{max(ws):.4f}</dd>" in page
    assert "no update (A = 0)" in page and "gets no gradient" in page
    assert "λ = 0: the update equals GRPO" in page
    assert "green" in page and "purple" in page  # the legend


def test_length_mismatch_names_the_sample():
    good = _sample(["a", "b"], reward=1.0, adv=0.5, step=7)
    with pytest.raises(ValueError, match=r"task_id='arith-331a1cd463c5a93e' step=7.*equal length"):
        CreditSample(**(good.model_dump() | {"weight": [1.0]}))


def test_jsonl_round_trip_with_torn_tail(tmp_path):
    samples = [_sample(HOSTILE, 1.0, 0.93), _sample(["x"], 0.0, -0.5, step=13)]
    path = write_credit_samples(samples, tmp_path / "credit_samples.jsonl")
    first = json.loads(path.read_text().splitlines()[0])
    assert set(first) == {
        "step",
        "task_id",
        "prompt_preview",
        "reward",
        "seq_advantage",
        "tokens",
        "token_advantage",
        "weight",
        "lam",
        "eps_w",
    }
    assert read_credit_samples(path) == samples
    with open(path, "a") as fh:
        fh.write('{"step": 14, "task_id": "arith-')  # a kill mid-write
    with pytest.warns(CreditSampleWarning, match="truncated last line"):
        assert read_credit_samples(path) == samples


def test_bad_line_in_the_middle_is_an_error(tmp_path):
    good = _sample(["a"], 1.0, 0.5).model_dump()
    path = tmp_path / "s.jsonl"
    bad = good | {"step": 8, "tokens": ["a", "b"]}
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=r"s\.jsonl:2: .*task_id='arith-331a1cd463c5a93e' step=8"):
        read_credit_samples(path)
    path.write_text("{not json\n" + json.dumps(good) + "\n")
    with pytest.raises(ValueError, match=r"s\.jsonl:1: not valid JSON"):
        read_credit_samples(path)


def test_odd_tokens_render(tmp_path):
    s = _sample(["", "\x00", "\t", "\udc80", "a\r\nb"], 1.0, 0.5)
    page = render_credit_html([s], tmp_path / "c.html").read_bytes().decode("utf-8")
    assert len(_spans(page)) == 5
    assert "\x00" not in page and "\\x00" in page
    assert "∅" in page and "\\udc80" in page
    empty = render_credit_html([], tmp_path / "e.html").read_text()
    assert "No credit samples" in empty


def test_colour_scale_without_eps_w_follows_the_page(tmp_path):
    s = _sample(["a", "b", "c"], reward=1.0, adv=0.5)
    s = s.model_copy(update={"weight": [1.1, 1.0, 0.95]})
    page = render_credit_html([s], tmp_path / "c.html").read_text()
    assert [c for c, _ in _spans(page)] == [
        weight_colour(1.1, 0.1),
        "#f7f7f7",
        weight_colour(0.95, 0.1),
    ]
    assert "saturates at |w − 1| ≥ 0.1" in page and "clipped at" not in page
