"""The pipeline's signing key from a Prefect Secret block (production), through a real Prefect
API: the temporary local server, with its own PREFECT_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

CODE = """
import sys
from pathlib import Path
from prefect.blocks.system import Secret
from flows.gate import signing_key
from rlsd.gate.signing import key_id, read_private_key
from rlsd.pipeline.config import PipelineConfig

pem = Path(sys.argv[1]).read_text()
Secret(value=pem).save("rlsd-signing-key", overwrite=True)
cfg = PipelineConfig(signing_key_secret="rlsd-signing-key", signing_key_file="/nonexistent")
assert key_id(signing_key(cfg).public_key()) == key_id(read_private_key(sys.argv[1]).public_key())
try:
    signing_key(PipelineConfig(signing_key_secret="no-such-block"))
except ValueError as exc:
    print("MISSING", type(exc).__name__)
print("OK")
"""


def test_the_signing_key_is_read_from_a_prefect_secret_block(tmp_path: Path) -> None:
    from rlsd.gate.signing import generate_key_pair

    private, _ = generate_key_pair(tmp_path / "keys")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.run(
        [sys.executable, "-c", CODE, str(private)], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "OK" in proc.stdout and "MISSING ValueError" in proc.stdout
