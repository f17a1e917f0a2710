"""The ``rlsd`` command line."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from rlsd.verify import cli as verifiers_cli

app = typer.Typer(
    help="Retrain small models with RLSD (verifier direction + self-teacher token credit) beside "
    "a GRPO control arm.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
model_app = typer.Typer(
    help="The policy model: prepare the bundled SmolLM2, make a tiny test model."
)
config_app = typer.Typer(help="Configuration files: print the resolved configuration.")
keys_app = typer.Typer(help="The key pair that signs the promotion gate's records.")
policy_app = typer.Typer(help="Promotion policies: the digest a deployment pins.")
app.add_typer(model_app, name="model")
app.add_typer(
    verifiers_cli.app,
    name="verifiers",
    help="Verifiers: build images, run the self-tested inventory, run one verifier on a batch.",
)
app.add_typer(config_app, name="config")
app.add_typer(keys_app, name="keys")
app.add_typer(policy_app, name="policy")
console = Console()

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config; default: the embedded defaults.")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a field: --set rollout.group_size=4 (repeatable)."),
]

DatasetOpt = Annotated[
    str | None,
    typer.Option(help="Train / evaluate on a snapshot from `rlsd ingest` (task.dataset)."),
]
DomainOpt = Annotated[
    list[str] | None,
    typer.Option(help="Only this domain of the snapshot (repeatable; task.domains)."),
]


def _dataset_overrides(dataset: str | None, domains: list[str] | None) -> dict[str, str | None]:
    import json

    return {
        "task.dataset": dataset,
        "task.domains": json.dumps(domains) if domains else None,
    }


def _setup_logging(verbose: bool = False) -> None:
    from rich.logging import RichHandler

    rank = int(os.environ.get("RANK", "0"))
    level = logging.DEBUG if verbose else (logging.INFO if rank == 0 else logging.WARNING)
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=console)])
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _load(config: Path | None, sets: list[str] | None, extra: dict | None = None):
    from rlsd.configs import DEFAULT_CONFIG
    from rlsd.train.config import ConfigError, load_config

    overrides = list(sets or [])
    for k, v in (extra or {}).items():
        if v is not None:
            overrides.append(f"{k}={v}")
    try:
        return load_config(config or DEFAULT_CONFIG, overrides)
    except ConfigError as exc:
        console.print(f"[red]config error:[/red] {exc}")
        raise typer.Exit(2) from None


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f} %"


@app.command()
def train(
    config: ConfigOpt = None,
    algo: Annotated[
        str | None,
        typer.Option(help="A registered method: grpo, rlsd, opsd, ... (overrides algo.name)."),
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps (run.steps).")] = None,
    output_dir: Annotated[str | None, typer.Option(help="Run folder (run.output_dir).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (run.seed).")] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue from the run folder's latest checkpoint.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Discard the run folder's checkpoints.")] = False,
    dataset: DatasetOpt = None,
    domain: DomainOpt = None,
    set_: SetOpt = None,
    verbose: bool = False,
) -> None:
    """Train one arm (RLSD, GRPO or OPSD) and print held-out accuracy before and after."""
    _setup_logging(verbose)
    from rlsd.context.snapshot import SnapshotError
    from rlsd.train.data import DatasetError
    from rlsd.train.trainer import ResumeError
    from rlsd.train.trainer import train as run_train

    cfg = _load(
        config,
        set_,
        {
            "algo.name": algo,
            "run.steps": steps,
            "run.output_dir": output_dir,
            "run.seed": seed,
            **_dataset_overrides(dataset, domain),
        },  # fmt: skip
    )
    try:
        result = run_train(cfg, resume=resume, overwrite=overwrite)
    except (ResumeError, DatasetError, SnapshotError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if int(os.environ.get("RANK", "0")) != 0:
        return
    before = result.eval_before.accuracy if result.eval_before else None
    after = result.eval_after.accuracy if result.eval_after else None
    console.print(
        f"[bold]{cfg.algo.name}[/bold]: held-out accuracy {_pct(before)} → {_pct(after)} "
        f"({result.eval_after.num_tasks if result.eval_after else 0} tasks, greedy); "
        f"run folder {result.output_dir}"
    )


@app.command()
def demo(
    config: ConfigOpt = None,
    steps: Annotated[int, typer.Option(help="Optimizer steps per arm.")] = 8,
    output_dir: Annotated[str, typer.Option(help="Folder of the demo's runs.")] = "runs/demo",
    algos: Annotated[str, typer.Option(help="Comma-separated arms.")] = "rlsd,grpo",
    set_: SetOpt = None,
) -> None:
    """RLSD beside the GRPO control on the embedded defaults; prints a comparison table."""
    _setup_logging()
    from rlsd.train.arms import run_comparison

    cfg = _load(config, set_, {"run.steps": steps})
    arms = [a.strip() for a in algos.split(",") if a.strip()]
    summaries = run_comparison(cfg, arms, output_dir)
    table = Table(
        title=f"RLSD vs GRPO control — {cfg.model.name_or_path}, {steps} steps, same data and seed"
    )
    for col in (
        "arm",
        "held-out acc. before",
        "after",
        "Δ",
        "train reward (first → last 3)",
        "entropy (last)",
        "s/step",
    ):
        table.add_column(col, justify="right" if col != "arm" else "left")
    for s in summaries:
        delta = (
            f"{100 * (s.accuracy_after - s.accuracy_before):+.1f} pt"
            if s.accuracy_after is not None and s.accuracy_before is not None
            else "—"
        )
        table.add_row(
            s.algo,
            _pct(s.accuracy_before),
            _pct(s.accuracy_after),
            delta,
            f"{s.train_reward_first:.2f} → {s.train_reward_last:.2f}",
            f"{s.entropy_last:.3f}",
            f"{s.seconds_per_step:.1f}",
        )
    console.print(table)
    console.print(f"runs and metrics under {output_dir}/ (comparison.json, <arm>/metrics.jsonl)")


@app.command("eval")
def eval_(
    config: ConfigOpt = None,
    model: Annotated[
        str | None, typer.Option(help="Model to evaluate (model.name_or_path).")
    ] = None,
    num_tasks: Annotated[int | None, typer.Option(help="Held-out tasks (eval.num_tasks).")] = None,
    dataset: DatasetOpt = None,
    domain: DomainOpt = None,
    set_: SetOpt = None,
) -> None:
    """Greedy accuracy of a model on the held-out split, with the training verifiers."""
    _setup_logging()
    from rlsd.models import load_policy
    from rlsd.train.data import eval_subset, load_run_tasks
    from rlsd.train.evaluate import evaluate

    cfg = _load(
        config,
        set_,
        {
            "model.name_or_path": model,
            "eval.num_tasks": num_tasks,
            **_dataset_overrides(dataset, domain),
        },  # fmt: skip
    )
    from rlsd.train.prompts import PromptEncoder

    policy = load_policy(cfg.model)
    run_tasks = load_run_tasks(cfg.task)
    res = evaluate(
        policy.model,
        policy.tokenizer,
        eval_subset(run_tasks.heldout, cfg.eval.num_tasks),
        cfg.eval.max_new_tokens,
        cfg.rollout.max_batch_sequences,
        cfg.rollout.sampling.stop_regex,
        prompts=PromptEncoder(policy, run_tasks.image_stores),
    )
    console.print(
        f"{cfg.model.name_or_path}: held-out accuracy {_pct(res.accuracy)} "
        f"({res.num_correct}/{res.num_tasks}), mean response {res.mean_response_tokens:.1f} tokens"
    )


@app.command("demo-store")
def demo_store(
    path: Annotated[Path, typer.Argument(help="SQLite file to create.")] = Path(
        "runs/demo-store.sqlite"
    ),
) -> None:
    """Create the embedded demo store: an enterprise-shaped SQLite database of tasks and
    privileged context (arithmetic, GSM8K test split, HumanEval), every record with its source."""
    _setup_logging()
    from rlsd.demo import build_demo_store

    summary = build_demo_store(path)
    table = Table(title=f"demo store {path}")
    table.add_column("what")
    table.add_column("count", justify="right")
    for key, value in _flat_counts(summary):
        table.add_row(key, str(value))
    console.print(table)


@app.command()
def ingest(
    sources: Annotated[
        Path | None,
        typer.Option(help="Sources YAML; default: the demo sources over `rlsd demo-store`."),
    ] = None,
    store: Annotated[Path, typer.Option(help="Demo store read by the demo sources.")] = Path(
        "runs/demo-store.sqlite"
    ),
    policy: Annotated[
        Path | None,
        typer.Option(help="Data policy; default: policies/privileged_context.yaml."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Snapshots folder.")] = Path("runs/snapshots"),
    source: Annotated[
        list[str] | None, typer.Option(help="Ingest only this source (repeatable).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Snapshot name (default: the file's).")] = None,
) -> None:
    """Read the declared sources, validate (Great Expectations), quarantine bad rows, redact
    PII from privileged text under the data policy, and write a versioned snapshot."""
    _setup_logging()
    from rlsd.context import SourceConfigError
    from rlsd.context.ingest import ingest as run_ingest
    from rlsd.context.policy import SourceNotAllowedError
    from rlsd.context.reader import IngestError
    from rlsd.context.report import sources_table
    from rlsd.context.snapshot import SnapshotError
    from rlsd.demo import DemoStoreMissingError, demo_sources

    variables: dict[str, str] = {}
    if sources is None:
        try:
            demo = demo_sources(store, build=False)
        except DemoStoreMissingError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
        sources, variables = demo.path, demo.variables
    done: list[str] = []
    try:
        with _spinner("ingesting") as status:

            def on_source(name_: str, v) -> None:
                done.append(name_)
                status.update(f"ingesting: {', '.join(done)} done")

            result = run_ingest(
                sources, policy_path=policy, out_root=out, only=source, name=name,
                on_source=on_source, variables=variables,
            )  # fmt: skip
    except (IngestError, SourceConfigError, SourceNotAllowedError, SnapshotError,
            KeyError) as exc:  # fmt: skip
        console.print(f"ingestion stopped: {exc}", style="red", markup=False)
        raise typer.Exit(1) from None
    m = result.snapshot.manifest
    cols = ["source", "domain", "rows", "tasks", "quarantined", "train", "heldout", "redacted"]
    table = sources_table(m, cols, title=f"snapshot {result.path.name}").rich()
    console.print(table)
    console.print(
        f"digest   {m.digest}\npath     {result.path}"
        f"{_INGEST_STATUS.get(result.status, '')}\n"
        + (
            f"evidence {result.evidence}  ({result.quarantined} rows quarantined this time)\n"
            if result.evidence != result.path
            else ""
        )
        + f"train    rlsd train --dataset {result.path}",
        markup=False,
    )


_INGEST_STATUS = {
    "unchanged": "  (unchanged: same content and quarantine as before)",
    "tasks unchanged, quarantine changed": "  (tasks unchanged, quarantine changed: this "
    "ingestion's evidence is recorded beside it)",
}


@app.command()
def retrain(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Pipeline YAML (default: embedded).")
    ] = None,
    sources: Annotated[str | None, typer.Option(help="Sources YAML (default: demo).")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps per arm.")] = None,
    auto_approve: Annotated[
        bool,
        typer.Option(help="Approve without a human (demo / unattended tests only; recorded)."),
    ] = False,
    approval_timeout: Annotated[
        int | None, typer.Option(help="Seconds to wait for a human approval.")
    ] = None,
) -> None:
    """Run the retraining pipeline: verifier inventory, ingestion, RLSD and GRPO arms,
    evaluation, promotion gate, approval, alias move; everything logged to MLflow."""
    _setup_logging()
    _quiet_services()
    import getpass

    from flows.retrain import retrain as retrain_flow
    from rlsd.context.reader import IngestError
    from rlsd.gate.evidence import PromotionRefused
    from rlsd.gate.signing import SigningError

    try:
        # the flow refuses these too; here first, so the refusal is one line, not a failed run
        from flows.gate import preflight
        from rlsd.pipeline.config import load_pipeline_config

        preflight(load_pipeline_config(config), auto_approve)
        out = retrain_flow(
            config=str(config) if config else None,
            sources=sources,
            steps=steps,
            auto_approve=auto_approve,
            approval_timeout_s=approval_timeout,
            triggered_by=getpass.getuser(),
        )
    except (PromotionRefused, SigningError, IngestError) as exc:
        what = "ingestion stopped" if isinstance(exc, IngestError) else "refused"
        console.print(f"{what}: {exc}", style="red", markup=False)
        raise typer.Exit(2) from None
    table = Table(title="held-out accuracy (greedy, same tasks and verifiers)")
    table.add_column("model")
    table.add_column("accuracy", justify="right")
    for name, acc in out["comparison"].items():
        table.add_row(name + (" (candidate)" if name == out["winner"] else ""), _pct(acc))
    console.print(table)
    console.print(out["decision_markdown"], markup=False)
    console.print(
        f"[bold]outcome:[/bold] {out['outcome']} — {out['registered_model']} version "
        f"{out['version']}"
        + (
            f" (approval: {out['approval']['mode']}, {out['approval']['approver']})"
            if out["approval"]
            else ""
        )  # fmt: skip
    )
    console.print(retrain_pointers(out, os.environ.get("PREFECT_API_URL")), markup=False)


def retrain_pointers(out: dict, prefect_api_url: str | None) -> str:
    """Where a retrain run can be looked at (MLflow, Prefect, lineage), as `rlsd retrain`
    prints it: every URI masked, since a backend store or API URL may carry a password."""
    from rlsd.uris import mask_uri

    tracking = mask_uri(out["tracking_uri"])
    api = mask_uri(prefect_api_url) if prefect_api_url else None
    return (
        "MLflow UI:  "
        + (tracking if tracking.startswith("http") else f"mlflow ui --backend-store-uri {tracking}")
        + f"  (run {out['mlflow_run_id']})\n"
        + "Prefect UI: "
        + (
            api.removesuffix("/api") + f"/runs/flow-run/{out['flow_run_id']}"
            if api
            else "this run used Prefect's temporary local API; `prefect server start` and "
            "PREFECT_API_URL=http://127.0.0.1:4200/api keep runs for the UI"
        )  # fmt: skip
        + f"\nLineage:    rlsd lineage {out['registered_model']}@{out['version']}"
    )


def _quiet_services() -> None:
    for k, v in {
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    }.items():
        os.environ.setdefault(k, v)


def _resume_with(flow_run_id: str, decision: str, approver: str, reason: str) -> None:
    _quiet_services()
    if not os.environ.get("PREFECT_API_URL"):
        console.print(
            "[red]PREFECT_API_URL is not set[/red]: approvals go to the Prefect server the "
            "paused run lives on (e.g. http://127.0.0.1:4200/api)"
        )
        raise typer.Exit(2)
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(flow_run_id)
        except Exception as exc:  # noqa: BLE001 - the server's message says what is wrong
            console.print(f"[red]no flow run {flow_run_id}:[/red] {exc}")
            raise typer.Exit(2) from None
    if run.state is None or not run.state.is_paused():
        console.print(
            f"[red]flow run {flow_run_id} is {run.state.name if run.state else 'unknown'}[/red],"
            " not paused for approval"
        )
        raise typer.Exit(2)
    refused = _approver_refused(run.parameters or {}, approver)
    if refused:
        console.print(f"refused: {refused}", style="red", markup=False)
        raise typer.Exit(2)
    import time

    # The run turns PAUSED a moment before the flow stores its input schema; a resume in that
    # window is refused ("schema not found"), so retry briefly. Invalid input is refused by the
    # server against the schema: say why and leave the run paused.
    deadline = time.monotonic() + 30
    while True:
        try:
            resume_flow_run(
                flow_run_id,
                run_input={"decision": decision, "approver": approver, "reason": reason},
            )
            break
        except Exception as exc:  # noqa: BLE001 - each failure gets one clean line
            if "schema not found" in str(exc).lower() and time.monotonic() < deadline:
                time.sleep(1)
                continue
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(flow_run_id).state
            if state is not None and not state.is_paused():
                # another decision reached the run first (a concurrent `rlsd approve`)
                console.print(
                    f"flow run {flow_run_id} is {state.name} now, no longer waiting: another "
                    f"decision was given first; this {decision} was not applied",
                    style="red", markup=False,
                )  # fmt: skip
            else:
                console.print(f"the server refused the {decision}: {exc}", style="red",
                              markup=False)  # fmt: skip
            raise typer.Exit(2) from None
    console.print(f"{decision} sent to flow run {flow_run_id} ({run.name}) as {approver}")


def _approver_refused(parameters: dict, approver: str) -> str | None:
    """Why the run's promotion policy would refuse ``approver`` (None: it names them). Checked
    here for a clear message; the flow checks again, as the client can be bypassed."""
    from rlsd.gate.evidence import load_promotion_policy
    from rlsd.pipeline.config import load_pipeline_config

    try:
        cfg = load_pipeline_config(parameters.get("config"))
        policy, path = load_promotion_policy(cfg.promotion_policy, cfg.promotion_overrides)
    except Exception:  # noqa: BLE001 - the flow itself decides; this is only an early message
        return None
    if policy.approval.allows_approver(approver.strip()):
        return None
    allowed = ", ".join(policy.approval.approvers) or "nobody"
    return f"{approver!r} may not decide this gate ({path}: approval.approvers: {allowed})"


@app.command()
def approve(
    flow_run_id: Annotated[str, typer.Argument(help="The paused retrain flow run.")],
    approver: Annotated[str, typer.Option(help="Who approves.")],
    reason: Annotated[str, typer.Option(help="Why.")],
) -> None:
    """Approve a retrain run waiting at the promotion gate (moves the champion alias)."""
    _resume_with(flow_run_id, "approve", approver, reason)


@app.command()
def reject(
    flow_run_id: Annotated[str, typer.Argument(help="The paused retrain flow run.")],
    approver: Annotated[str, typer.Option(help="Who rejects.")],
    reason: Annotated[str, typer.Option(help="Why.")],
) -> None:
    """Reject a retrain run waiting at the promotion gate (the alias stays)."""
    _resume_with(flow_run_id, "reject", approver, reason)


@app.command()
def lineage(
    ref: Annotated[
        str, typer.Argument(help="<model>@<alias or version>, e.g. rlsd-policy@champion")
    ],
    out: Annotated[
        Path | None, typer.Option(help="Also write Markdown here (and .html beside it).")
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option(
            help="The trusted promotion policy (a local file) whose public key the records must "
            "be signed with; default: the one the embedded pipeline config uses."
        ),
    ] = None,
) -> None:
    """Print a model version's lineage, read from MLflow alone, and verify it: every digest
    recomputed, every signature checked. Exits 0 only when VERIFIED (1: TAMPERED or UNSIGNED)."""
    _quiet_services()
    from rlsd.tracking.lineage import (
        LineageError,
        collect_lineage,
        load_trust,
        render_html,
        render_markdown,
    )
    from rlsd.tracking.runs import configure

    configure()
    try:
        lin = collect_lineage(ref, load_trust(policy))
    except LineageError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    text = render_markdown(lin)
    from rich.markdown import Markdown

    console.print(Markdown(text))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        out.with_suffix(".html").write_text(render_html(text, f"lineage {ref}"), encoding="utf-8")
        console.print(f"written: {out} and {out.with_suffix('.html')}")
    v = lin.verification
    assert v is not None
    if v.status == "VERIFIED":
        console.print(f"[green]VERIFIED[/green] {lin.name} version {lin.version}")
        return
    console.print(f"[red]{v.status}[/red] {lin.name} version {lin.version}:")
    for c in v.failing:
        console.print(f"  - {c.item}: {c.detail}", markup=False)
    raise typer.Exit(1)


@app.command()
def study(
    config: Annotated[Path, typer.Option("--config", "-c", help="The study design YAML.")],
    out: Annotated[Path | None, typer.Option(help="Study folder; default: studies/<name>.")] = None,
    max_runs: Annotated[
        int | None, typer.Option(help="Stop after this many runs (resume later).")
    ] = None,
    arm: Annotated[list[str] | None, typer.Option(help="Run only this arm (repeatable).")] = None,
    report_only: Annotated[
        bool, typer.Option(help="Only (re)write report.md and the plots from finished runs.")
    ] = False,
    mlflow: Annotated[bool, typer.Option(help="Log runs and the report to MLflow.")] = True,
) -> None:
    """Run a pre-registered study: every arm x paired seed as a resumable training run, then
    the report (paired differences with intervals, steps-to-threshold, curves) and plots."""
    _setup_logging()
    _quiet_services()
    from rlsd.study.config import StudyError, design_digest, load_design
    from rlsd.study.report import write_report
    from rlsd.study.runner import cpu_seconds, run_study

    try:
        design = load_design(config)
    except StudyError as exc:
        console.print(str(exc), style="red", markup=False)
        raise typer.Exit(2) from None
    study_dir = out or Path("studies") / design.name
    digest = design_digest(design)
    sinks_for = None
    if mlflow:
        from functools import partial

        from rlsd.tracking.records import study_run

        def sinks_for(key):  # noqa: ANN001, ANN202 - a RunKey -> its MLflow run's sinks
            return partial(study_run, "rlsd-studies", design.name, digest,
                           design.model_dump_json(indent=1), key.arm, key.seed)()  # fmt: skip

    try:
        if not report_only:
            run_study(design, study_dir, only=set(arm) if arm else None, max_runs=max_runs,
                      sinks_for=sinks_for)  # fmt: skip
        report = write_report(design, study_dir)
    except StudyError as exc:
        console.print(str(exc), style="red", markup=False)
        raise typer.Exit(2) from None
    if mlflow:
        from rlsd.tracking.records import record_study_report

        record_study_report("rlsd-studies", design.name, digest, study_dir)
    console.print(report, markup=False)
    console.print(f"study CPU time so far: {cpu_seconds(study_dir, design) / 3600:.2f} h "
                  f"(finished runs); report: {study_dir / 'report.md'}", markup=False)  # fmt: skip


@keys_app.command("init")
def keys_init(
    directory: Annotated[Path, typer.Option("--dir", help="Where the key pair is written.")] = Path(
        "runs/keys"
    ),
    force: Annotated[bool, typer.Option(help="Replace an existing key pair.")] = False,
    if_missing: Annotated[
        bool, typer.Option(help="Do nothing (and succeed) when a key exists already.")
    ] = False,
) -> None:
    """Create the Ed25519 key pair that signs gate decisions and approvals (embedded default:
    runs/keys/rlsd-signing.pem, named by the demo policy's signing.public_key)."""
    from rlsd.gate.signing import (
        PRIVATE_KEY_NAME,
        SigningError,
        generate_key_pair,
        inline_public_key,
        key_id,
        read_private_key,
    )

    existing = directory / PRIVATE_KEY_NAME
    if if_missing and existing.exists():
        key = read_private_key(existing).public_key()
        console.print(f"signing key exists: {existing} (key {key_id(key)})")
        return
    try:
        private, public = generate_key_pair(directory, force=force)
    except SigningError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    key = read_private_key(private).public_key()
    console.print(
        f"private key: {private} (mode 600; keep it out of MLflow and git)\n"
        f"public key:  {public} (key {key_id(key)})\n"
        f"a policy can name it as a file (signing.public_key: {public}) or inline:\n"
        f"  {inline_public_key(key)}",
        markup=False,
    )


@policy_app.command("digest")
def policy_digest_cmd(
    path: Annotated[Path, typer.Argument(help="Promotion policy YAML.")] = Path(
        "policies/promotion.yaml"
    ),
) -> None:
    """Print the sha256 a deployment pins the promotion policy to (promotion_policy_sha256)."""
    from rlsd.gate.policy import PolicyError, load_policy, policy_digest

    try:
        print(policy_digest(load_policy(path)))
    except PolicyError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _spinner(text: str):
    return console.status(text)


def _flat_counts(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _flat_counts(v, f"{prefix}{k}.")
        elif isinstance(v, int | float | str):
            out.append((f"{prefix}{k}", v))
    return out


@model_app.command("prepare")
def model_prepare(
    name: Annotated[
        str, typer.Argument(help="Model to load (default: the bundled SmolLM2).")
    ] = "smollm2-135m-instruct",
) -> None:
    """Dequantise and cache the bundled model (once); print its source, digest and path."""
    _setup_logging()
    from rlsd.models import load_policy

    p = load_policy(name)
    console.print(f"source {p.source}\nsha256 {p.digest}\npath   {p.path}")


@model_app.command("tiny")
def model_tiny(
    out_dir: Annotated[Path, typer.Argument(help="Where to write the tiny model.")],
    hidden_size: int = 64,
    num_layers: int = 2,
) -> None:
    """Write a tiny random model with the bundled tokenizer (for smoke tests)."""
    from rlsd.models.tiny import make_tiny_model

    console.print(str(make_tiny_model(out_dir, hidden_size=hidden_size, num_layers=num_layers)))


@config_app.command("show")
def config_show(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the fully resolved configuration (defaults + file + overrides) as YAML."""
    from rlsd.train.config import dump_config

    console.print(dump_config(_load(config, set_)), markup=False, highlight=False)


if __name__ == "__main__":
    app()
