"""An HTML view of RLSD's token credit on a few sample responses, for the MLflow reports.

RLSD gives every token of a response the verifier's sign (``A``) but scales its size by the
self-teacher's opinion, ``Â_t = A · ((1 − λ) + λ · clip(w_t, 1 − ε_w, 1 + ε_w))``. GRPO would
give each token exactly ``A`` (``w_t = 1``). The page colours each token by ``w_t`` relative
to 1: green where the token gets more of the verdict than under GRPO (more credit on a
correct response, more blame on a wrong one), purple where it gets less.

The page is one self-contained file (inline CSS, no scripts, no external assets) so it can be
logged as an MLflow artifact and opened offline by a reviewer.

Sample JSONL schema (one object per line; unknown keys are ignored)::

    {"step": 12, "task_id": "arith-331a1cd463c5a93e", "prompt_preview": "Diego has 5 ...",
     "reward": 1.0, "seq_advantage": 0.93, "lam": 0.38,
     "tokens": ["Diego", " loses", ...],          # decoded response tokens, in order
     "token_advantage": [0.95, 0.91, ...],        # Â_t, same length as tokens
     "weight": [1.07, 0.88, ...],                 # w_t (clipped or not), same length
     "eps_w": 0.2}                                # optional: the clip half-width ε_w

Non-finite values are written as the JSON constant ``NaN`` and drawn grey.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "CreditSample",
    "CreditSampleWarning",
    "read_credit_samples",
    "render_credit_html",
    "write_credit_samples",
]


class CreditSampleWarning(UserWarning):
    """A credit-sample line was skipped (a torn last line of a killed writer)."""


class CreditSample(BaseModel):
    """One sampled response with RLSD's per-token credit, as the trainer can log it."""

    # NaN written as the NaN constant (json.loads reads it back); null would fail validation.
    model_config = ConfigDict(extra="ignore", ser_json_inf_nan="constants")

    step: int
    task_id: str
    prompt_preview: str = ""
    reward: float
    seq_advantage: float = Field(description="A: the GRPO sequence advantage (sign = verdict).")
    tokens: list[str] = Field(description="Decoded token strings of the response, in order.")
    token_advantage: list[float] = Field(description="Â_t per token.")
    weight: list[float] = Field(description="w_t per token (the teacher/student ratio).")
    lam: float = Field(description="λ at this step (teacher share; 0 means plain GRPO).")
    eps_w: float | None = Field(None, description="ε_w, the weight clip half-width, if known.")

    @model_validator(mode="after")
    def _equal_lengths(self) -> CreditSample:
        n_tok, n_adv, n_w = len(self.tokens), len(self.token_advantage), len(self.weight)
        if not n_tok == n_adv == n_w:
            raise ValueError(
                f"credit sample task_id={self.task_id!r} step={self.step}: tokens ({n_tok}), "
                f"token_advantage ({n_adv}) and weight ({n_w}) must have equal length"
            )
        return self


def read_credit_samples(path: str | os.PathLike[str]) -> list[CreditSample]:
    """Samples from a JSONL file, one per line.

    A torn *last* line (the writer was killed mid-line) is skipped with a
    :class:`CreditSampleWarning`; any other bad line is real corruption and raises a
    ``ValueError`` naming the file and line, since silently dropping evidence from a
    compliance report would be worse than failing it.
    """
    p = Path(path)
    text = p.read_bytes().decode("utf-8", errors="replace")
    lines = text.splitlines()
    torn_tail = bool(text) and not text.endswith("\n")
    samples: list[CreditSample] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if n == len(lines) and torn_tail:
                warnings.warn(
                    f"{p}:{n}: truncated last line skipped", CreditSampleWarning, stacklevel=2
                )
                continue
            raise ValueError(f"{p}:{n}: not valid JSON ({exc.msg})") from exc
        try:
            samples.append(CreditSample.model_validate(record))
        except ValidationError as exc:
            # One line per problem, without pydantic's echo of the whole (long) record.
            problems = "; ".join(
                (".".join(map(str, e["loc"])) + ": " if e["loc"] else "") + e["msg"]
                for e in exc.errors(include_url=False)
            )
            raise ValueError(f"{p}:{n}: invalid credit sample: {problems}") from exc
    return samples


