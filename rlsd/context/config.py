"""Source declarations: where privileged context lives and how its rows become tasks.

A sources file is YAML::

    sources:
      - name: demo-arithmetic
        url: sqlite:///${RLSD_DEMO_STORE}          # ${ENV_VAR} is read from the environment
        query: SELECT t.task_id, t.question, ... FROM tasks t JOIN reasoning_traces r ...
        columns: {id: task_id, prompt: question, answer: answer,
                  privileged_context: trace, split: split, source: provenance}
        domain: arithmetic
        verifier: math-answer
        expectations: {answer_regex: '^-?[0-9]+$', answer_length: [1, 32]}
        policy: {max_bad_fraction: 0.0}

Credentials never live in the file: a password in the URL must be a whole ``${ENV_VAR}``
reference, and the URL is interpolated only when an engine is created (``resolved_url``), so
a loaded config -- and anything that prints it -- holds no secret.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rlsd.configs.loading import read_yaml_mapping, validation_problems

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_WHOLE_ENV_REF = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")
# scheme://user:password@host... ; the password is whatever lies between the first ':' after
# the scheme and the last '@' before the host part.
_URL_PASSWORD = re.compile(r"^[A-Za-z0-9+_.-]+://[^/:@]*:(?P<password>[^/]*)@")
_QUERY_PASSWORD = re.compile(r"[?&](?:password|passwd|pwd)=(?P<password>[^&]*)", re.IGNORECASE)

#: Task-record fields a source may map columns to.
MAPPABLE_FIELDS = ("id", "prompt", "answer", "privileged_context", "split", "source", "verifier")
REQUIRED_FIELDS = ("id", "prompt", "answer", "privileged_context")


class SourceConfigError(ValueError):
    """A sources file (or a source in it) is invalid; the message names the file and field."""


class MissingEnvVarError(SourceConfigError):
    """A ``${ENV_VAR}`` the source URL refers to is not set."""


class ExpectationsConfig(BaseModel):
    """The expectation suite of one source (run by Great Expectations, see ``validation``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    answer_regex: str | None = Field(
        default=None, description="Regex every answer must match (per domain), e.g. '^-?[0-9]+$'."
    )
    id_length: tuple[int, int] = Field(default=(1, 200), description="Bounds on id length.")
    prompt_length: tuple[int, int] = Field(
        default=(1, 20_000), description="Bounds on the student prompt text length (chars)."
    )
    answer_length: tuple[int, int] = Field(
        default=(1, 20_000), description="Bounds on the gold answer length (chars)."
    )
    privileged_length: tuple[int, int] = Field(
        default=(1, 50_000), description="Bounds on the privileged text length (chars)."
    )

    @field_validator("answer_regex")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"answer_regex does not compile: {exc}") from exc
        return v

    @field_validator("id_length", "prompt_length", "answer_length", "privileged_length")
    @classmethod
    def _ordered(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] < 0 or v[0] > v[1]:
            raise ValueError(f"length bounds must satisfy 0 <= min <= max, got {list(v)}")
        return v


