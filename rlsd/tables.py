"""One table type, two renderings: Markdown for MLflow and Prefect artifacts, rich for the CLI.

A report builds a :class:`TextTable` once (its columns and rows); where it is shown only picks
the rendering, so the inventory, the data validation, the comparison and the lineage report
read the same in a terminal and in a compliance reviewer's MLflow view.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def _md_cell(value: Any) -> str:
    # a pipe or newline in hostile text (a reason, a response) must not break the table
    return str(value).replace("|", "\\|").replace("\n", " ")


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table, cells escaped."""
    out = ["| " + " | ".join(_md_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


@dataclass
class TextTable:
    headers: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    title: str = ""
    #: columns shown left-aligned in a terminal (text); the others are right-aligned (numbers)
    text_columns: frozenset[str] = frozenset()

    def markdown(self) -> str:
        return md_table(self.headers, self.rows)

    def rich(self) -> Any:
        from rich.table import Table

        table = Table(title=self.title or None)
        for h in self.headers:
            table.add_column(h, justify="left" if h in self.text_columns else "right")
        for row in self.rows:
            table.add_row(*(str(c) for c in row))
        return table