def write_credit_samples(samples: Iterable[CreditSample], path: str | os.PathLike[str]) -> Path:
    """Write samples as JSONL in the schema :func:`read_credit_samples` reads."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(s.model_dump_json() + "\n" for s in samples), encoding="utf-8")
    return p


# --------------------------------------------------------------------------------------------
# Colours

# ColorBrewer PRGn ends, lightened enough that black text stays readable on full saturation.
_NEUTRAL = (0xF7, 0xF7, 0xF7)
_MORE = (0x5A, 0xAE, 0x61)  # green: more of the verdict than GRPO's uniform share
_LESS = (0xAF, 0x8D, 0xC3)  # purple: less
_INVALID = "#d0d0d0"
_CLIP_TOL = 1e-6


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> str:
    r, g, bl = (round(x + (y - x) * t) for x, y in zip(a, b, strict=True))
    return f"#{r:02x}{g:02x}{bl:02x}"


def weight_colour(w: float, scale: float) -> str:
    """Background for a token of weight ``w``; full colour at ``|w − 1| ≥ scale``."""
    if not math.isfinite(w):
        return _INVALID
    t = min(1.0, abs(w - 1.0) / scale) if scale > 0 else 0.0
    return _mix(_NEUTRAL, _MORE if w > 1.0 else _LESS, t)


def _colour_scale(samples: Sequence[CreditSample], eps_w: float | None) -> float:
    # One scale for the whole page, so the same shade means the same weight in every block.
    if eps_w is not None and eps_w > 0:
        return eps_w
    known = [s.eps_w for s in samples if s.eps_w]
    if known:
        return max(known)
    dev = [abs(w - 1.0) for s in samples for w in s.weight if math.isfinite(w)]
    # Capped below 1 so the purple end (w → 0) is reachable and legend weights stay positive.
    return min(max(dev, default=0.0) or 0.2, 0.95)


# --------------------------------------------------------------------------------------------
# Rendering

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _clean(text: str) -> str:
    # Byte-level tokenizers can decode to lone surrogates, which UTF-8 cannot store.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _token_html(token: str) -> str:
    """Escaped token body: newlines become a visible mark plus a line break, tabs/spaces kept."""
    if token == "":
        return '<span class="mark">∅</span>'
    text = _clean(token).replace("\r\n", "\n").replace("\r", "\n")
    parts = []
    for i, line in enumerate(text.split("\n")):
        if i:
            parts.append('<span class="mark">↵</span><br>')
        esc = html.escape(line, quote=True)
        # Control characters are invisible (NUL is not even valid HTML): show their code.
        esc = _CONTROL.sub(lambda m: f'<span class="mark">\\x{ord(m.group()):02x}</span>', esc)
        parts.append(esc)
    return "".join(parts)


def _fmt(v: float, signed: bool = False) -> str:
    if not math.isfinite(v):
        return str(v)
    return f"{v:+.4f}" if signed else f"{v:.4f}"


def _verdict(a: float) -> str:
    if a > 0:
        return "reinforced (A &gt; 0)"
    if a < 0:
        return "penalised (A &lt; 0)"
    return "no update (A = 0)"


def _summary(s: CreditSample, eps_w: float | None) -> list[tuple[str, str]]:
    ws = [w for w in s.weight if math.isfinite(w)]
    rows = [("tokens", str(len(s.tokens)))]
    if ws:
        rows += [
            ("mean w", _fmt(sum(ws) / len(ws))),
            ("min w", _fmt(min(ws))),
            ("max w", _fmt(max(ws))),
        ]
    if eps_w is not None and ws:
        lo, hi = 1.0 - eps_w, 1.0 + eps_w
        clipped = sum(1 for w in ws if w <= lo + _CLIP_TOL or w >= hi - _CLIP_TOL)
        rows.append((f"clipped at [{lo:g}, {hi:g}]", f"{clipped / len(ws):.1%}"))
    if s.seq_advantage != 0:
        ratios = [a / s.seq_advantage for a in s.token_advantage if math.isfinite(a)]
        if ratios:
            rows.append(("Â/A range", f"{_fmt(min(ratios))} … {_fmt(max(ratios))}"))
    return rows


def _note(s: CreditSample) -> str | None:
    if s.seq_advantage == 0:
        return "A = 0 (all responses in the group scored alike): this response gets no gradient."
    if s.lam == 0:
        return "λ = 0: the update equals GRPO; colours show the teacher's view only."
    return None


def _sample_html(s: CreditSample, eps_w: float | None, scale: float) -> str:
    esc = html.escape
    head = (
        f"<h2>step {s.step} · task <code>{esc(_clean(s.task_id))}</code></h2>"
        '<dl class="meta">'
        f"<dt>reward</dt><dd>{_fmt(s.reward)}</dd>"
        f'<dt>A</dt><dd class="{"pos" if s.seq_advantage > 0 else "neg" if s.seq_advantage < 0 else ""}">'
        f"{_fmt(s.seq_advantage, signed=True)} — {_verdict(s.seq_advantage)}</dd>"
        f"<dt>λ</dt><dd>{_fmt(s.lam)}</dd>"
        + (f"<dt>ε<sub>w</sub></dt><dd>{eps_w:g}</dd>" if eps_w is not None else "")
        + "</dl>"
    )
    prompt = (
        f'<p class="prompt"><span class="label">prompt</span> {esc(_clean(s.prompt_preview))}</p>'
        if s.prompt_preview
        else ""
    )
    spans = []
    for i, (tok, adv, w) in enumerate(zip(s.tokens, s.token_advantage, s.weight, strict=True)):
        tip = f"#{i}  Â_t = {_fmt(adv, signed=True)}  w_t = {_fmt(w)}  token {_clean(repr(tok))}"
        spans.append(
            f'<span class="tok" style="background:{weight_colour(w, scale)}" '
            f'title="{esc(tip, quote=True)}">{_token_html(tok)}</span>'
        )
    summary = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in _summary(s, eps_w))
    note = _note(s)
    return (
        '<section class="sample">'
        + head
        + prompt
        + (f'<p class="note">{esc(note)}</p>' if note else "")
        + f'<div class="response">{"".join(spans)}</div>'
        + f'<dl class="summary">{summary}</dl>'
        + "</section>"
    )


def _legend_html(scale: float) -> str:
    steps = [1.0 - scale, 1.0 - scale / 2, 1.0, 1.0 + scale / 2, 1.0 + scale]
    swatches = "".join(
        f'<span class="swatch" style="background:{weight_colour(w, scale)}">w = {w:.2f}</span>'
        for w in steps
    )
    return (
        '<div class="legend">'
        f"<div>{swatches}</div>"
        "<p>Each token's background shows its weight w<sub>t</sub> relative to 1, the uniform "
        "share every token gets under GRPO. "
        '<span class="swatch" style="background:#'
        + "".join(f"{c:02x}" for c in _MORE)
        + '">green</span> = the token gets <b>more</b> of the verdict than under GRPO (more '
        "credit on a reinforced response, more blame on a penalised one); "
        '<span class="swatch" style="background:#'
        + "".join(f"{c:02x}" for c in _LESS)
        + '">purple</span> = <b>less</b>. '
        f"Colour saturates at |w − 1| ≥ {scale:g}. The sign of every token's advantage "
        "Â<sub>t</sub> is the sign of A shown in each header. Hover a token for Â<sub>t</sub> "
        "and w<sub>t</sub>; ↵ marks a newline inside a token, ∅ an empty token, grey a non-finite weight. "
        "Â<sub>t</sub> = A · ((1 − λ) + λ · clip(w<sub>t</sub>, 1 − ε<sub>w</sub>, "
        "1 + ε<sub>w</sub>)).</p></div>"
    )


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem;
       color: #1a1a1a; background: #fff; max-width: 70rem; }
h1 { font-size: 1.4rem; }
h2 { font-size: 1.05rem; margin: 0 0 .4rem 0; }
.legend { border: 1px solid #ddd; padding: .6rem .8rem; margin-bottom: 1rem; font-size: .9rem; }
.swatch { display: inline-block; padding: 0 .4rem; margin: 0 .2rem .2rem 0;
          border: 1px solid #ccc; font-family: ui-monospace, monospace; font-size: .85rem; }
.sample { border: 1px solid #ccc; border-radius: 4px; padding: .8rem; margin-bottom: 1.2rem; }
dl.meta, dl.summary { display: flex; flex-wrap: wrap; gap: .2rem 1.2rem; margin: .2rem 0;
                      font-size: .9rem; }
dl.meta dt, dl.summary dt { font-weight: 600; }
dl.meta dd, dl.summary dd { margin: 0 0 0 .3rem; }
dl.summary { color: #444; }
dd.pos { color: #1b7837; } dd.neg { color: #762a83; }
.prompt { font-size: .85rem; color: #555; white-space: pre-wrap; margin: .3rem 0; }
.label { font-weight: 600; text-transform: uppercase; font-size: .75rem; color: #777; }
.note { font-size: .85rem; background: #fff8e1; padding: .2rem .4rem; margin: .3rem 0; }
.response { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
            font-size: .9rem; line-height: 1.7; white-space: pre-wrap; word-break: break-word;
            border-top: 1px solid #eee; padding-top: .5rem; margin: .4rem 0; }
.tok { border-radius: 2px; }
.tok:hover { outline: 1px solid #333; }
.mark { color: #888; font-size: .75em; }
"""


