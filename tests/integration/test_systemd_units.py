"""The systemd units in systemd/: accepted by systemd-analyze, and consistent with prefork.

`systemd-analyze verify` checks that ExecStart='s program exists, so the units are verified as
copies whose ExecStart= points at the prefork installed here. It exits 0 on unknown or unparsable
settings too (it only warns), so its output must also be free of lines about our units.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "systemd"
SERVICE = UNITS / "prefork.service"
SOCKET = UNITS / "prefork.socket"
ENV_EXAMPLE = UNITS / "prefork.env.example"
INSTALLED_PROGRAM = "/opt/app/venv/bin/prefork"
DEFAULT_GRACEFUL_TIMEOUT = 30.0  # seconds: --graceful-timeout's default
NOTIFY_RELOAD_SINCE = 253  # the first systemd that knows Type=notify-reload
VERIFY_TIMEOUT = 60.0


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Section -> (key, value) in order; keys repeat (ListenStream=), comments are skipped."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
        else:
            key, _, value = line.partition("=")
            current.append((key.strip(), value.strip()))
    return sections


def values(text: str, section: str, key: str) -> list[str]:
    return [v for k, v in parse_unit(text)[section] if k == key]


def one(text: str, section: str, key: str) -> str:
    found = values(text, section, key)
    assert len(found) == 1, f"[{section}] {key}= appears {len(found)} times"
    return found[0]


def seconds(timespan: str) -> float:
    """A systemd time span of the forms this repo uses: 40, 40s, 2min, 1min 30s."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", timespan)
    assert parts, f"cannot read the time span {timespan!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def env_file(text: str) -> dict[str, str]:
    """An EnvironmentFile=: KEY=VALUE lines, optional double quotes around the value."""
    env = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            env[key] = value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    return env


def systemd_version(analyze: str) -> int:
    result = subprocess.run([analyze, "--version"], capture_output=True, text=True, check=True,
                            timeout=VERIFY_TIMEOUT)
    match = re.match(r"systemd (\d+)", result.stdout)
    assert match, result.stdout
    return int(match.group(1))


def legacy_reload_lines(service: str) -> list[str]:
    """The Type=notify + ExecReload= fallback that the unit's comment offers systemd < 253."""
    lines = re.findall(r"^#\s+((?:Type|ExecReload)=.*)$", service, flags=re.MULTILINE)
    assert [line.split("=")[0] for line in lines] == ["Type", "ExecReload"], lines
    return lines


def installable_copy(directory: Path, version: int, with_socket: bool) -> list[Path]:
    """The units as they would be installed here: ExecStart= runs this environment's prefork."""
    program = shutil.which("prefork") or sys.executable
    service = SERVICE.read_text()
    service, replaced = re.subn(rf"^ExecStart={re.escape(INSTALLED_PROGRAM)}\b", f"ExecStart={program}", service,
                                flags=re.MULTILINE)
    assert replaced == 1, f"ExecStart= no longer runs {INSTALLED_PROGRAM}: update this test"
    if version < NOTIFY_RELOAD_SINCE:
        service = service.replace("Type=notify-reload\n", "\n".join(legacy_reload_lines(service)) + "\n")
    (directory / SERVICE.name).write_text(service)
    paths = [directory / SERVICE.name]
    if with_socket:
        shutil.copy(SOCKET, directory / SOCKET.name)
        paths.insert(0, directory / SOCKET.name)
    return paths


@pytest.fixture(scope="module")
def analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed (apt package `systemd`)")
    return tool


