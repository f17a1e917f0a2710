"""Sandboxes for the tests: Docker (skipped only when no engine answers) and the local bubblewrap jail.

CI sets ``RLSD_TEST_REQUIRE_DOCKER=1`` so that a missing engine fails the Docker tests instead of
skipping them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rlsd.verify.sandbox import Sandbox, SandboxUnavailable
from tests.verify_sandbox import folders

BACKENDS = [pytest.param("docker", marks=pytest.mark.docker), "local-bwrap"]


@pytest.fixture(scope="session")
def verifier_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("verifiers")
    root.chmod(0o755)
    folders.echo_eq(root)
    folders.run_code(root)
    folders.write_folder(root, "scripted", folders.SCRIPTED, folders.spec("scripted"))
    return root


@pytest.fixture(scope="session")
def docker_sandbox():
    from rlsd.verify.docker_sandbox import DockerSandbox
    from rlsd.verify.engine import docker_available, docker_client
    from rlsd.verify.images import BASE_IMAGE, build_base, image_id

    reason = docker_available()
    if reason is not None:
        if os.environ.get("RLSD_TEST_REQUIRE_DOCKER", "") not in ("", "0"):
            pytest.fail(f"RLSD_TEST_REQUIRE_DOCKER is set but no Docker engine answers: {reason}")
        pytest.skip(f"no Docker engine answers: {reason}")
    if image_id(docker_client(), BASE_IMAGE) is None:
        build_base(tag=BASE_IMAGE)  # CI builds it first (infra/ci/start-services.sh)
    sandbox = DockerSandbox(pool_size=2)
    yield sandbox
    sandbox.close()


_local: dict[str, Sandbox] = {}


def local_sandbox(mode: str) -> Sandbox:
    from rlsd.verify.local_sandbox import LocalSandbox

    if mode not in _local:
        try:
            _local[mode] = LocalSandbox(mode=mode)
        except SandboxUnavailable as exc:
            pytest.skip(f"local {mode} sandbox unavailable here: {exc}")
    return _local[mode]


@pytest.fixture(params=BACKENDS)
def sandbox(request) -> Sandbox:
    if request.param == "docker":
        return request.getfixturevalue("docker_sandbox")
    return local_sandbox(request.param.removeprefix("local-"))
