"""Read a declared source through SQLAlchemy and turn its rows into task records.

``read_source`` returns plain dicts keyed by task field (the column mapping applied);
``rows_to_tasks`` builds :class:`rlsd.tasks.Task` records from them. A row that the task record
rejects -- missing fields, or a student prompt that contains its privileged context -- becomes a
quarantined row carrying the reason; nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError
from sqlalchemy import create_engine, literal_column, select, table, text

from rlsd.context.config import SourceConfig
from rlsd.tasks.record import ChatMessage, Task


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def read_source(
    cfg: SourceConfig, variables: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Run the source's query (or read its table) and apply the column mapping.

    ``variables`` fill the URL's ``${VAR}`` references before the environment does.

    Each returned dict has the keys ``id, prompt, answer, privileged_context, split, source,
    verifier, domain, metadata`` (values may be None where the row has none; validation decides).
    """
    engine = create_engine(cfg.resolved_url(variables))
    try:
        stmt = (
            text(cfg.query)
            if cfg.query is not None
            else select(literal_column("*")).select_from(table(cfg.table))
        )
        with engine.connect() as conn:
            result = conn.execute(stmt)
            rows = [dict(r._mapping) for r in result]
    finally:
        engine.dispose()
    if rows:
        wanted = set(cfg.columns.values()) | set(cfg.metadata_columns)
        missing = sorted(wanted - set(rows[0]))
        if missing:
            raise KeyError(
                f"source {cfg.name!r}: the query returns no column(s) {missing}; "
                f"it returns {sorted(rows[0])}"
            )
    out = []
    for row in rows:
        mapped: dict[str, Any] = {f: _as_text(row[c]) for f, c in cfg.columns.items()}
        mapped.setdefault("split", None)
        mapped.setdefault("source", None)
        mapped.setdefault("verifier", None)
        mapped["split"] = mapped["split"] or hash_split(mapped.get("id"), cfg.heldout_fraction)
        mapped["verifier"] = mapped["verifier"] or cfg.verifier
        mapped["domain"] = cfg.domain
        mapped["metadata"] = {c: row[c] for c in cfg.metadata_columns}
        out.append(mapped)
    return out


#: Salt of the split hash; changing it would reshuffle every snapshot, so it is versioned.
SPLIT_SALT = "rlsd-split-v1"


def hash_split(task_id: str | None, heldout_fraction: float) -> str:
    """'heldout' for a stable ``heldout_fraction`` share of ids, else 'train'.

    The position of an id in [0, 1) is its salted sha256, so the assignment depends on the id
    alone: adding or removing other rows never moves it.
    """
    if task_id is None:
        return "train"  # the row is quarantined for its null id anyway
    h = hashlib.sha256(f"{SPLIT_SALT}:{task_id}".encode()).digest()
    position = int.from_bytes(h[:8], "big") / 2**64
    return "heldout" if position < heldout_fraction else "train"


def privileged_digest(text_: str | None) -> str | None:
    """sha256 of privileged text: what artifacts record instead of the text itself."""
    if text_ is None:
        return None
    return "sha256:" + hashlib.sha256(text_.encode("utf-8")).hexdigest()


def quarantine_record(
    cfg: SourceConfig,
    row: dict[str, Any],
    reasons: list[str],
    index: int,
    redact: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """A quarantine entry: the row minus its privileged text (digest only), and why.

    ``redact`` scrubs PII from the prompt and answer kept for the reviewer (a row may be
    quarantined precisely because its student prompt holds PII).
    """

    def scrub(value: Any) -> Any:
        return redact(value) if redact is not None and isinstance(value, str) else value

    return {
        "source": cfg.name,
        "row_index": index,
        "id": row.get("id"),
        "prompt": scrub(row.get("prompt")),
        "answer": scrub(row.get("answer")),
        "privileged_sha256": privileged_digest(row.get("privileged_context")),
        "reasons": reasons,
    }


def row_to_task(cfg: SourceConfig, row: dict[str, Any]) -> Task:
    """Build one task record (raises pydantic ValidationError / ValueError when it is invalid)."""
    if row.get("prompt") is None:
        raise ValueError("prompt is null")
    messages = []
    if cfg.system_prompt:
        messages.append(ChatMessage(role="system", content=cfg.system_prompt))
    messages.append(
        ChatMessage(role="user", content=cfg.prompt_template.replace("{prompt}", row["prompt"]))
    )
    provenance = row.get("source")
    return Task(
        id=row.get("id"),
        prompt=messages,
        answer=row.get("answer"),
        privileged_context=row.get("privileged_context"),
        verifier=row.get("verifier"),
        split=row.get("split"),
        source=f"context:{cfg.name}" + (f" {provenance}" if provenance else ""),
        metadata={"domain": cfg.domain, "context_source": cfg.name, **row.get("metadata", {})},
    )


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "record"
            parts.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
        return "task_record: " + "; ".join(parts)
    return f"task_record: {exc}"


def rows_to_tasks(
    cfg: SourceConfig,
    rows: list[dict[str, Any]],
    redact: Callable[[str], str] | None = None,
) -> tuple[list[Task], list[dict[str, Any]]]:
    """Map rows to tasks; rows the task record rejects come back as quarantine entries."""
    tasks, quarantined = [], []
    for i, row in enumerate(rows):
        try:
            tasks.append(row_to_task(cfg, row))
        except (ValidationError, ValueError, TypeError) as exc:
            quarantined.append(quarantine_record(cfg, row, [_reason(exc)], i, redact))
    return tasks, quarantined
