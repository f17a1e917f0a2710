"""Per-step metric sinks: a JSONL file now; MLflow plugs in behind the same two methods."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Protocol


class MetricsSink(Protocol):
    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """One JSON object per optimizer step: {"step": k, ...metrics}.

    On resume, lines after the checkpoint's step are dropped first, so the file holds exactly one
    line per step even when the killed run logged steps that the checkpoint did not keep.
    """

    def __init__(self, path: str | Path, resume_from_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_from_step is None:
            self.path.write_text("")
        else:
            self.truncate_after(resume_from_step)
        self._fh = open(self.path, "a")  # noqa: SIM115 - lives as long as the sink

    def truncate_after(self, step: int) -> None:
        kept = (
            [r for r in read_metrics(self.path) if r["step"] <= step] if self.path.exists() else []
        )
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        tmp.replace(self.path)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
        self._fh.write(json.dumps(row) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


class MultiSink:
    def __init__(self, *sinks: MetricsSink) -> None:
        self.sinks = sinks

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for s in self.sinks:
            s.log(step, metrics)

    def close(self) -> None:
        for s in self.sinks:
            s.close()


def _jsonable(v: float) -> float | None:
    v = float(v)
    return None if math.isnan(v) or math.isinf(v) else v


def read_metrics(path: str | Path) -> list[dict]:
    """Rows of a metrics file; a torn last line (a kill mid-write) is ignored."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