@pytest.mark.parametrize("with_socket", [True, False], ids=["with-socket-unit", "service-alone"])
def test_units_pass_systemd_analyze_verify(analyze: str, tmp_path: Path, with_socket: bool) -> None:
    paths = installable_copy(tmp_path, systemd_version(analyze), with_socket)
    result = subprocess.run(
        [analyze, "verify", "--man=no", *map(str, paths)], capture_output=True, text=True,
        timeout=VERIFY_TIMEOUT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    about_ours = [line for line in output.splitlines() if "prefork" in line]
    assert about_ours == []


SERVICE_SETTINGS = [
    ("Type", "notify-reload"),
    ("NotifyAccess", "all"),
    ("KillMode", "mixed"),
    ("KillSignal", "SIGTERM"),
    ("Restart", "on-failure"),
    ("User", "prefork"),
    ("Group", "prefork"),
    ("EnvironmentFile", "-/etc/prefork/prefork.env"),
    ("RuntimeDirectory", "prefork"),
    ("RuntimeDirectoryPreserve", "yes"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("NoNewPrivileges", "yes"),
    ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
    ("MemoryDenyWriteExecute", "yes"),
    ("SystemCallArchitectures", "native"),
    ("CapabilityBoundingSet", ""),
]


@pytest.mark.parametrize(("key", "expected"), SERVICE_SETTINGS)
def test_service_setting(key: str, expected: str) -> None:
    assert one(SERVICE.read_text(), "Service", key) == expected


def test_service_does_not_require_socket_unit() -> None:
    unit = parse_unit(SERVICE.read_text())["Unit"]
    hard = [value for key, value in unit if key in ("Requires", "BindsTo", "Requisite")]
    assert not [value for value in hard if "prefork.socket" in value]


def test_stop_timeout_outlasts_graceful_timeout() -> None:
    stop = seconds(one(SERVICE.read_text(), "Service", "TimeoutStopSec"))
    args = shlex.split(env_file(ENV_EXAMPLE.read_text())["PREFORK_CMD_ARGS"])
    graceful = DEFAULT_GRACEFUL_TIMEOUT
    if "--graceful-timeout" in args:
        graceful = float(args[args.index("--graceful-timeout") + 1])
    assert stop > graceful


def test_runtime_files_live_in_the_runtime_directory() -> None:
    service = SERVICE.read_text()
    runtime = "/run/" + one(service, "Service", "RuntimeDirectory") + "/"
    argv = shlex.split(one(service, "Service", "ExecStart"))
    for flag in ("--pid", "--control-socket"):
        assert argv[argv.index(flag) + 1].startswith(runtime), flag
    unix_listeners = [v for v in values(SOCKET.read_text(), "Socket", "ListenStream") if v.startswith("/")]
    assert unix_listeners and all(path.startswith(runtime) for path in unix_listeners)


SOCKET_SETTINGS = [
    ("FileDescriptorName", "http"),
    ("SocketUser", "prefork"),
    ("SocketMode", "0660"),
    ("Backlog", "2048"),
    ("NoDelay", "true"),
]


@pytest.mark.parametrize(("key", "expected"), SOCKET_SETTINGS)
def test_socket_setting(key: str, expected: str) -> None:
    assert one(SOCKET.read_text(), "Socket", key) == expected


def test_socket_listens_on_tcp_and_unix() -> None:
    listeners = values(SOCKET.read_text(), "Socket", "ListenStream")
    assert any(value.startswith("/") for value in listeners)
    assert any(re.fullmatch(r"(\d+\.\d+\.\d+\.\d+:|\[[0-9a-f:]+\]:)?\d+", value) for value in listeners)


def test_env_example_sets_documented_variables() -> None:
    documented = {"PREFORK_CMD_ARGS", "WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS"}
    assert set(env_file(ENV_EXAMPLE.read_text())) == documented


def test_execstart_command_line_is_accepted_by_prefork(tmp_path: Path) -> None:
    cli = pytest.importorskip("prefork.config.cli", reason="prefork.config.cli not written yet")
    argv = shlex.split(one(SERVICE.read_text(), "Service", "ExecStart"))[1:]
    config_file = tmp_path / "prefork.conf.py"
    config_file.write_text('wsgi_app = "myapp:application"\n')
    argv[argv.index("-c") + 1] = str(config_file)
    cfg = cli.load_config(argv=argv, environ={})
    assert (cfg.app, cfg.pidfile, cfg.control_socket) == (
        "myapp:application", "/run/prefork/prefork.pid", "/run/prefork/control.sock")


def test_env_example_is_accepted_by_prefork() -> None:
    cli = pytest.importorskip("prefork.config.cli", reason="prefork.config.cli not written yet")
    env = env_file(ENV_EXAMPLE.read_text())
    cfg = cli.load_config(argv=["myapp:application"], environ=env)
    assert cfg.workers == int(env["WEB_CONCURRENCY"])
    assert cfg.forwarded_allow_ips == env["FORWARDED_ALLOW_IPS"]
    assert cfg.accesslog == "-"
