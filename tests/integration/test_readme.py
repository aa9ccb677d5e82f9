"""The README's promises that code can check."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import requests

from conftest import base_env, wait_for

ROOT = Path(__file__).resolve().parents[2]


def test_settings_table_matches_the_config_dataclass():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "update_readme.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_cli_flag_is_in_the_readme():
    """prefork's flags in the README's table; the gunicorn flags it only judges (hidden from
    --help) in docs/from-gunicorn.md's tables."""
    from prefork.config.cli import GUNICORN_DEST, build_parser

    readme = (ROOT / "README.md").read_text()
    from_gunicorn = (ROOT / "docs" / "from-gunicorn.md").read_text()
    for action in build_parser()._actions:
        page = from_gunicorn if action.dest.startswith(GUNICORN_DEST) else readme
        missing = [flag for flag in action.option_strings
                   if f"`{flag}`" not in page and flag not in ("-h", "--help")]
        assert not missing, f"flags missing from their table: {missing}"


def quick_start_commands() -> tuple[str, str]:
    """The two commands of the README's Quick start: (install and serve, install and test)."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Quick start"):]
    start = section.index("```sh\n") + len("```sh\n")
    block = section[start:section.index("```", start)]
    commands = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert len(commands) == 2, commands
    return commands[0], commands[1]


def test_ci_runs_the_readme_test_command_as_written():
    serve, test = quick_start_commands()
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci_lines
    # Both start from the same virtualenv, so the first command's install is the one CI tests.
    assert serve.split(" && ")[0] == test.split(" && ")[0] == "python3 -m venv .venv"
    assert serve.split(" && ")[1] == ".venv/bin/pip install ."
    assert "python3 -m pip" not in (ROOT / "README.md").read_text()  # PEP 668 refuses it
    # No package index has prefork: the systemd guide installs it from the clone or a wheel.
    assert "pip install prefork" not in (ROOT / "systemd" / "README.md").read_text()


def test_readme_serve_command_answers_with_the_example_app(listener):
    """The server part of the first command, run as `python -m prefork` with this venv's Python,
    on a socket the test bound (the command's own default would be 127.0.0.1:8000)."""
    serve, _ = quick_start_commands()
    program, *args = shlex.split(serve.split(" && ")[-1])
    assert program == ".venv/bin/prefork"
    env = base_env(PREFORK_FD=str(listener.fileno()))
    proc = subprocess.Popen([sys.executable, "-m", "prefork", *args], cwd=ROOT, env=env,
                            pass_fds=(listener.fileno(),), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    try:
        response = wait_for(lambda: _get(url), 20, message="the example app")
        assert response.status_code == 200 and response.text
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def _get(url: str) -> requests.Response | None:
    try:
        return requests.get(url, timeout=2)
    except requests.ConnectionError:
        return None
