"""Static checks of the production infrastructure files: prefect.yaml, infra/docker-compose.yml,
infra/.env.example, infra/work-pools/ and the two Dockerfiles in infra/images/.

Fast and offline: nothing is started, built or pulled. What these files do for real (a Prefect
server, `prefect deploy --all`, work pools, flow runs through a process worker) is described in
infra/README.md; here we check what can break them silently: a renamed flow or pool, an invalid
cron, a service without a healthcheck, a ${VAR} missing from .env.example, a base job template
Prefect would refuse.
"""

from __future__ import annotations

import ast
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PREFECT_YAML = REPO / "prefect.yaml"
INFRA = REPO / "infra"
COMPOSE_FILE = INFRA / "docker-compose.yml"
ENV_EXAMPLE = INFRA / ".env.example"
POOLS_DIR = INFRA / "work-pools"
FLOWS_DIR = REPO / "flows"
WORKER_DOCKERFILE = INFRA / "images" / "worker.Dockerfile"

POOL = "rlsd-process"
RLSD_HOME_IN_IMAGE = "/opt/rlsd"

# deployment name -> (entrypoint file, function, flow name, schedule, flow parameters)
DEPLOYMENTS = {
    "weekly-retrain": (
        "flows/retrain.py",
        "retrain",
        "retrain",
        "0 3 * * 1",
        {
            "config",
            "sources",
            "steps",
            "auto_approve",
            "approval_timeout_s",
            "registered_model",
            "policy_sha256",
        },
    ),
    "nightly-verifier-inventory": (
        "flows/verifier_inventory.py",
        "verifier_inventory_flow",
        "verifier-inventory",
        "0 2 * * *",
        {"root", "require_docker"},
    ),
}

