"""``rlsd verifiers``: build images, take the inventory, show it, run one verifier on JSON lines.

Mounted in ``rlsd.cli`` as ``app.add_typer(verify_cli.app, name="verifiers")``; also runnable as
``python -m rlsd.verify.cli``.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    help="Drop-in verifiers (verifiers/<name>/verifier.yaml): build their images, self-test them "
    "into an inventory, run one on a batch of JSON lines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
# Tables stay readable when piped (rich would otherwise fold them to 80 columns).
out_console = Console(width=shutil.get_terminal_size((160, 24)).columns)

RootOpt = Annotated[
    Path, typer.Option("--root", help="The folder holding one folder per verifier.")
]
BackendOpt = Annotated[
    str,
    typer.Option("--backend", "-b", help="docker | local | auto (Docker when an engine answers)."),
]
RequireDockerOpt = Annotated[
    bool,
    typer.Option(
        "--require-docker",
        help="Policy: never fall back to the local sandbox (also RLSD_REQUIRE_DOCKER=1).",
    ),
]
InventoryOpt = Annotated[Path, typer.Option("--inventory", "-o", help="Inventory JSON file.")]


def _fail(msg: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]error:[/red] {msg}", soft_wrap=True, highlight=False)
    return typer.Exit(code)


@app.command()
def build(
    root: RootOpt = Path("verifiers"),
    base_tag: Annotated[str | None, typer.Option(help="Base image tag to build on.")] = None,
    force_base: Annotated[bool, typer.Option(help="Rebuild the base image.")] = False,
    force: Annotated[bool, typer.Option(help="Rebuild every spec image.")] = False,
    skip_base: Annotated[bool, typer.Option(help="Do not (re)build the base image.")] = False,
    pull: Annotated[bool, typer.Option(help="Pull image.ref images that are missing.")] = False,
) -> None:
    """Build the base image (debootstrap + docker import, once) and every spec's image."""
    from rich.table import Table

    from rlsd.verify.engine import docker_available
    from rlsd.verify.images import BASE_IMAGE, ImageError, build_base, build_images
    from rlsd.verify.spec import SpecError, discover_specs

    reason = docker_available()
    if reason is not None:
        raise _fail(f"no Docker engine answers: {reason} (infra/ci/start-services.sh starts one)")
    tag = base_tag or BASE_IMAGE
    if not skip_base:
        console.print(f"base image {tag} (infra/images/build-base.sh; ~2 minutes the first time)")
        try:
            build_base(force=force_base, tag=tag)
        except ImageError as exc:
            raise _fail(str(exc), 1) from None
    found = discover_specs(root)
    specs = [(f, s) for f, s in found if not isinstance(s, SpecError)]
    built = build_images(specs, tag, force=force, pull=pull)
    table = Table(title=f"verifier images (base {tag})")
    for col in ("name", "status", "image", "image id", "reason"):
        table.add_column(col, overflow="fold")
    for folder, err in found:
        if isinstance(err, SpecError):
            table.add_row(folder.name, "[red]invalid[/]", "—", "—", str(err))
    for b in built:
        colour = "red" if b.status == "invalid" else "green"
        table.add_row(
            b.name,
            f"[{colour}]{b.status}[/]",
            b.tag or "—",
            (b.image_id or "—").removeprefix("sha256:")[:12],
            b.reason[-600:],
        )
    out_console.print(table)
    bad = sum(b.status == "invalid" for b in built) + (len(found) - len(specs))
    if bad:
        raise typer.Exit(1)


@app.command()
def inventory(
    root: RootOpt = Path("verifiers"),
    backend: BackendOpt = "auto",
    require_docker: RequireDockerOpt = False,
    out: InventoryOpt = Path("runs/verifiers/inventory.json"),
    strict: Annotated[bool, typer.Option(help="Exit 1 unless every verifier is ready.")] = False,
) -> None:
    """Validate, build/check and self-test every verifier; print the table, write the JSON."""
    from rlsd.verify.inventory import run_inventory
    from rlsd.verify.sandbox import SandboxError

    try:
        inv = run_inventory(root, backend, require_docker, out=out)
    except SandboxError as exc:
        raise _fail(str(exc)) from None
    out_console.print(inv.table())
    c = inv.counts()
    out_console.print(
        f"{c['ready']} ready, {c['quarantined']} quarantined, {c['invalid']} invalid; "
        f"inventory written to {out}"
    )
    if strict and (c["quarantined"] or c["invalid"]):
        raise typer.Exit(1)


