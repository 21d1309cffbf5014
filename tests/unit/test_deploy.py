"""deploy/ checked without a cluster or a Docker engine: the Kubernetes manifests against
the Kubernetes 1.37 schemas (kubernetes-validate, strict: unknown fields fail), the compose
file against the compose spec (check-jsonschema), and both against the code: every
variable they set is a setting, every command they run parses, the ports they probe are
the ports the processes serve."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from instructrec.cli import build_parser
from instructrec.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_VERSION = "1.37.0"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))
COMPOSE = DEPLOY / "compose.yaml"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _setting_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        names.add(f"INSTRUCTREC_{name.upper()}")
        alias = field.validation_alias
        names.update(getattr(alias, "choices", []) or ([alias] if isinstance(alias, str) else []))
    return names


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    return list(pod.get("containers", []))


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_every_manifest_is_valid_kubernetes(path: Path) -> None:
    docs = _docs(path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_rejects_a_broken_manifest() -> None:
    doc = _docs(DEPLOY / "k8s" / "pool-gpu.yaml")[0]
    doc["spec"]["replica"] = doc["spec"].pop("replicas")  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def _check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    tool = Path(sys.executable).with_name("check-jsonschema")
    return subprocess.run(
        [str(tool), "--builtin-schema", "vendor.compose-spec", str(path)], capture_output=True, text=True, timeout=60
    )


def test_the_compose_file_follows_the_compose_spec(tmp_path: Path) -> None:
    ok = _check_compose(COMPOSE)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("stop_grace_period: 30s", "stop_grace_period: [30]", 1))
    assert _check_compose(broken).returncode != 0


def test_deploy_files_use_real_settings_commands_and_ports() -> None:
    known = _setting_names()
    s = Settings()
    ports = {"stream-worker": s.web_port, "pool": s.pool_health_port}
    parser = build_parser()
    env_keys: set[str] = set()
    commands: list[list[str]] = []
    probed: dict[str, set[int]] = {}
    for path in MANIFESTS:
        for doc in _docs(path):
            if doc["kind"] in ("ConfigMap", "Secret"):
                env_keys |= set(doc.get("data", {})) | set(doc.get("stringData", {}))
            for c in _containers(doc):
                commands.append(c["args"])
                env_keys |= {e["name"] for e in c.get("env", [])}
                named = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
                for probe in ("readinessProbe", "livenessProbe"):
                    target = c.get(probe, {}).get("httpGet") or c.get(probe, {}).get("tcpSocket")
                    if target:
                        probed.setdefault(c["args"][0], set()).add(named.get(target["port"], target["port"]))
    compose = yaml.safe_load(COMPOSE.read_text())
    env_keys |= set(compose["x-instructrec-env"])
    for name, service in compose["services"].items():
        if name != "kafka":
            commands.append(service["command"])
            for port in service.get("ports", []):
                probed.setdefault(service["command"][0], set()).add(int(str(port).split(":")[-1]))
    assert env_keys and env_keys <= known, sorted(env_keys - known)
    for args in commands:
        parser.parse_args(args)  # exits (SystemExit) on an unknown command or option
    assert probed == {"stream-worker": {ports["stream-worker"]}, "pool": {ports["pool"]}}, probed


def test_the_image_holds_every_package_and_exposes_the_served_ports() -> None:
    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    pyproject = (DEPLOY.parent / "pyproject.toml").read_text()
    packages = re.search(r"packages = \[([^\]]*)\]", pyproject)
    assert packages is not None
    for package in re.findall(r'"([^"]+)"', packages.group(1)):
        assert f"COPY {package} ./{package}" in dockerfile, package
    s = Settings()
    exposed = {int(p) for p in re.search(r"^EXPOSE (.*)$", dockerfile, re.M).group(1).split()}  # type: ignore[union-attr]
    assert exposed == {s.web_port, s.pool_health_port, s.alerts_web_port}
    assert 'ENTRYPOINT ["instructrec"]' in dockerfile