class PolicyConfig(BaseModel):
    """What a source is allowed to get wrong before ingestion stops."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_bad_fraction: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Largest fraction of quarantined rows tolerated; above it ingestion stops.",
    )


class SourceConfig(BaseModel):
    """One internal store that feeds tasks and their privileged context."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    url: str = Field(
        min_length=1,
        description="SQLAlchemy URL; credentials as ${ENV_VAR} references, never literal.",
    )
    query: str | None = Field(default=None, description="SQL returning one row per task.")
    table: str | None = Field(default=None, description="Table read whole (instead of query).")
    columns: dict[str, str] = Field(
        description="Task field -> column name; needs id, prompt, answer, privileged_context."
    )
    metadata_columns: list[str] = Field(
        default_factory=list, description="Columns copied into the task's metadata."
    )
    domain: str = Field(min_length=1, description="Domain of the tasks, e.g. 'arithmetic'.")
    verifier: str | None = Field(
        default=None, description="Verifier for every row (unless a 'verifier' column is mapped)."
    )
    prompt_template: str = Field(
        default="{prompt}", description="Student prompt text; '{prompt}' is the mapped column."
    )
    system_prompt: str | None = Field(default=None, description="Optional system message.")
    heldout_fraction: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="Share of rows held out when no 'split' column is mapped (or it is null): "
        "chosen by a stable hash of the row id, so adding rows never reshuffles old ones.",
    )
    expectations: ExpectationsConfig = Field(default_factory=ExpectationsConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)

    @field_validator("url")
    @classmethod
    def _no_literal_password(cls, v: str) -> str:
        for pattern in (_URL_PASSWORD, _QUERY_PASSWORD):
            m = pattern.search(v)
            if m and m.group("password") and not _WHOLE_ENV_REF.match(m.group("password")):
                raise ValueError(
                    "the URL holds a literal password; write it as an environment variable "
                    "reference instead, e.g. postgresql+psycopg://user:${PGPASSWORD}@host/db"
                )
        return v

    @field_validator("prompt_template")
    @classmethod
    def _template_has_slot(cls, v: str) -> str:
        if "{prompt}" not in v:
            raise ValueError("prompt_template must contain '{prompt}'")
        return v

    @model_validator(mode="after")
    def _shape(self) -> SourceConfig:
        if (self.query is None) == (self.table is None):
            raise ValueError("give exactly one of 'query' or 'table'")
        unknown = sorted(set(self.columns) - set(MAPPABLE_FIELDS))
        if unknown:
            raise ValueError(
                f"columns maps unknown task fields {unknown}; known: {list(MAPPABLE_FIELDS)}"
            )
        missing = [f for f in REQUIRED_FIELDS if f not in self.columns]
        if missing:
            raise ValueError(f"columns must map {missing}")
        if self.verifier is None and "verifier" not in self.columns:
            raise ValueError("give 'verifier' or map a 'verifier' column")
        return self

    def resolved_url(self, variables: Mapping[str, str] | None = None) -> str:
        """The URL with every ``${ENV_VAR}`` replaced (never stored): from ``variables`` first,
        then from the environment."""
        return resolve_env(self.url, what=f"source {self.name!r}: url", variables=variables)


def resolve_env(text: str, *, what: str = "url", variables: Mapping[str, str] | None = None) -> str:
    """``text`` with every ``${ENV_VAR}`` replaced from ``variables``, else the environment.

    ``variables`` lets a caller point sources somewhere (the demo store) without setting an
    environment variable for the whole process. Raises :class:`MissingEnvVarError` naming
    ``what`` and the variable that is set in neither.
    """
    given = variables or {}

    def sub(m: re.Match[str]) -> str:
        var = m.group(1)
        if var in given:
            return given[var]
        if var not in os.environ:
            raise MissingEnvVarError(
                f"{what} refers to ${{{var}}}, which is not set in the environment"
            )
        return os.environ[var]

    return _ENV_REF.sub(sub, text)


class SourcesFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sources: list[SourceConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> SourcesFile:
        names = [s.name for s in self.sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate source names {dup}")
        return self


def _mask_passwords(data: Any) -> Any:
    """``data`` with literal passwords in source URLs masked, to quote it in an error message:
    the message must point at the bad URL without repeating the secret."""
    if not isinstance(data, dict) or not isinstance(data.get("sources"), list):
        return data
    masked = []
    for src in data["sources"]:
        if isinstance(src, dict) and isinstance(src.get("url"), str):
            url = src["url"]
            for pattern in (_URL_PASSWORD, _QUERY_PASSWORD):
                m = pattern.search(url)
                if m and m.group("password"):
                    url = url[: m.start("password")] + "***" + url[m.end("password") :]
            src = {**src, "url": url}
        masked.append(src)
    return {**data, "sources": masked}


def _sources_error(path: Path, detail: str) -> SourceConfigError:
    return SourceConfigError(f"{path}: {detail}")


def load_sources(path: Path | str) -> list[SourceConfig]:
    """Read and validate a sources YAML file; errors name the file, the field and the value
    (passwords masked)."""
    path = Path(path)
    data = read_yaml_mapping(path, error=_sources_error)
    try:
        return list(SourcesFile.model_validate(data).sources)
    except ValidationError as exc:
        problems = validation_problems(exc, _mask_passwords(data))
        raise _sources_error(path, "invalid sources file\n  " + "\n  ".join(problems)) from None