@app.command("list")
def list_(
    path: InventoryOpt = Path("runs/verifiers/inventory.json"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON as is.")] = False,
) -> None:
    """Show the last inventory."""
    from rlsd.verify.inventory import Inventory

    if not path.is_file():
        raise _fail(f"no inventory at {path}: run `rlsd verifiers inventory` first")
    inv = Inventory.load(path)
    if as_json:
        out_console.print_json(inv.model_dump_json())
        return
    out_console.print(inv.table())
    c = inv.counts()
    out_console.print(
        f"{c['ready']} ready, {c['quarantined']} quarantined, {c['invalid']} invalid "
        f"(taken {inv.created}, backend {inv.sandbox})"
    )


@app.command()
def redteam(
    name: Annotated[str, typer.Argument(help="Verifier name (its folder under --root).")],
    root: RootOpt = Path("verifiers"),
    backend: BackendOpt = "auto",
    require_docker: RequireDockerOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """Run a verifier's red-team battery in the sandbox and print a table (exit 1 on a breach).

    The battery: its own self-tests marked as hacks, the battery of its kind
    (rlsd/verify/batteries/<kind>.yaml) and the generic protocol hacks, in one batch with honest
    items between them.
    """
    from rich.table import Table

    from rlsd.verify.backends import make_sandbox
    from rlsd.verify.redteam import BatteryError, run_redteam
    from rlsd.verify.sandbox import SandboxError

    folder, spec = _load(root, name)
    try:
        with make_sandbox(backend, require_docker=require_docker, prestart=0) as sandbox:
            console.print(f"red team of {name} ({spec.kind or 'no kind'}) in {sandbox.describe()}")
            record = run_redteam(spec, folder.resolve(), sandbox)
    except (SandboxError, BatteryError) as exc:
        raise _fail(str(exc)) from None
    if as_json:
        out_console.print_json(record.model_dump_json())
    else:
        table = Table(title=f"red team of {name}: {record.summary()} ({record.duration_s:.1f} s)")
        for col in ("item", "role", "class", "expected", "got", "ok", "detail"):
            table.add_column(col, overflow="fold")
        for o in record.outcomes:
            got = "pass" if o.passed else "fail"
            table.add_row(
                o.id,
                o.role,
                o.hack or "—",
                o.expect,
                got if o.accepted else f"{got} (sandbox)",
                "[green]ok[/]"
                if o.ok
                else "[red]BREACH[/]"
                if o.role == "hack"
                else "[red]WRONG[/]",
                o.detail[:160],
            )
        out_console.print(table)
        out_console.print(
            f"{record.size} hacks in {len(record.classes)} classes, {record.controls} honest "
            f"items between them: {record.summary()}"
        )
    if not record.held:
        raise typer.Exit(1)


def _load(root: Path, name: str):
    from rlsd.verify.spec import SpecError, load_spec

    folder = root / name
    if not folder.is_dir():
        known = (
            sorted(p.name for p in root.iterdir() if (p / "verifier.yaml").is_file())
            if root.is_dir()
            else []
        )
        raise _fail(f"no verifier {name!r} in {root} (known: {', '.join(known) or 'none'})")
    try:
        return folder, load_spec(folder)
    except SpecError as exc:
        raise _fail(str(exc)) from None


@app.command()
def run(
    name: Annotated[str, typer.Argument(help="Verifier name (its folder under --root).")],
    root: RootOpt = Path("verifiers"),
    backend: BackendOpt = "auto",
    require_docker: RequireDockerOpt = False,
    batch_size: Annotated[int, typer.Option(help="Items per sandbox run.")] = 256,
) -> None:
    """Run one verifier on the JSON lines on stdin; print one JSON result per item.

    Each input line is a protocol item: {"id": ..., "response": ..., "reference": ..., ...};
    an item without an id gets its line number. Each output line is
    {"id", "passed", "score", "detail", "backend", "duration_s"}.
    """
    from rlsd.verify.backends import make_sandbox
    from rlsd.verify.sandbox import SandboxError

    folder, spec = _load(root, name)
    items = []
    for n, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise _fail(f"stdin line {n} is not JSON: {exc}") from None
        if not isinstance(item, dict):
            raise _fail(f"stdin line {n} is not a JSON object")
        item.setdefault("id", str(n))
        items.append(item)
    try:
        with make_sandbox(backend, require_docker=require_docker, prestart=0) as sandbox:
            size = max(1, batch_size)
            batches = [items[i : i + size] for i in range(0, len(items), size)]
            results = sandbox.run_many(spec, folder, batches)
    except (SandboxError, ValueError) as exc:
        raise _fail(str(exc)) from None
    for batch in results:
        for r in batch:
            sys.stdout.write(json.dumps(r.to_json()) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    app()
