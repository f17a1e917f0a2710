from __future__ import annotations

from pathlib import Path

import pytest

from rlsd.context import MissingEnvVarError, SourceConfig, SourceConfigError, load_sources

BASE = {
    "name": "kb",
    "url": "sqlite:///kb.sqlite",
    "table": "kb",
    "columns": {"id": "ref", "prompt": "ask", "answer": "gold", "privileged_context": "solution"},
    "domain": "arithmetic",
    "verifier": "math-answer",
}


def _write(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(
        "sources:\n"
        "  - name: kb\n"
        f"    url: '{url}'\n"
        "    table: kb\n"
        "    columns: {id: ref, prompt: ask, answer: gold, privileged_context: solution}\n"
        "    domain: arithmetic\n"
        "    verifier: math-answer\n"
    )
    return path


def test_literal_password_is_refused_naming_file_and_field(tmp_path: Path) -> None:
    path = _write(tmp_path, "postgresql+psycopg://app:hunter2@db.internal:5432/kb")
    with pytest.raises(SourceConfigError) as exc:
        load_sources(path)
    msg = str(exc.value)
    assert str(path) in msg and "sources[0].url" in msg and "literal password" in msg
    assert "hunter2" not in msg


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:pa${X}ss@db/kb",
        "mysql+pymysql://app@db/kb?password=hunter2",
    ],
)
def test_partial_or_query_string_password_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="literal password"):
        SourceConfig.model_validate({**BASE, "url": url})


def test_env_var_credentials_are_interpolated_only_on_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, "postgresql+psycopg://app:${KB_PASSWORD}@db.internal:5432/kb")
    (cfg,) = load_sources(path)
    monkeypatch.setenv("KB_PASSWORD", "s3cret")
    assert cfg.resolved_url() == "postgresql+psycopg://app:s3cret@db.internal:5432/kb"
    assert "s3cret" not in repr(cfg) and "s3cret" not in cfg.model_dump_json()
    monkeypatch.delenv("KB_PASSWORD")
    with pytest.raises(MissingEnvVarError, match="KB_PASSWORD"):
        cfg.resolved_url()


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="exactly one of 'query' or 'table'"):
        SourceConfig.model_validate({**BASE, "query": "SELECT 1"})
    with pytest.raises(ValueError, match="must map"):
        SourceConfig.model_validate({**BASE, "columns": {"id": "ref", "prompt": "ask"}})
    with pytest.raises(ValueError, match="unknown task fields"):
        SourceConfig.model_validate({**BASE, "columns": {**BASE["columns"], "bogus": "x"}})
    with pytest.raises(ValueError, match="verifier"):
        SourceConfig.model_validate({**BASE, "verifier": None})