def render_credit_html(
    samples: Sequence[CreditSample],
    out_path: str | os.PathLike[str],
    title: str = "RLSD token credit",
    eps_w: float | None = None,
) -> Path:
    """Write the credit view for ``samples`` to ``out_path`` and return the path.

    ``eps_w`` is the weight clip half-width used by the run; a sample's own ``eps_w`` wins
    over it. When known it fixes the colour scale (full colour at the clip bounds) and adds
    the fraction of tokens at or beyond the bounds to each summary; without it the colours
    scale to the largest ``|w − 1|`` on the page (capped at 0.95). The summary's w
    statistics are of the weights as recorded (clipped or not).
    """
    samples = [
        s if isinstance(s, CreditSample) else CreditSample.model_validate(s) for s in samples
    ]
    scale = _colour_scale(samples, eps_w)
    blocks = [_sample_html(s, s.eps_w if s.eps_w is not None else eps_w, scale) for s in samples]
    if not blocks:
        blocks = ['<p class="note">No credit samples were recorded.</p>']
    esc_title = html.escape(_clean(title))
    page = (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc_title}</title><style>{_CSS}</style></head><body>"
        f"<h1>{esc_title}</h1>" + _legend_html(scale) + "\n".join(blocks) + "</body></html>\n"
    )
    p = Path(out_path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(p)
    return p