SERVICES = {"postgres", "prefect-server", "minio", "minio-init", "mlflow", "worker"}
# service -> {dependency: condition}
DEPENDS_ON = {
    "prefect-server": {"postgres": "service_healthy"},
    "minio-init": {"minio": "service_healthy"},
    "mlflow": {"postgres": "service_healthy", "minio-init": "service_completed_successfully"},
    "worker": {"prefect-server": "service_healthy", "mlflow": "service_healthy"},
}

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}, $VAR; `$$` is a
# literal `$` (masked before matching).
_COMPOSE_VAR = re.compile(
    r"\$(?:\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
_PLACEHOLDER = re.compile(r"{{\s*([\w.\-\[\]$]+)\s*}}")


# -- helpers ---------------------------------------------------------------------------------


def _load_yaml(path: Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def prefect_project() -> dict[str, Any]:
    return _load_yaml(PREFECT_YAML)


@pytest.fixture(scope="module")
def deployments(prefect_project) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in prefect_project["deployments"]}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for number, line in enumerate(ENV_EXAMPLE.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert "=" in line, f".env.example line {number} is not KEY=VALUE: {line!r}"
        key, value = line.split("=", 1)
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key), f"bad variable name {key!r}"
        assert key not in values, f".env.example lists {key} twice"
        values[key] = value
    return values


def _strings(node: Any) -> list[str]:
    """Every string value in a loaded YAML document (what compose interpolates)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return []


def _compose_variables(compose_doc: dict[str, Any]) -> dict[str, list[tuple[str | None, str]]]:
    """Variable name -> every (operator, argument) it is used with in the compose file."""
    found: dict[str, list[tuple[str | None, str]]] = {}
    for text in _strings(compose_doc):
        for m in _COMPOSE_VAR.finditer(text.replace("$$", "\0\0")):
            name = m.group("name") or m.group("bare")
            found.setdefault(name, []).append((m.group("op"), m.group("arg") or ""))
    return found


def _placeholders(node: Any) -> set[str]:
    return {p for s in _strings(node) for p in _PLACEHOLDER.findall(s)}


def _pool_templates() -> dict[str, dict[str, Any]]:
    return {
        "process": json.loads((POOLS_DIR / "process.json").read_text()),
        "docker": json.loads((POOLS_DIR / "docker.json").read_text()),
        "kubernetes": _load_yaml(POOLS_DIR / "kubernetes.yaml"),
    }


def _prefect_default_template(pool_type: str) -> dict[str, Any] | None:
    """What `prefect work-pool get-default-base-job-template --type TYPE` prints, offline: the
    worker class for process, Prefect's bundled collection metadata for docker / kubernetes
    (whose worker packages are not installed)."""
    if pool_type == "process":
        from prefect.workers.process import ProcessWorker

        return ProcessWorker.get_default_base_job_template()
    import prefect

    bundled = (
        Path(prefect.__file__).parent
        / "server/api/collections_data/views/aggregate-worker-metadata.json"
    )
    if not bundled.exists():
        return None
    metadata = json.loads(bundled.read_text())
    for collection in metadata.values():
        for worker in collection.values():
            if worker.get("type") == pool_type:
                return worker.get("default_base_job_configuration")
    return None


# -- prefect.yaml ----------------------------------------------------------------------------


def test_prefect_yaml_has_both_deployments_on_the_process_pool(deployments):
    assert set(deployments) == set(DEPLOYMENTS)
    for name, (path, function, _flow, _cron, params) in DEPLOYMENTS.items():
        d = deployments[name]
        assert d["entrypoint"] == f"{path}:{function}", name
        assert d["entrypoint"].startswith("flows/"), name
        assert d["work_pool"]["name"] == POOL, name
        assert d["tags"] and "rlsd" in d["tags"], name
        assert set(d["parameters"]) <= params, (name, set(d["parameters"]) - params)
        assert d.get("enforce_parameter_schema") is True, name


def test_production_defaults_need_a_human_and_docker(deployments):
    retrain = deployments["weekly-retrain"]["parameters"]
    assert retrain["auto_approve"] is False
    # left to the run config / promotion policy: a value here would override them on every run
    assert not {"steps", "approval_timeout_s", "registered_model"} & set(retrain)
    assert deployments["nightly-verifier-inventory"]["parameters"]["require_docker"] is True


def test_the_retrain_deployment_pins_the_production_promotion_policy(deployments):
    from rlsd.gate import load_policy, policy_digest

    pinned = deployments["weekly-retrain"]["parameters"]["policy_sha256"]
    assert pinned == policy_digest(load_policy(REPO / "policies" / "promotion.yaml"))
    assert load_policy(REPO / "policies" / "promotion.yaml").approval.required


def test_cron_schedules_are_valid_and_fire_when_expected(deployments):
    from cronsim import CronSim
    from prefect.client.schemas.schedules import CronSchedule

    utc = ZoneInfo("UTC")
    start = datetime(2026, 1, 1, tzinfo=utc)  # a Thursday
    expected_next = {
        "weekly-retrain": datetime(2026, 1, 5, 3, 0, tzinfo=utc),  # Monday 03:00
        "nightly-verifier-inventory": datetime(2026, 1, 1, 2, 0, tzinfo=utc),
    }
    for name, (*_, cron, _params) in DEPLOYMENTS.items():
        schedules = deployments[name]["schedules"]
        assert len(schedules) == 1, name
        schedule = schedules[0]
        assert schedule["cron"] == cron, name
        assert schedule["timezone"] == "UTC", name
        assert schedule.get("active", True) is True, name
        CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])  # Prefect accepts it
        assert next(CronSim(schedule["cron"], start)) == expected_next[name], name


def test_pull_step_changes_into_rlsd_home(prefect_project):
    from prefect.utilities.templating import PlaceholderType, find_placeholders

    assert prefect_project.get("build") is None
    assert prefect_project.get("push") is None
    (step,) = prefect_project["pull"]
    (directory,) = step["prefect.deployments.steps.set_working_directory"].values()
    (placeholder,) = find_placeholders(directory)
    assert placeholder.type is PlaceholderType.ENV_VAR
    assert placeholder.name == "$RLSD_HOME"


def test_entrypoints_are_flows_with_matching_parameters(deployments):
    if not FLOWS_DIR.is_dir():
        pytest.skip("flows/ does not exist yet (written separately); entrypoints not checked")
    for name, (path, function, flow_name, _cron, params) in DEPLOYMENTS.items():
        source = REPO / path
        assert source.is_file(), f"{name}: entrypoint file {path} is missing"
        tree = ast.parse(source.read_text(), filename=str(source))
        defs = [
            n
            for n in tree.body
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == function
        ]
        assert defs, f"{name}: {path} defines no top-level function {function}"
        fn = defs[0]
        names = {
            kw.value.value
            for dec in fn.decorator_list
            if isinstance(dec, ast.Call)
            for kw in dec.keywords
            if kw.arg == "name" and isinstance(kw.value, ast.Constant)
        }
        assert flow_name in names, f"{name}: {function} is not @flow(name={flow_name!r})"
        args = {a.arg for a in fn.args.args + fn.args.kwonlyargs}
        assert params <= args, f"{name}: {function} lacks parameters {params - args}"
        assert set(deployments[name]["parameters"]) <= args


def test_work_pool_names_are_consistent(deployments, compose):
    pools = {d["work_pool"]["name"] for d in deployments.values()}
    assert pools == {POOL}
    assert (POOLS_DIR / "process.json").is_file()
    worker_script = " ".join(_strings(compose["services"]["worker"]["command"]))
    assert f"--pool {POOL}" in worker_script
    assert f"work-pool create {POOL} --type process" in worker_script
    assert "--base-job-template infra/work-pools/process.json" in worker_script
    readme = (INFRA / "README.md").read_text()
    assert f"prefect work-pool create {POOL} --type process" in readme
    assert "--base-job-template infra/work-pools/process.json" in readme


# -- docker-compose.yml ----------------------------------------------------------------------


def test_compose_services_healthchecks_and_dependencies(compose):
    services = compose["services"]
    assert set(services) == SERVICES
    for name, svc in services.items():
        one_shot = svc.get("restart") == "no"
        if one_shot:
            continue
        health = svc.get("healthcheck")
        assert health and health.get("test"), f"{name} has no healthcheck"
        assert not health.get("disable"), name
        assert svc.get("restart") == "unless-stopped", name
    for name, expected in DEPENDS_ON.items():
        depends = services[name]["depends_on"]
        assert {dep: spec["condition"] for dep, spec in depends.items()} == expected, name
    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if spec["condition"] == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits for {dep}'s health"
            if spec["condition"] == "service_completed_successfully":
                assert services[dep].get("restart") == "no", f"{dep} must be one-shot"
        assert svc.get("networks") == ["rlsd"], name


def test_compose_postgres_creates_two_databases_with_separate_roles(compose):
    pg = compose["services"]["postgres"]
    assert re.search(r"postgres:16\b", pg["image"])
    (mount,) = pg["configs"]
    assert mount["target"].startswith("/docker-entrypoint-initdb.d/")
    script = compose["configs"][mount["source"]]["content"]
    for db in ("prefect", "mlflow"):
        assert f"CREATE ROLE {db} LOGIN PASSWORD" in script
        assert f"CREATE DATABASE {db} OWNER {db};" in script
        assert f"REVOKE ALL ON DATABASE {db} FROM PUBLIC;" in script
    assert "SUPERUSER" not in script
    assert any("pgdata" in v or "/var/lib/postgresql/data" in v for v in pg["volumes"])


def test_compose_prefect_server_and_mlflow(compose):
    services = compose["services"]
    prefect = services["prefect-server"]
    assert "prefecthq/prefect:3-python3.11" in prefect["image"]
    assert prefect["command"][:3] == ["prefect", "server", "start"]
    assert "0.0.0.0" in prefect["command"]
    env = prefect["environment"]
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://prefect:")
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"].endswith("@postgres:5432/prefect")

    mlflow = services["mlflow"]
    assert (INFRA / mlflow["build"]["context"] / mlflow["build"]["dockerfile"]).is_file()
    assert "--serve-artifacts" in mlflow["command"]
    assert "--artifacts-destination=s3://mlflow/" in mlflow["command"]
    menv = mlflow["environment"]
    assert menv["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://mlflow:")
    assert menv["MLFLOW_BACKEND_STORE_URI"].endswith("@postgres:5432/mlflow")
    assert menv["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    # the worker reaches the server as mlflow:5000, a Host header MLflow refuses by default
    assert "mlflow:5000" in menv["MLFLOW_SERVER_ALLOWED_HOSTS"]
    init_script = services["minio-init"]["command"][0]
    assert "mc mb --ignore-existing local/mlflow" in init_script


def test_compose_worker(compose):
    worker = compose["services"]["worker"]
    build = worker["build"]
    assert (INFRA / build["context"] / build["dockerfile"]).resolve() == WORKER_DOCKERFILE
    assert "/var/run/docker.sock:/var/run/docker.sock" in worker["volumes"]
    env = worker["environment"]
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["RLSD_HOME"] == RLSD_HOME_IN_IMAGE
    assert env["RLSD_REQUIRE_DOCKER"] == "1"
    text = COMPOSE_FILE.read_text()
    assert "SECURITY" in text and "docker.sock" in text  # the warning stays next to the mount


def test_every_compose_variable_is_in_env_example(compose, env_example):
    used = _compose_variables(compose)
    assert used, "no ${VAR} found: the compose file should take its secrets from the environment"
    missing = sorted(set(used) - set(env_example))
    assert not missing, f"used in docker-compose.yml, not listed in infra/.env.example: {missing}"
    unused = sorted(set(env_example) - set(used))
    assert not unused, f"listed in infra/.env.example, not used by docker-compose.yml: {unused}"
    for name, uses in used.items():
        ops = {op for op, _ in uses}
        if ":?" in ops:
            assert ops == {":?"}, f"{name} is required in one place and optional in another"
            assert env_example[name] == "", f".env.example must not hold a value for {name}"
        else:
            assert ops == {":-"}, f"{name}: use ${{{name}:?...}} or ${{{name}:-default}}"
            defaults = {arg for _, arg in uses}
            assert len(defaults) == 1, f"{name} has different defaults: {defaults}"
            assert env_example[name] == defaults.pop(), f".env.example's {name} != the default"


def test_secrets_are_required_variables(compose):
    used = _compose_variables(compose)
    secrets = [n for n in used if re.search(r"PASSWORD|SECRET|AUTH|ACCESS_KEY", n)]
    assert len(secrets) >= 7
    for name in secrets:
        if name == "RLSD_CONTEXT_DB_PASSWORD":  # the example credential of an optional source
            continue
        assert {op for op, _ in used[name]} == {":?"}, f"{name} must be ${{{name}:?...}}"
    # no literal credentials anywhere in the file (every URL password is a variable)
    for text in _strings(compose):
        for m in re.finditer(r"://[^/:@\s]+:([^@\s]+)@", text):
            assert m.group(1).startswith("${"), f"literal password in {text!r}"


# -- work pools ------------------------------------------------------------------------------


@pytest.mark.parametrize("pool_type", ["process", "docker", "kubernetes"])
def test_base_job_templates_match_prefects_structure(pool_type):
    ours = _pool_templates()[pool_type]
    assert set(ours) == {"job_configuration", "variables"}
    variables = ours["variables"]
    assert variables.get("type", "object") == "object"
    properties = variables["properties"]
    # what the server checks on `work-pool create`: every placeholder is a declared variable
    undeclared = {p for p in _placeholders(ours["job_configuration"]) if p not in properties}
    assert not undeclared, f"{pool_type}: undeclared job variables {undeclared}"
    # no templating outside job_configuration (descriptions are shown, never rendered)
    assert not _placeholders(variables), f"{pool_type}: placeholder in a variable's text"

    default = _prefect_default_template(pool_type)
    if default is None:
        pytest.skip(f"Prefect ships no default {pool_type} template here")
    assert set(ours["job_configuration"]) == set(default["job_configuration"])
    assert set(default["variables"]["properties"]) <= set(properties)
    for key, spec in default["variables"]["properties"].items():
        ours_spec = properties[key]
        for field in ("type", "anyOf", "enum", "allOf"):
            assert ours_spec.get(field) == spec.get(field), (pool_type, key, field)


@pytest.mark.parametrize("pool_type", ["process", "docker", "kubernetes"])
def test_base_job_template_defaults_are_valid(pool_type):
    import jsonschema

    variables = _pool_templates()[pool_type]["variables"]
    definitions = variables.get("definitions", {})
    for key, spec in variables["properties"].items():
        if "default" not in spec:
            continue
        schema = {k: v for k, v in spec.items() if k != "default"}
        schema["definitions"] = definitions
        try:
            jsonschema.validate(spec["default"], schema)
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{pool_type}: default of {key!r} is invalid: {exc.message}")
    env = variables["properties"]["env"].get("default", {})
    assert env.get("RLSD_REQUIRE_DOCKER") == "1", pool_type
    leaked = [k for k in env if re.search(r"PASSWORD|SECRET|TOKEN|AUTH|ACCESS_KEY", k)]
    assert not leaked, f"{pool_type}: secrets in a base job template: {leaked}"


def test_docker_pool_matches_the_compose_stack(compose):
    props = _pool_templates()["docker"]["variables"]["properties"]
    worker = compose["services"]["worker"]
    assert props["image"]["default"] == worker["image"].split(":-", 1)[1].rstrip("}")
    assert props["image_pull_policy"]["default"] == "IfNotPresent"
    assert props["networks"]["default"] == [compose["networks"]["rlsd"]["name"]]
    volumes = props["volumes"]["default"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in volumes
    assert "SECURITY" in props["volumes"]["description"]
    named = {v.split(":", 1)[0] for v in volumes if not v.startswith("/")}
    compose_names = {spec["name"] for spec in compose["volumes"].values() if spec}
    assert named <= compose_names, named - compose_names
    assert props["env"]["default"]["RLSD_HOME"] == RLSD_HOME_IN_IMAGE


def test_kubernetes_pool_runs_a_resourced_job_with_secrets_from_a_secret():
    template = _pool_templates()["kubernetes"]
    manifest = template["job_configuration"]["job_manifest"]
    assert manifest["kind"] == "Job" and manifest["apiVersion"] == "batch/v1"
    pod = manifest["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "{{ service_account_name }}"
    (container,) = pod["containers"]
    assert set(container["resources"]) == {"requests", "limits"}
    assert {"secretRef": {"name": "{{ secret_name }}"}} in container["envFrom"]
    props = template["variables"]["properties"]
    assert props["namespace"]["default"] == "rlsd"
    assert props["service_account_name"]["default"]
    assert props["secret_name"]["default"]
    for key in ("cpu_request", "cpu_limit", "memory_request", "memory_limit"):
        assert props[key]["default"], key
    assert props["env"]["default"]["RLSD_HOME"] == RLSD_HOME_IN_IMAGE
    mounts = {m["name"] for m in container["volumeMounts"]}
    assert mounts <= {v["name"] for v in pod["volumes"]}


# -- worker image ----------------------------------------------------------------------------


def test_worker_dockerfile_copies_what_exists_and_sets_rlsd_home():
    text = WORKER_DOCKERFILE.read_text()
    assert f"RLSD_HOME={RLSD_HOME_IN_IMAGE}" in text
    assert f"WORKDIR {RLSD_HOME_IN_IMAGE}" in text
    assert f"--pool {POOL}" in text or f'"{POOL}"' in text
    sources = []
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources += line.split()[1:-1]
    assert "infra/work-pools/" in sources and "prefect.yaml" in sources
    for source in sources:
        if source.rstrip("/") == "flows" and not FLOWS_DIR.is_dir():
            continue  # written separately; see test_entrypoints_are_flows_with_matching_parameters
        assert (REPO / source).exists(), f"worker.Dockerfile copies {source}, which is missing"
