"""The Dockerfile (no Docker engine here): hadolint-clean; its facts agree with app and chart."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from gateway.__main__ import DEFAULT_PORT
from tests.deploy.test_chart import EVERYTHING, container, render

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instruction(name: str) -> list[str]:
    return [
        line.split(None, 1)[1] for line in DOCKERFILE.splitlines() if line.startswith(name + " ")
    ]


def test_hadolint_finds_nothing() -> None:
    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    done = subprocess.run(
        [binary, "--failure-threshold", "style", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == ""


def test_port_user_and_entrypoint_match_the_app_and_chart() -> None:
    assert instruction("EXPOSE") == [str(DEFAULT_PORT)]
    assert json.loads(instruction("ENTRYPOINT")[0]) == ["gmi-gateway", "serve"]
    cmd = json.loads(instruction("CMD")[0])
    assert cmd[cmd.index("--port") + 1] == str(DEFAULT_PORT)
    uid, gid = instruction("USER")[0].split(":")
    pod = render(EVERYTHING)["Deployment"]["spec"]["template"]["spec"]["securityContext"]
    assert int(uid) == pod["runAsUser"]
    assert int(gid) == pod["runAsGroup"]
    assert container(render(EVERYTHING))["ports"][0]["containerPort"] == DEFAULT_PORT


def test_runtime_python_is_the_one_ci_tests_with() -> None:
    base = re.search(r"PYTHON_IMAGE=python:(\d+)\.(\d+)\.\d+-slim", DOCKERFILE)
    assert base is not None, "the base image must be a pinned python:X.Y.Z-slim"
    assert (int(base.group(1)), int(base.group(2))) == sys.version_info[:2]


def test_runtime_stage_has_no_build_tools_or_caches() -> None:
    runtime = DOCKERFILE.split("AS runtime", 1)[1]
    assert "pip install" not in runtime
    assert "apt-get" not in runtime
    assert "COPY --from=build /opt/venv /opt/venv" in runtime
    assert "PIP_NO_CACHE_DIR=1" in DOCKERFILE
