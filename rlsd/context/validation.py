"""Great Expectations validation of a source's rows, quarantine and the policy threshold.

Each source's expectation suite is built from its ``expectations`` block (declared next to the
source in YAML) and run with Great Expectations 1.x on an in-memory (ephemeral) context over a
pandas frame of the mapped rows. Rows an expectation flags are quarantined with the names of the
expectations that caught them; rows that pass go on to the task record, whose own validator (the
student prompt must not contain the privileged context) may quarantine more. When the quarantined
fraction exceeds the source's ``policy.max_bad_fraction`` ingestion stops with
:class:`IngestionPolicyError`, after the quarantine and the validation document are written.

The validation document keeps GE's results without the unexpected *values* (they may be
privileged text): only the expectation, success, counts and the failing row ids (PII-redacted).

Order matters for cost and safety: undecodable rows are quarantined first (the suite never sees
them); then the per-row length limits are checked, and only rows within them go through the
redaction, the leak guard and the student-text PII scan (a 2 MB row is quarantined for its
length without being scanned). Every other mapped column -- id, answer, split, provenance,
verifier and the metadata columns -- is scanned for PII on every row: a hit quarantines the row
whatever ``student_pii`` says, because those values are keys and labels that flow unredacted
into ``tasks.jsonl``, MLflow datasets and evaluation tables, not content that can be redacted
in place (a redacted id would no longer be the row's id).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rlsd.context.config import SourceConfig
from rlsd.context.policy import (
    BUILTIN_PII,
    PrivilegedContextPolicy,
    Redactor,
    leak_findings,
    pii_in_fields,
    pii_kinds,
)
from rlsd.context.reader import (
    OVER_LENGTH,
    SHOWN_FIELDS,
    IngestError,
    quarantine_record,
    read_source,
    row_to_task,
    task_record_reason,
)
from rlsd.tasks import leak
from rlsd.tasks.record import Task

_FRAME_COLUMNS = ("id", "prompt", "answer", "privileged_context", "verifier")
#: Derived boolean columns: the leak guard, run inside the GE suite so its failures are named
#: like every other expectation's.
LEAK_COLUMNS = ("student_prompt_contains_privileged", "student_prompt_contains_redacted_remnant")
#: Task fields (besides the prompt and the privileged text) scanned for PII on every row; each
#: gets a derived boolean column ``pii_in_<field>`` ("metadata": any metadata column).
PII_FIELDS = ("id", "answer", "split", "source", "verifier", "metadata")

#: The policy used when none is given: every source allowed, every built-in PII detector.
DEFAULT_POLICY = PrivilegedContextPolicy(allowed_sources=["*"])
_DROP_RESULT_KEYS = (
    "unexpected_list",
    "partial_unexpected_list",
    "partial_unexpected_counts",
    "partial_unexpected_index_list",
    "unexpected_index_query",
)


class IngestionPolicyError(IngestError):
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


def field_pii_column(field: str) -> str:
    return f"pii_in_{field}"


FIELD_PII_COLUMNS = tuple(field_pii_column(f) for f in PII_FIELDS)


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
    for col in (*LEAK_COLUMNS, *(pii_column(k) for k in pii_kinds_checked), *FIELD_PII_COLUMNS):
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


def field_pii(cfg: SourceConfig, row: dict[str, Any], redactor: Redactor) -> dict[str, list[str]]:
    """Source column -> PII kinds, over every mapped column but the prompt (``student_pii``
    governs it) and the privileged text (redacted by design), and every metadata column."""
    fields: dict[str, object] = {}
    for f in PII_FIELDS[:-1]:
        if f in cfg.columns:
            fields[cfg.columns[f]] = row.get(f)
    fields.update(row.get("metadata") or {})
    return pii_in_fields(fields, redactor)


def field_pii_checks(cfg: SourceConfig, found: Mapping[str, list[str]]) -> dict[str, bool]:
    """The ``pii_in_<field>`` columns of one row, from :func:`field_pii`'s findings."""
    out = {}
    for f in PII_FIELDS[:-1]:
        out[field_pii_column(f)] = f in cfg.columns and cfg.columns[f] in found
    out[field_pii_column("metadata")] = any(c in found for c in cfg.metadata_columns)
    return out


