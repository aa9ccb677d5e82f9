"""--reload's watchers on real files: polling and inotify (watchfiles) notice an edited module
and an edited --reload-extra-file, and nothing else."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import wait_for
from prefork.config.cli import load_config
from prefork.config.settings import Config, ConfigError
from prefork.workers import reloader
from prefork.workers.reloader import InotifyWatcher, SourceWatcher, check_engine, make_watcher

ENGINES = [SourceWatcher, pytest.param(InotifyWatcher, marks=pytest.mark.skipif(
    not reloader.have_watchfiles(), reason="watchfiles is not installed"))]


@pytest.fixture
def template(tmp_path: Path) -> Path:
    path = tmp_path / "page.html"
    path.write_text("<p>one</p>")
    return path


def edit(path: Path, step: list[int]) -> None:
    """Change the file and its mtime (a later second than before: coarse mtimes exist)."""
    step[0] += 1
    path.write_text(f"<p>{step[0]}</p>")
    os.utime(path, (os.stat(path).st_atime, os.stat(path).st_mtime + step[0]))


@pytest.fixture(params=ENGINES)
def engine(request) -> Iterator[type]:
    yield request.param


def test_an_edited_extra_file_is_reported(engine: type, template: Path, tmp_path: Path) -> None:
    watcher = engine([str(template)])
    try:
        assert watcher.changed() is None
        (tmp_path / "unrelated.txt").write_text("x")  # same directory, not watched
        step = [0]
        # inotify's thread may still be setting up its watches: edit until it reports.
        assert wait_for(lambda: edit(template, step) or watcher.changed(), 10,
                        interval=0.1, message="the edit reported") == str(template)
    finally:
        watcher.close()


def test_a_file_replaced_by_rename_is_reported(engine: type, template: Path) -> None:
    """Editors save by writing a new file and renaming it over the old one."""
    watcher = engine([str(template)])
    try:
        step = [0]

        def save() -> str | None:
            step[0] += 1
            new = template.with_suffix(".tmp")
            new.write_text(f"<p>{step[0]}</p>")
            os.utime(new, (0, os.stat(template).st_mtime + 1))
            os.replace(new, template)
            return watcher.changed()
        assert wait_for(save, 10, interval=0.1, message="the save reported") == str(template)
    finally:
        watcher.close()


def test_an_edited_module_is_reported(engine: type, tmp_path: Path, monkeypatch) -> None:
    module = tmp_path / "reload_probe_module.py"
    module.write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import reload_probe_module  # noqa: F401 - imported so that the watcher knows its file
    watcher = engine()
    sys.modules.pop("reload_probe_module", None)
    try:
        step = [0]
        assert wait_for(lambda: edit(module, step) or watcher.changed(), 10, interval=0.1,
                        message="the module edit reported") == str(module)
    finally:
        watcher.close()


def test_engine_choice(template: Path) -> None:
    cfg = Config(reload=True, reload_engine="poll", reload_extra_files=[str(template)])
    assert isinstance(make_watcher(cfg), SourceWatcher)
    cfg.reload_engine = "auto"
    watcher = make_watcher(cfg)
    watcher.close()
    assert isinstance(watcher, InotifyWatcher if reloader.have_watchfiles() else SourceWatcher)


def test_inotify_without_watchfiles_is_a_config_error(monkeypatch) -> None:
    monkeypatch.setattr(reloader, "have_watchfiles", lambda: False)
    with pytest.raises(ConfigError, match="inotify needs the watchfiles package"):
        check_engine(Config(reload=True, reload_engine="inotify"))


def test_reload_extra_file_must_exist_and_is_made_absolute(template: Path, monkeypatch) -> None:
    monkeypatch.chdir(template.parent)
    cfg = load_config(["--reload-extra-file", "page.html", "basic:app"], environ={})
    assert cfg.reload_extra_files == [str(template)]
    with pytest.raises(ConfigError, match="--reload-extra-file: no such file, got 'nope.html'"):
        load_config(["--reload-extra-file", "nope.html", "basic:app"], environ={})
