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

Credentials never live in the file: a password in the URL (or a password-like query parameter)
must be a whole ``${ENV_VAR}`` reference, found by SQLAlchemy's own URL parser, so a password
holding ``/ @ :`` or percent-escapes cannot slip past as "the host". The URL is interpolated only
when an engine is created (``resolved_url``), so a loaded config -- and anything that prints it
-- holds no secret.

Interpolation works on the parsed URL, field by field (``URL.create``), never on its text: a
value from the environment is taken as it is -- ``p@ss/w:rd#?%`` needs no escaping -- and is
escaped by SQLAlchemy when the URL is rendered. References may stand in the username, the
password (whole), the host, the database (any part of it: ``sqlite:///${DIR}/kb.sqlite``) and
query values; the port must be written as a number (it is no secret, and SQLAlchemy parses it
as one). A URL that is one ``${VAR}`` as a whole (``${DATABASE_URL}``) takes the variable's
value as a complete, already-escaped URL.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import URL, make_url

from rlsd.configs.loading import read_yaml_mapping, validation_problems
from rlsd.uris import embedded_password, is_env_ref, is_secret_param, mask_uri

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_URL_SHAPE = "dialect+driver://user:${PASSWORD}@host:port/database"

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


def literal_credential(url: str) -> str | None:
    """What is wrong with a source URL (as written in a sources file) that holds a literal
    credential or cannot be parsed, in words that quote none of it; None when it is fine.

    Fine means: every password -- the URL's own, a password-like query parameter, a ``PWD=``
    inside one -- is exactly one ``${ENV_VAR}`` reference, or the whole URL is one.
    """
    if is_env_ref(url):
        return None
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - ArgumentError, or ValueError (whose text quotes the port)
        return (
            f"is not a SQLAlchemy URL ({_URL_SHAPE}, the port a number), nor one ${{VAR}} "
            "holding a whole URL"
        )
    if parsed.password is not None:
        # The parser stops the password at the first '@': "user:p@ss@host" gives password "p"
        # and host "ss@host". An '@' past the user part is a password's remnant (or an
        # unescaped '@' anyway): refused rather than guessed at.
        if "@" in (parsed.host or "") or (parsed.host and "@" in (parsed.database or "")):
            return "holds a literal password (an unescaped '@' follows the password)"
        # written exactly as ":${VAR}@": a percent-escaped reference is text, not a reference
        if parsed.password and not (is_env_ref(parsed.password) and f":{parsed.password}@" in url):
            return "holds a literal password"
    for key, values in parsed.query.items():
        for value in (values,) if isinstance(values, str) else values:
            if is_secret_param(key) and value and not is_env_ref(value):
                return f"holds a literal password in its query parameter {key!r}"
            if embedded_password(value):
                return f"holds a literal password inside its query parameter {key!r}"
    return None


class SourceConfig(BaseModel):
    """One internal store that feeds tasks and their privileged context."""

    # pydantic's own message would quote the rejected URL, password and all
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

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
    def _no_literal_password(cls, v: str, info: ValidationInfo) -> str:
        problem = literal_credential(v)
        if problem is not None:
            # "name" is declared (so validated) before "url"; absent when it was invalid
            name = info.data.get("name")
            who = f"source {name!r}: " if name else ""
            raise ValueError(
                f"{who}the URL {problem}; write the whole password as an environment "
                "variable reference instead, e.g. postgresql+psycopg://user:${PGPASSWORD}@host/db"
                " (the URL is shown with any password masked)"
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
        then from the environment; each value escaped where the URL needs it."""
        url = resolve_url(self.url, what=f"source {self.name!r}: url", variables=variables)
        return url.render_as_string(hide_password=False)


def _lookup(what: str, variables: Mapping[str, str] | None) -> Callable[[str, str], str]:
    given = variables or {}

    def value(var: str, field: str) -> str:
        if var in given:
            return given[var]
        if var not in os.environ:
            raise MissingEnvVarError(
                f"{what} refers to ${{{var}}} (in its {field}), which is not set in the environment"
            )
        return os.environ[var]

    return value


def resolve_url(
    template: str, *, what: str = "url", variables: Mapping[str, str] | None = None
) -> URL:
    """The SQLAlchemy URL of ``template`` with every ``${ENV_VAR}`` filled from ``variables``,
    else the environment, field by field (see the module docstring for where references may
    stand).

    Raises :class:`MissingEnvVarError` naming ``what``, the field and the variable set in
    neither; :class:`SourceConfigError` when the template (or a whole-URL variable) is no URL.
    No message quotes a value: any of them may be the password.
    """
    value = _lookup(what, variables)
    if is_env_ref(template):
        var = template[2:-1]
        try:
            return make_url(value(var, "whole URL"))
        except MissingEnvVarError:
            raise
        except Exception:  # noqa: BLE001 - ArgumentError / ValueError; their text may quote it
            raise SourceConfigError(
                f"{what}: ${{{var}}} does not hold a SQLAlchemy URL ({_URL_SHAPE}, escaped as "
                "a URL); its value is not shown"
            ) from None
    try:
        parsed = make_url(template)
    except Exception:  # noqa: BLE001 - as above
        raise SourceConfigError(
            f"{what}: not a SQLAlchemy URL ({_URL_SHAPE}, the port a number)"
        ) from None

    def fill(text: str | None, field: str) -> str | None:
        if text is None:
            return None
        return _ENV_REF.sub(lambda m: value(m.group(1), field), text)

    query: dict[str, str | tuple[str, ...]] = {}
    for key, values in parsed.query.items():
        where = f"query parameter {key!r}"
        if isinstance(values, str):
            query[key] = _ENV_REF.sub(lambda m, w=where: value(m.group(1), w), values)
        else:
            query[key] = tuple(
                _ENV_REF.sub(lambda m, w=where: value(m.group(1), w), v) for v in values
            )
    url = URL.create(
        parsed.drivername,
        username=fill(parsed.username, "username"),
        password=fill(parsed.password, "password"),
        host=fill(parsed.host, "host"),
        port=parsed.port,
        database=fill(parsed.database, "database"),
        query=query,
    )
    _check_round_trip(url, parsed, what)
    return url


def _check_round_trip(url: URL, template: URL, what: str) -> None:
    """Callers hand the rendered string to ``create_engine``, which parses it again: a value
    that does not survive that (a host holding '/', say) would connect somewhere else."""
    try:
        again: URL | None = make_url(url.render_as_string(hide_password=False))
    except Exception:  # noqa: BLE001 - the text may quote the value
        again = None
    fields = ("username", "password", "host", "port", "database", "query")
    filled = [f for f in fields if getattr(template, f) != getattr(url, f)]
    bad = filled if again is None else [f for f in filled if getattr(again, f) != getattr(url, f)]
    if bad:
        raise SourceConfigError(
            f"{what}: the value from the environment in its {', '.join(bad)} cannot be "
            "written in a URL (it would be read back differently); values not shown"
        )


def resolve_env(text: str, *, what: str = "url", variables: Mapping[str, str] | None = None) -> str:
    """``text`` with every ``${ENV_VAR}`` replaced from ``variables``, else the environment.

    Plain text substitution, for text that is not a URL: a value lands unescaped, so a URL
    goes through :func:`resolve_url` instead.

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
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

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
            src = {**src, "url": _shown_url(src["url"])}
        masked.append(src)
    return {**data, "sources": masked}


def _shown_url(url: str) -> str:
    """A source URL as an error message may quote it: masked, and not at all when SQLAlchemy
    cannot parse it (then nothing says where a password would be: a secret written as the
    port, say)."""
    if is_env_ref(url):
        return url
    try:
        make_url(url)
    except Exception:  # noqa: BLE001 - ArgumentError / ValueError
        scheme = url.partition("://")[0]
        return f"{scheme}://... (not shown)" if re.fullmatch(r"[\w+]+", scheme) else "(not shown)"
    return mask_uri(url)


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
