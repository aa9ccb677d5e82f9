"""The README's promises that code can check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_settings_table_matches_the_config_dataclass():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "update_readme.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_cli_flag_is_in_the_readme():
    from prefork.config.cli import build_parser

    readme = (ROOT / "README.md").read_text()
    flags = {flag for action in build_parser()._actions for flag in action.option_strings}
    missing = sorted(flag for flag in flags if f"`{flag}`" not in readme and flag not in ("-h", "--help"))
    assert not missing, f"flags missing from the README table: {missing}"


def test_quick_start_commands_are_the_ones_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 -m pip install -e '.[test]' && python3 -m pytest" in readme
    assert "python3 -m pip install -q -e '.[test]'" in ci and "python3 -m pytest" in ci
    assert "python3 -m pip install . && prefork -w 4 --chdir examples hello:app" in readme