def _length_bounds(cfg: SourceConfig) -> dict[str, tuple[int, int]]:
    e = cfg.expectations
    return {"id": e.id_length, "prompt": e.prompt_length, "answer": e.answer_length,
            "privileged_context": e.privileged_length}  # fmt: skip


def outside_length_bounds(cfg: SourceConfig, row: dict[str, Any]) -> dict[str, bool]:
    """Fields of ``row`` whose length breaks the source's limits -> whether it is too long (the
    GE length expectations, checked here first so the costlier checks skip the rows those
    expectations quarantine)."""
    out = {}
    for f, (lo, hi) in _length_bounds(cfg).items():
        value = row.get(f)
        if isinstance(value, str) and not lo <= len(value) <= hi:
            out[f] = len(value) > hi
    return out


def run_expectations(
    cfg: SourceConfig,
    rows: list[dict[str, Any]],
    known_verifiers: Iterable[str],
    derived: list[dict[str, bool]] | None = None,
    pii_kinds_checked: Iterable[str] = (),
    *,
    positions: Sequence[int] | None = None,
    redact: Callable[[str], str] | None = None,
) -> tuple[dict[int, list[str]], dict[str, Any]]:
    """Run the source's suite; returns (row index -> failed expectations, results document).

    ``derived`` holds one dict of boolean check columns per row (see :func:`derived_checks`).
    ``positions`` maps each of ``rows`` to its index in the source (rows the suite never sees,
    undecodable ones, leave gaps); ``redact`` scrubs the failing ids the document lists.
    """
    import pandas as pd

    pii_kinds_checked = list(pii_kinds_checked)
    ctx = _ephemeral_context()
    if derived is None:
        derived = [dict.fromkeys((*LEAK_COLUMNS, *FIELD_PII_COLUMNS), False) for _ in rows]
    columns = [*_FRAME_COLUMNS, *LEAK_COLUMNS, *(pii_column(k) for k in pii_kinds_checked),
               *FIELD_PII_COLUMNS]  # fmt: skip
    frame = pd.DataFrame(
        [
            {**{c: row.get(c) for c in _FRAME_COLUMNS}, **d}
            for row, d in zip(rows, derived, strict=True)
        ],
        columns=columns,
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
    where = list(positions) if positions is not None else list(range(len(rows)))
    for res in result["results"]:
        label = expectation_label(res["expectation_config"])
        r = res.get("result") or {}
        indices = [int(i) for i in r.get("unexpected_index_list") or []]
        for i in indices:
            failures.setdefault(where[i], []).append(label)
        for key in _DROP_RESULT_KEYS:
            r.pop(key, None)
        r["unexpected_index_list"] = [where[i] for i in indices]
        r["unexpected_ids"] = [
            redact(ids[i]) if redact is not None and isinstance(ids[i], str) else ids[i]
            for i in indices
        ]
        info = res.get("exception_info") or {}
        if info.get("raised_exception"):
            # GE's message and traceback may quote column values: only the class is named
            last = (str(info.get("exception_traceback") or "").strip().splitlines() or [""])[-1]
            cls = last.split(":", 1)[0].strip() if ":" in last else "an exception"
            raise IngestError(
                f"source {cfg.name!r}: expectation {label} raised {cls} (its message is "
                "withheld, as it may quote row values)",
                source=cfg.name,
            )
    result.pop("meta", None)  # batch markers / fingerprints: not needed, not stable
    result["source"] = cfg.name
    return failures, result


def _reason_columns(cfg: SourceConfig, labels: list[str], pii: Mapping[str, Any]) -> list[str]:
    """The source columns a row's failed checks are about, for the reviewer."""
    out: list[str] = []
    for label in labels:
        arg = label[label.find("(") + 1 : -1] if label.endswith(")") else ""
        if arg in cfg.columns:
            out.append(cfg.columns[arg])
        elif arg in LEAK_COLUMNS:
            out += [cfg.columns["prompt"], cfg.columns["privileged_context"]]
        elif arg.startswith("student_text_has_"):
            out.append(cfg.columns["prompt"])
        elif arg.startswith("pii_in_"):
            out += list(pii)
    return list(dict.fromkeys(out))


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
    inspected); neither holds privileged text (unless the policy's ``store_privileged_text``
    allows it), only its digest -- nor a prompt that holds it.
    """
    known_verifiers = list(known_verifiers)
    policy = policy or DEFAULT_POLICY
    redactor = Redactor(policy.redaction)
    if rows is None:
        rows = read_source(cfg, variables)

    def scrub(text: str) -> str:
        return redactor.redact(text)[0]

    def record(i: int, reasons: list[str], **kw: Any) -> dict[str, Any]:
        return quarantine_record(
            cfg, rows[i], reasons, i, scrub, store_privileged_text=policy.store_privileged_text,
            **kw,
        )  # fmt: skip

    # undecodable rows: quarantined alone, never seen by the suite
    quarantined = [record(i, ["undecodable"]) for i, r in enumerate(rows) if r.get("undecodable")]
    checked = [i for i, r in enumerate(rows) if not r.get("undecodable")]
    student_kinds = redactor.kinds if policy.student_pii == "quarantine" else []
    not_run = dict.fromkeys(
        (*LEAK_COLUMNS, *(pii_column(k) for k in redactor.kinds), *FIELD_PII_COLUMNS), False
    )
    redacted: dict[int, str | None] = {}
    redactions: dict[str, int] = {}
    derived: list[dict[str, bool]] = []
    out_of_bounds: dict[int, dict[str, bool]] = {}
    pii_found: dict[int, dict[str, list[str]]] = {}
    for i in checked:
        row = rows[i]
        pii_found[i] = field_pii(cfg, row, redactor)
        bad_length = outside_length_bounds(cfg, row)
        if bad_length:
            # quarantined by the length expectations anyway: the redaction, the leak guard and
            # the student-text scan (the costly part on a huge row) do not run on it
            out_of_bounds[i] = bad_length
            d = dict(not_run)
        else:
            raw = row.get("privileged_context")
            red, counts = redactor.redact(raw) if raw else (raw, {})
            for kind, n in counts.items():
                redactions[kind] = redactions.get(kind, 0) + n
            redacted[i] = red
            d = derived_checks(cfg, row, red, policy, redactor)
        d.update(field_pii_checks(cfg, pii_found[i]))
        derived.append(d)
    by_row = dict(zip(checked, derived, strict=True))
    if checked:
        failures, results = run_expectations(
            cfg, [rows[i] for i in checked], known_verifiers, derived, student_kinds,
            positions=checked, redact=scrub,
        )  # fmt: skip
    else:
        failures, results = {}, {"success": True, "results": []}

    for i, labels in sorted(failures.items()):
        withhold: dict[str, str] = {}
        if i in out_of_bounds:
            withhold["prompt"] = "leak_guard_not_run"
            for f, too_long in out_of_bounds[i].items():
                if too_long and f in SHOWN_FIELDS:
                    withhold[f] = OVER_LENGTH
        elif by_row[i][LEAK_COLUMNS[0]]:
            withhold["prompt"] = "contains_privileged"
        elif by_row[i][LEAK_COLUMNS[1]]:
            withhold["prompt"] = "contains_redacted_privileged"
        columns = _reason_columns(cfg, labels, pii_found[i])
        quarantined.append(
            record(i, labels, withhold=withhold, columns=columns, pii=pii_found[i] or None)
        )
    tasks = []
    for i in checked:
        if i in failures:
            continue
        row = {**rows[i], "privileged_context": redacted[i]}
        try:
            tasks.append(row_to_task(cfg, row))
        except (ValidationError, ValueError, TypeError) as exc:
            red = redacted[i]
            leaks = isinstance(red, str) and leak.contains(
                student_text(cfg, rows[i].get("prompt")), red
            )
            quarantined.append(
                record(i, [task_record_reason(exc)],
                       withhold={"prompt": "contains_redacted_privileged"} if leaks else None)
            )  # fmt: skip
    quarantined.sort(key=lambda q: q["row_index"])
    if len(checked) < len(rows):
        results["success"] = False  # the suite passed only the rows it could see
    outcome = SourceValidation(cfg.name, len(rows), tasks, quarantined, results, redactions)

    failed = sorted({reason for q in quarantined for reason in q["reasons"]})
    results["rlsd"] = {
        "n_rows": len(rows),
        "n_tasks": len(tasks),
        "n_quarantined": len(quarantined),
        "bad_fraction": outcome.bad_fraction,
        "max_bad_fraction": cfg.policy.max_bad_fraction,
        "failed_checks": failed,
        "n_undecodable": len(rows) - len(checked),
        "n_outside_length_bounds": len(out_of_bounds),
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
            + ", ".join(labels),
            source=cfg.name,
        )
    return outcome
