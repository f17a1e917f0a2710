"""Great Expectations validation of a source's rows, quarantine and the policy threshold.

Each source's expectation suite is built from its ``expectations`` block (declared next to the
source in YAML) and run with Great Expectations 1.x on an in-memory (ephemeral) context over a
pandas frame of the mapped rows. Rows an expectation flags are quarantined with the names of the
expectations that caught them; rows that pass go on to the task record, whose own validator (the
student prompt must not contain the privileged context) may quarantine more. When the quarantined
fraction exceeds the source's ``policy.max_bad_fraction`` ingestion stops with
:class:`IngestionPolicyError`, after the quarantine and the validation document are written.

The validation document keeps GE's results without the unexpected *values* (they may be
privileged text): only the expectation, success, counts and the failing row ids.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlsd.context.config import SourceConfig
from rlsd.context.policy import (
    BUILTIN_PII,
    PrivilegedContextPolicy,
    Redactor,
    leak_findings,
    pii_kinds,
)
from rlsd.context.reader import quarantine_record, read_source, rows_to_tasks
from rlsd.tasks.record import Task

_FRAME_COLUMNS = ("id", "prompt", "answer", "privileged_context", "verifier")
#: Derived boolean columns: the leak guard, run inside the GE suite so its failures are named
#: like every other expectation's.
LEAK_COLUMNS = ("student_prompt_contains_privileged", "student_prompt_contains_redacted_remnant")

#: The policy used when none is given: every source allowed, every built-in PII detector.
DEFAULT_POLICY = PrivilegedContextPolicy(allowed_sources=["*"])
_DROP_RESULT_KEYS = (
    "unexpected_list",
    "partial_unexpected_list",
    "partial_unexpected_counts",
    "partial_unexpected_index_list",
    "unexpected_index_query",
)


class IngestionPolicyError(RuntimeError):
    """A source has more bad rows than its policy tolerates."""


@dataclass
class SourceValidation:
    """The outcome of validating one source."""

    source: str
    n_rows: int
    tasks: list[Task]
    quarantined: list[dict[str, Any]]
    results: dict[str, Any] = field(repr=False)
    redactions: dict[str, int] = field(default_factory=dict)

    @property
    def bad_fraction(self) -> float:
        return len(self.quarantined) / self.n_rows if self.n_rows else 0.0


def expectation_label(config: dict[str, Any]) -> str:
    """``expect_column_values_to_match_regex(answer)``: how reasons name an expectation."""
    column = config.get("kwargs", {}).get("column")
    return f"{config['type']}({column})" if column else config["type"]


def pii_column(kind: str) -> str:
    return f"student_text_has_{kind}"


def build_suite(
    cfg: SourceConfig,
    known_verifiers: Iterable[str],
    pii_kinds_checked: Iterable[str] = BUILTIN_PII,
) -> Any:
    """The GE expectation suite of a source, from its ``expectations`` block and the policy."""
    import great_expectations as gx

    e = cfg.expectations
    gxe = gx.expectations
    suite = gx.ExpectationSuite(name=f"rlsd-context-{cfg.name}")
    for col in ("id", "prompt", "answer", "privileged_context"):
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=col))
    suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column="id"))
    for col, (lo, hi) in (
        ("id", e.id_length),
        ("prompt", e.prompt_length),
        ("answer", e.answer_length),
        ("privileged_context", e.privileged_length),
    ):
        suite.add_expectation(
            gxe.ExpectColumnValueLengthsToBeBetween(column=col, min_value=lo, max_value=hi)
        )
    if e.answer_regex is not None:
        suite.add_expectation(
            gxe.ExpectColumnValuesToMatchRegex(column="answer", regex=e.answer_regex)
        )
    suite.add_expectation(
        gxe.ExpectColumnValuesToBeInSet(column="verifier", value_set=sorted(set(known_verifiers)))
    )
    for col in (*LEAK_COLUMNS, *(pii_column(k) for k in pii_kinds_checked)):
        suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column=col, value_set=[False]))
    return suite


def _ephemeral_context() -> Any:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    import great_expectations as gx

    # GE configures its loggers on import; quiet them afterwards (temp-dir notices per context)
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.ERROR)

    ctx = gx.get_context(mode="ephemeral")
    try:  # silence the per-validation progress bars
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    except Exception:  # noqa: BLE001 - cosmetic only
        pass
    return ctx


def student_text(cfg: SourceConfig, prompt: str | None) -> str:
    """Everything the student sees of a row: the system prompt and the rendered template."""
    if prompt is None:
        return cfg.system_prompt or ""
    rendered = cfg.prompt_template.replace("{prompt}", prompt)
    return f"{cfg.system_prompt}\n{rendered}" if cfg.system_prompt else rendered


def derived_checks(
    cfg: SourceConfig,
    row: dict[str, Any],
    redacted: str | None,
    policy: PrivilegedContextPolicy,
    redactor: Redactor,
) -> dict[str, bool]:
    """The leak-guard and student-PII columns of one row."""
    seen = student_text(cfg, row.get("prompt"))
    raw = row.get("privileged_context")
    leaks = leak_findings(seen, raw, redacted or raw, redactor, policy.leakage) if raw else []
    out = {
        LEAK_COLUMNS[0]: "contains_privileged" in leaks,
        LEAK_COLUMNS[1]: bool(set(leaks) - {"contains_privileged"}),
    }
    found = set(pii_kinds(seen, redactor)) if policy.student_pii == "quarantine" else set()
    for kind in redactor.kinds:
        out[pii_column(kind)] = kind in found
    return out


def run_expectations(
    cfg: SourceConfig,
    rows: list[dict[str, Any]],
    known_verifiers: Iterable[str],
    derived: list[dict[str, bool]] | None = None,
    pii_kinds_checked: Iterable[str] = (),
) -> tuple[dict[int, list[str]], dict[str, Any]]:
    """Run the source's suite; returns (row index -> failed expectations, results document).

    ``derived`` holds one dict of boolean check columns per row (see :func:`derived_checks`).
    """
    import pandas as pd

    ctx = _ephemeral_context()
    if derived is None:
        derived = [dict.fromkeys(LEAK_COLUMNS, False) for _ in rows]
    frame = pd.DataFrame(
        [
            {**{c: row.get(c) for c in _FRAME_COLUMNS}, **d}
            for row, d in zip(rows, derived, strict=True)
        ],
        columns=[*_FRAME_COLUMNS, *LEAK_COLUMNS, *(pii_column(k) for k in pii_kinds_checked)],
    ).astype(object)
    batch_def = (
        ctx.data_sources.add_pandas(f"rlsd-{cfg.name}")
        .add_dataframe_asset(name=cfg.name)
        .add_batch_definition_whole_dataframe("all-rows")
    )
    batch = batch_def.get_batch(batch_parameters={"dataframe": frame})
    suite = ctx.suites.add(build_suite(cfg, known_verifiers, pii_kinds_checked))
    with warnings.catch_warnings():
        # pandas warns when a regex has groups (answer formats do); the match is still right
        warnings.filterwarnings("ignore", "This pattern is interpreted as a regular expression")
        result = batch.validate(suite, result_format="COMPLETE").to_json_dict()

    failures: dict[int, list[str]] = {}
    ids = frame["id"].tolist()
    for res in result["results"]:
        label = expectation_label(res["expectation_config"])
        r = res.get("result") or {}
        indices = [int(i) for i in r.get("unexpected_index_list") or []]
        for i in indices:
            failures.setdefault(i, []).append(label)
        for key in _DROP_RESULT_KEYS:
            r.pop(key, None)
        r["unexpected_index_list"] = indices
        r["unexpected_ids"] = [ids[i] for i in indices]
        if res.get("exception_info", {}).get("raised_exception"):
            raise RuntimeError(
                f"source {cfg.name!r}: expectation {label} raised: {res['exception_info']}"
            )
    result.pop("meta", None)  # batch markers / fingerprints: not needed, not stable
    result["source"] = cfg.name
    return failures, result


def validate_source(
    cfg: SourceConfig,
    known_verifiers: Iterable[str],
    rows: list[dict[str, Any]] | None = None,
    out_dir: Path | str | None = None,
    policy: PrivilegedContextPolicy | None = None,
    variables: Mapping[str, str] | None = None,
) -> SourceValidation:
    """Read (unless ``rows`` are given), redact, validate, quarantine, apply the threshold.

    ``variables`` fill the source URL's ``${VAR}`` references before the environment does.

    Privileged text is redacted by the policy's rules before the tasks are built, so the tasks
    carry only redacted text; the leak guard checks the student prompt against both the raw and
    the redacted text. With ``out_dir``, writes ``<source>.quarantine.jsonl`` and
    ``<source>.validation.json`` there (before raising, so a stopped ingestion can be
    inspected); neither holds privileged text, only its digest.
    """
    known_verifiers = list(known_verifiers)
    policy = policy or DEFAULT_POLICY
    redactor = Redactor(policy.redaction)
    if rows is None:
        rows = read_source(cfg, variables)
    redacted_rows, redactions, derived = [], {}, []
    for row in rows:
        raw = row.get("privileged_context")
        red, counts = redactor.redact(raw) if raw else (raw, {})
        for kind, n in counts.items():
            redactions[kind] = redactions.get(kind, 0) + n
        redacted_rows.append({**row, "privileged_context": red})
        derived.append(derived_checks(cfg, row, red, policy, redactor))
    checked = redactor.kinds if policy.student_pii == "quarantine" else []
    failures, results = (
        run_expectations(cfg, rows, known_verifiers, derived, checked) if rows else ({}, {})
    )

    def scrub(text: str) -> str:
        return redactor.redact(text)[0]

    quarantined = [
        quarantine_record(cfg, rows[i], reasons, i, scrub)
        for i, reasons in sorted(failures.items())
    ]
    passing = [i for i in range(len(rows)) if i not in failures]
    tasks, rejected = rows_to_tasks(cfg, [redacted_rows[i] for i in passing], scrub)
    for q in rejected:  # row_index is relative to `passing`: map it back
        q["row_index"] = passing[q["row_index"]]
    quarantined = sorted(quarantined + rejected, key=lambda q: q["row_index"])
    for q in rejected:  # the digest names the raw text, as for the other quarantined rows
        q["privileged_sha256"] = quarantine_record(cfg, rows[q["row_index"]], [], 0)[
            "privileged_sha256"
        ]
    outcome = SourceValidation(cfg.name, len(rows), tasks, quarantined, results, redactions)

    failed = sorted({reason for q in quarantined for reason in q["reasons"]})
    results["rlsd"] = {
        "n_rows": len(rows),
        "n_tasks": len(tasks),
        "n_quarantined": len(quarantined),
        "bad_fraction": outcome.bad_fraction,
        "max_bad_fraction": cfg.policy.max_bad_fraction,
        "failed_checks": failed,
        "redactions": dict(sorted(redactions.items())),
        "policy_digest": policy.digest(),
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with (out / f"{cfg.name}.quarantine.jsonl").open("w", encoding="utf-8") as fh:
            for q in quarantined:
                fh.write(json.dumps(q, sort_keys=True) + "\n")
        (out / f"{cfg.name}.validation.json").write_text(
            json.dumps(results, indent=2, sort_keys=True, default=str), encoding="utf-8"
        )
    if outcome.bad_fraction > cfg.policy.max_bad_fraction:
        labels = sorted({r.split(":")[0] if r.startswith("task_record") else r for r in failed})
        raise IngestionPolicyError(
            f"source {cfg.name!r}: {len(quarantined)}/{len(rows)} rows "
            f"({outcome.bad_fraction:.1%}) failed validation, above the policy threshold "
            f"max_bad_fraction={cfg.policy.max_bad_fraction:.1%}; failed expectations: "
            + ", ".join(labels)
        )
    return outcome
