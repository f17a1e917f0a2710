"""The one way a YAML file becomes a validated pydantic model, with errors a person can act on.

Every configuration the product reads (trainer, pipeline, sources, data and promotion
policies, verifier specs, red-team batteries) goes through :func:`load_yaml_model`, so every
error has the same shape: the file, then one line per problem naming the field (dotted, list
indices in brackets) and the value as written in the file. Each package keeps its own error
class (callers catch ``PolicyError``, ``SpecError``, ...) by passing ``error=``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

#: Builds the caller's exception from the file and what is wrong with it.
ErrorFactory = Callable[[Path, str], Exception]


class YamlConfigError(ValueError):
    """A YAML configuration that cannot be used; the message names file, field and value."""


def _default_error(path: Path, detail: str) -> Exception:
    return YamlConfigError(f"{path}: {detail}")


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("sources", 0, "url")`` -> ``sources[0].url`` (``<root>`` for the top level)."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def show_value(value: Any, limit: int = 80) -> str:
    """A value as it would read in the file, shortened so hostile input cannot flood a log."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _lookup(data: Any, loc: tuple[Any, ...]) -> tuple[bool, Any]:
    node = data
    for part in loc:
        in_mapping = isinstance(node, Mapping) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if not (in_mapping or in_list):
            return False, None
        node = node[part]
    return True, node


def _known_fields(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str]:
    """The fields of the (nested) model at ``loc``; empty when it is not a model."""
    node: Any = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(node, type) and issubclass(node, BaseModel)):
            continue  # a list index or a mapping key: the item type is what counts below
        field = node.model_fields.get(part)
        if field is None:
            return []
        node = field.annotation
        for arg in getattr(node, "__args__", ()) or ():  # list[M], M | None, dict[str, M]
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                node = arg
    if isinstance(node, type) and issubclass(node, BaseModel):
        return list(node.model_fields)
    return []


def validation_problems(
    exc: ValidationError,
    data: Any = None,
    from_overrides: set[str] | frozenset[str] = frozenset(),
    model: type[BaseModel] | None = None,
) -> list[str]:
    """One line per error: ``field = value: message``, the value as written in ``data``; an
    unknown field lists the known ones when ``model`` is given."""
    lines = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        where = field_path(loc)
        if err.get("type") == "missing":
            lines.append(f"{where}: required field is missing")
            continue
        found, value = _lookup(data, loc)
        if not found:
            value = err.get("input")
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            known = _known_fields(model, loc[:-1])
            msg = "unknown field" + (f" (known: {', '.join(known)})" if known else "")
        origin = " (from an override)" if where in from_overrides else ""
        lines.append(f"{where} = {show_value(value)}: {msg}{origin}")
    return lines


def read_yaml_mapping(path: Path | str, *, error: ErrorFactory = _default_error) -> dict[str, Any]:
    """The top-level mapping of a YAML file (an empty file is an empty mapping)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(path, "no such file") from None
    except yaml.YAMLError as exc:
        raise error(path, f"not valid YAML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(path, f"unreadable: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(path, f"the top level must be a mapping, got {type(data).__name__}")
    return data


def parse_overrides(
    overrides: Mapping[str, Any] | list[str] | None, *, error: Callable[[str], Exception]
) -> dict[str, Any]:
    """``["a.b=1", "c=[x]"]`` (values parsed as YAML) or a mapping -> ``{dotted key: value}``."""
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    parsed: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise error(f"override {item!r} must look like section.field=value")
        key, value = item.split("=", 1)
        parsed[key.strip()] = yaml.safe_load(value)
    return parsed


def set_dotted(
    data: dict[str, Any], dotted: str, value: Any, *, error: Callable[[str], Exception]
) -> None:
    """``set_dotted(d, "a.b", 1)`` -> ``d["a"]["b"] = 1``, making sections as needed."""
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise error(f"override {dotted!r}: {part!r} is not a section")
    node[parts[-1]] = value


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> ``{"section.field": value}`` (leaves kept as they are)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def validate_model(
    model: type[M],
    data: Any,
    path: Path | str,
    *,
    what: str = "configuration",
    error: ErrorFactory = _default_error,
    from_overrides: set[str] | frozenset[str] = frozenset(),
) -> M:
    """``model.model_validate(data)``, a failure raised as ``error`` naming every bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc, data, from_overrides, model)
        raise error(Path(path), f"invalid {what}\n  " + "\n  ".join(problems)) from None


def load_yaml_model(
    path: Path | str,
    model: type[M],
    *,
    what: str = "configuration",
    error: ErrorFactory = _default_error,
    overrides: Mapping[str, Any] | list[str] | None = None,
    base: Mapping[str, Any] | None = None,
) -> M:
    """Read ``path`` (or start from ``base`` when ``path`` is None), apply dotted overrides, and
    validate it as ``model``; every error names the file, the field and the value at fault."""
    where = Path(path) if path is not None else Path("<defaults>")
    data = read_yaml_mapping(where, error=error) if path is not None else dict(base or {})

    def override_error(msg: str) -> Exception:
        return error(where, msg)

    parsed = parse_overrides(overrides, error=override_error)
    for key, value in parsed.items():
        set_dotted(data, key, value, error=override_error)
    return validate_model(model, data, where, what=what, error=error, from_overrides=set(parsed))
