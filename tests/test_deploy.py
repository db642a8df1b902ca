"""deploy/: the container recipe and the systemd unit (docs/operations.md "Packaging").

No container runtime is assumed: the Dockerfile is checked as text, its healthcheck command is
run against a live node, and the unit goes through `systemd-analyze verify` when present."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from tests.api.helpers import BackgroundCluster
from univrs.config import load_config
from univrs.tools.ports import free_ports

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def _dockerfile() -> dict[str, list[str]]:
    """Instruction -> its arguments, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.setdefault(word.upper(), []).append(rest.strip())
    return out


def _unit() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (DEPLOY / "univrs.service").read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_the_shipped_config_is_valid() -> None:
    config = load_config(DEPLOY / "univrs.toml", {})
    assert str(config.data_dir).startswith("/var/lib/univrs/")
    # Beyond loopback it needs TLS; probes come without a client certificate.
    assert config.tls is not None and config.tls.client_auth == "optional"


def test_dockerfile() -> None:
    d = _dockerfile()
    assert re.fullmatch(r"python:3\.1[1-9]-slim", d["FROM"][0]), d["FROM"]
    user = d["USER"][-1].split(":")[0]
    assert user not in ("root", "0")
    assert json.loads(d["VOLUME"][0]) == ["/var/lib/univrs"]
    assert "/opt/univrs/healthcheck.py" in d["HEALTHCHECK"][0]
    assert "/readyz" in (DEPLOY / "healthcheck.py").read_text()
    assert json.loads(d["ENTRYPOINT"][0]) == ["univrs", "node", "start"]
    assert "/etc/univrs/univrs.toml" in json.loads(d["CMD"][0])
    for copy in d["COPY"]:
        *sources, _dest = copy.split()
        for source in sources:
            assert (ROOT / source).exists(), source


def _healthcheck(api: str, ca: pathlib.Path) -> subprocess.CompletedProcess[str]:
    cmd = json.loads(_dockerfile()["HEALTHCHECK"][0].split("CMD", 1)[1])
    assert cmd == ["python", "/opt/univrs/healthcheck.py"]
    assert any(
        "deploy/healthcheck.py /opt/univrs/healthcheck.py" in c for c in _dockerfile()["COPY"]
    )
    env = {**os.environ, "UNIVRS_HEALTH_ADDR": api, "UNIVRS_HEALTH_CA": str(ca)}
    return subprocess.run(
        [sys.executable, str(DEPLOY / "healthcheck.py")],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_the_healthcheck_passes_on_a_ready_node_and_fails_without_one(
    tmp_path: pathlib.Path,
) -> None:
    no_ca = tmp_path / "no-ca.crt"  # a plaintext node (the in-process test cluster)
    with BackgroundCluster(tmp_path / "c", size=1) as bg:
        ok = _healthcheck(bg.apis[0], no_ca)
        assert ok.returncode == 0, ok.stderr
    (port,) = free_ports(1)
    down = _healthcheck(f"127.0.0.1:{port}", no_ca)
    assert down.returncode == 1 and "not ready" in down.stderr


def test_systemd_unit() -> None:
    u = _unit()
    assert u["Restart"] == ["on-failure"]
    assert int(u["LimitNOFILE"][0]) >= 65536
    assert "--config" in u["ExecStart"][0].split()
    assert u["User"] != ["root"]
    for key, value in (
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("StateDirectory", "univrs"),
    ):
        assert u[key] == [value], key


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify(tmp_path: pathlib.Path) -> None:
    """The unit as installed, with ExecStart pointing at this venv's univrs."""
    univrs = pathlib.Path(sys.executable).parent / "univrs"
    if not univrs.exists():
        pytest.skip("the univrs script is not installed in this venv")
    text = (DEPLOY / "univrs.service").read_text()
    text = text.replace("/opt/univrs/bin/univrs", str(univrs))
    unit = tmp_path / "univrs.service"
    unit.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "univrs.service" not in result.stderr, result.stderr
