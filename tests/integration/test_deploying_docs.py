"""Every manifest and configuration in docs/deploying.md is checked: the Dockerfile's and the
Deployment's command lines are parsed by prefork itself, the Kubernetes YAML is parsed and its
probes, ports and timeouts are cross-checked against those settings, nginx's config passes
``nginx -t`` and HAProxy's ``haproxy -c``. A doc that drifts from prefork fails here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from prefork.config.cli import load_config
from prefork.config.settings import Config

from test_nginx import NGINX, _other_temp_paths

DOC = Path(__file__).resolve().parents[2] / "docs" / "deploying.md"
HAPROXY = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.access(p, os.X_OK)), None)


def blocks(language: str) -> list[str]:
    found = re.findall(rf"^```{language}\n(.*?)^```$", DOC.read_text(), flags=re.M | re.S)
    assert found, f"no ```{language} block in {DOC.name}"
    return found


def config_from(args: list[str], env: dict[str, str]) -> Config:
    """What prefork makes of a command line and environment (the app is not imported)."""
    return load_config(args, environ=env)


def bind_port(cfg: Config) -> int:
    (address,) = cfg.bind
    return int(address.rpartition(":")[2])


def dockerfile() -> tuple[list[str], dict[str, str], str, list[str]]:
    """(ENTRYPOINT, ENV, USER, CMD) of the one Dockerfile."""
    (text,) = blocks("dockerfile")
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = [line.split(None, 1) for line in joined.splitlines() if line.strip() and not line.startswith("#")]
    env: dict[str, str] = {}
    entrypoint: list[str] = []
    cmd: list[str] = []
    user = ""
    for keyword, rest in lines:
        if keyword == "ENV":
            env.update(dict(item.split("=", 1) for item in shlex.split(rest)))
        elif keyword == "ENTRYPOINT":
            entrypoint = yaml.safe_load(rest)
        elif keyword == "CMD":
            cmd = yaml.safe_load(rest)
        elif keyword == "USER":
            user = rest.strip()
    return entrypoint, env, user, cmd


def test_the_container_runs_prefork_as_entrypoint_unprivileged_with_auto_workers():
    entrypoint, env, user, cmd = dockerfile()
    assert blocks("dockerfile")[0].startswith("FROM python:") and "-slim-" in blocks("dockerfile")[0]
    assert entrypoint == ["prefork"]
    assert user not in ("", "root", "0")
    assert env["WEB_CONCURRENCY"] == "auto"
    assert "/opt/venv/bin" in env["PATH"]
    cfg = config_from(cmd, {key: value for key, value in env.items() if "$" not in value})
    assert cfg.health_path == "/healthz"
    assert cfg.shutdown_delay > 0  # PREFORK_SHUTDOWN_DELAY
    assert cfg.workers >= 1 and cfg.app


def manifests() -> dict[str, dict]:
    docs = [doc for text in blocks("yaml") for doc in yaml.safe_load_all(text)]
    return {doc["kind"]: doc for doc in docs}


def test_the_kubernetes_manifests_agree_with_prefork_settings():
    found = manifests()
    deployment, service = found["Deployment"], found["Service"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item["value"] for item in container.get("env", [])}
    cfg = config_from(container["args"], env)
    port = bind_port(cfg)
    (http,) = container["ports"]
    assert http["containerPort"] == port
    for probe in ("readinessProbe", "livenessProbe"):
        check = container[probe]["httpGet"]
        assert check["path"] == cfg.health_path
        assert check["port"] in (http["name"], port)
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    stop = cfg.shutdown_delay + cfg.graceful_timeout
    # Out of the endpoints before prefork stops accepting; never killed while stopping.
    assert readiness["periodSeconds"] * readiness["failureThreshold"] < cfg.shutdown_delay
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= stop
    assert pod["terminationGracePeriodSeconds"] >= stop
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] in (http["name"], port)
    assert env.get("WEB_CONCURRENCY") == "auto"


def test_the_kubernetes_args_match_the_image_command():
    _, _, _, cmd = dockerfile()
    container = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    image_env = {key: value for key, value in dockerfile()[1].items() if "$" not in value}
    from_image = config_from(cmd, image_env)
    from_manifest = config_from(container["args"], image_env)
    for name in ("bind", "health_path", "shutdown_delay", "graceful_timeout", "app"):
        assert getattr(from_manifest, name) == getattr(from_image, name), name


@pytest.mark.skipif(NGINX is None, reason="needs the nginx binary (apt install nginx-light)")
def test_the_nginx_config_passes_nginx_t(tmp_path):
    for number, snippet in enumerate(blocks("nginx")):
        directory = tmp_path / str(number)
        directory.mkdir()
        (directory / "app.conf").write_text(snippet.replace("listen 80;", "listen 127.0.0.1:8080;"))
        conf = directory / "nginx.conf"
        conf.write_text(
            f"pid {directory}/nginx.pid;\nerror_log {directory}/error.log;\nevents {{}}\n"
            f"http {{\n  access_log off;\n  client_body_temp_path {directory}/body;\n"
            f"  proxy_temp_path {directory}/proxy;\n  {_other_temp_paths(directory)}\n"
            f"  include {directory}/app.conf;\n}}\n")
        result = subprocess.run([NGINX, "-t", "-p", str(directory), "-c", str(conf), "-e",
                                 str(directory / "error.log")], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert "max_fails" in snippet and "proxy_next_upstream error" in snippet
        assert "uri=/healthz" in snippet  # the same health path, for nginx Plus


@pytest.mark.skipif(HAPROXY is None, reason="needs the haproxy binary (apt install haproxy)")
def test_the_haproxy_config_passes_haproxy_c(tmp_path):
    (text,) = blocks("haproxy")
    conf = tmp_path / "haproxy.cfg"
    conf.write_text(text.replace("bind :80", "bind 127.0.0.1:8080"))
    result = subprocess.run([HAPROXY, "-c", "-f", str(conf)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    container = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    cfg = config_from(container["args"], {})
    assert f"uri {cfg.health_path}" in text
    servers = re.findall(r"server \S+ \S+:(\d+) check inter (\d+)s fall (\d+)", text)
    assert servers
    for port, inter, fall in servers:
        assert int(port) == bind_port(cfg)
        assert int(inter) * int(fall) < cfg.shutdown_delay  # out before it stops accepting


def test_the_readme_links_the_guide():
    readme = (DOC.parent.parent / "README.md").read_text()
    assert "(docs/deploying.md)" in readme
