"""Config files: a gunicorn-style Python file, a TOML file, or [tool.prefork] in pyproject.toml.

Each loader returns the settings the file sets, already validated, keyed by Config field name;
cli.load_config layers them between the defaults and the command line.

The two formats are strict in different ways, on purpose. A TOML file exists only to configure
prefork, so an unknown key is an error. A Python config file is a program: it imports modules,
computes values and defines helpers, and it is often an existing gunicorn config. So:

* module-level names that are settings count, also when imported (`from base_conf import
  workers`, or `import *`: config files that share a base keep working);
* modules, classes, `_private` names, UPPERCASE constants, functions that are not hooks and
  imported names that are not settings are ignored; so is an imported callable under a
  setting's name (`from myapp import app`, for use in a hook: it is not the APP spec); but
  a class under the name of a gunicorn setting prefork lacks is that setting's value
  (`worker_class = UvicornWorker`), judged like its dotted name;
* a gunicorn setting prefork does not have is looked up in gunicorn.py: refused (an error) if
  ignoring it would change what the app sees or how it runs, else one warning; another
  lowercase name the file assigns (likely a typo) is one warning too.

While the file runs, its directory is on sys.path (last), so it can import a shared base file.

`-c` takes gunicorn's forms: a path, `file:PATH` (the same) or `python:MODULE`, a module
imported by name (the starting directory first on sys.path, as gunicorn has it) and read
like a Python file. It is imported afresh on every load, so a HUP sees an edited module.
"""

from __future__ import annotations

import ast
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tomllib
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .gunicorn import judge, unsupported
from .logsetup import ERROR_LOGGER
from .settings import BY_NAME, ConfigError, is_hook, lookup, suggest_setting, validate

PYPROJECT = "pyproject.toml"
TOML_SUFFIX = ".toml"
FILE_ONLY_IN_COMMAND_LINE = frozenset({"config"})  # a config file cannot name another one

DEFAULT_CONFIG = "prefork.conf.py"  # read from the starting directory when -c is not given
GUNICORN_DEFAULT_CONFIG = "gunicorn.conf.py"  # gunicorn's default: loaded only with a warning
PYTHON_PREFIX = "python:"  # gunicorn's -c python:MODULE
FILE_PREFIX = "file:"  # gunicorn's -c file:PATH, the same as PATH

_TOML_POSITION = re.compile(r"(?P<message>.*) \(at line (?P<line>\d+), column (?P<column>\d+)\)")

log = logging.getLogger(ERROR_LOGGER)


def read_config_file(location: str) -> dict[str, Any]:
    """The settings in `-c LOCATION`: `python:MODULE`, else a path (`file:` prefix optional):
    TOML by its suffix, anything else is Python (gunicorn's configs are named gunicorn.conf.py,
    gunicorn.conf, ...)."""
    if location.startswith(PYTHON_PREFIX):
        return _module_settings(location.removeprefix(PYTHON_PREFIX), location)
    path = location.removeprefix(FILE_PREFIX)
    if not path.endswith(TOML_SUFFIX):
        return _python_settings(path)
    document = _read_toml(path)
    if os.path.basename(path) == PYPROJECT:
        table = _tool_table(document)
        if table is None:
            raise ConfigError(f"{path}: no [tool.prefork] table")
        return _toml_settings(table, path)
    table = _tool_table(document)
    return _toml_settings(document if table is None else table, path)


def source_name(location: str) -> str:
    """What `config` records for `-c LOCATION`: `python:MODULE` as given, a path made absolute."""
    if location.startswith(PYTHON_PREFIX):
        return location
    return os.path.abspath(location.removeprefix(FILE_PREFIX))


def read_default_config() -> tuple[str | None, dict[str, Any]]:
    """Without -c: (the file read, its settings). ./prefork.conf.py, else [tool.prefork] in
    ./pyproject.toml; both at once is an error (which one wins would be a guess). gunicorn's
    ./gunicorn.conf.py is loaded only when neither exists, and either way the log says what
    became of it: a gunicorn user's file is never silently read, nor silently skipped."""
    own = os.path.isfile(DEFAULT_CONFIG)
    table = read_pyproject()
    if own and table is not None:
        raise ConfigError(f"both ./{DEFAULT_CONFIG} and [tool.prefork] in ./{PYPROJECT} configure "
                          "prefork; choose one with -c")
    gunicorn_file = os.path.isfile(GUNICORN_DEFAULT_CONFIG)
    if own or table is not None:
        path, values = (DEFAULT_CONFIG, _python_settings(DEFAULT_CONFIG)) if own else (PYPROJECT, table)
        if gunicorn_file:
            log.warning("./%s is not read: the configuration comes from ./%s (pass "
                        "-c %s to use it instead)", GUNICORN_DEFAULT_CONFIG, path, GUNICORN_DEFAULT_CONFIG)
        return path, values
    if gunicorn_file:
        log.warning("Loading ./%s, gunicorn's default config file (no -c, no ./%s, no "
                    "[tool.prefork] in ./%s)", GUNICORN_DEFAULT_CONFIG, DEFAULT_CONFIG, PYPROJECT)
        return GUNICORN_DEFAULT_CONFIG, _python_settings(GUNICORN_DEFAULT_CONFIG)
    return None, {}


def read_pyproject(path: str = PYPROJECT) -> dict[str, Any] | None:
    """The settings in [tool.prefork] of a pyproject.toml, or None when there is no such file
    or no such table (the project simply does not configure prefork there)."""
    if not os.path.isfile(path):
        return None
    table = _tool_table(_read_toml(path))
    return None if table is None else _toml_settings(table, path)


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {path!r}: {exc.strerror}") from None


def _read_toml(path: str) -> dict[str, Any]:
    try:
        return tomllib.loads(_read_bytes(path).decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path}: not UTF-8 text: {exc.reason}") from None
    except tomllib.TOMLDecodeError as exc:
        where = _TOML_POSITION.fullmatch(str(exc))
        if where is None:
            raise ConfigError(f"config file {path}: {exc}") from None
        raise ConfigError(f"config file {path}: line {where['line']}, column {where['column']}: "
                          f"{where['message']}") from None


def _tool_table(document: dict[str, Any]) -> dict[str, Any] | None:
    tool = document.get("tool")
    table = tool.get("prefork") if isinstance(tool, dict) else None
    return table if isinstance(table, dict) else None


def _toml_settings(table: dict[str, Any], path: str) -> dict[str, Any]:
    """Every key must be a setting; `max-requests` and `max_requests` are the same key."""
    with _noting_check_config(table):
        return _toml_values(table, path)


def _toml_values(table: dict[str, Any], path: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for key, value in table.items():
        name = lookup(key.replace("-", "_"))
        if name is None and unsupported(key.replace("-", "_")) is not None:
            raise ConfigError(f"{path}: gunicorn setting {key!r} is not supported by prefork")
        if name is None:
            raise ConfigError(f"{path}: unknown setting {key!r}{suggest_setting(key)}")
        if name in FILE_ONLY_IN_COMMAND_LINE:
            raise ConfigError(f"{path}: {key!r} can only be given on the command line")
        if name in given_as:
            raise ConfigError(f"{path}: {given_as[name]!r} and {key!r} are the same setting")
        given_as[name] = key
        values[name] = validate(name, value, f"{path}: {key}")
    return values


def _python_settings(path: str) -> dict[str, Any]:
    """Run a Python config file and keep the module-level names that are settings."""
    source = _read_bytes(path)
    try:
        tree = ast.parse(source, filename=path)
        code = compile(tree, path, "exec")
    except SyntaxError as exc:
        raise ConfigError(f"config file {path}: line {exc.lineno}: "
                          f"SyntaxError: {exc.msg}") from None
    namespace: dict[str, Any] = {"__file__": os.path.abspath(path), "__name__": "__config__"}
    with _on_sys_path(os.path.dirname(os.path.abspath(path)), first=False), \
            _noting_check_config(namespace):
        try:
            exec(code, namespace)  # noqa: S102 - running the user's config file is the point
        except Exception as exc:  # whatever the user's code raises becomes a one-line report
            raise ConfigError(f"config file {path}: line {_line_in(exc, path)}: "
                              f"{type(exc).__name__}: {exc}") from exc
        return _collect(path, namespace, _assigned_names(tree))


def _module_settings(name: str, location: str) -> dict[str, Any]:
    """`-c python:MODULE`: import the module afresh (not from sys.modules: a HUP must see an
    edit) and keep the names that are settings, as for a file."""
    if not name or not all(part.isidentifier() for part in name.split(".")):
        raise ConfigError(f"--config: {location!r}: {name!r} is not a module name")
    with _on_sys_path(os.getcwd(), first=True):
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError as exc:  # a parent package is missing
            spec, name = None, exc.name or name
        if spec is None or spec.loader is None:
            raise ConfigError(f"--config: cannot import {location!r}: No module named {name!r}")
        origin = spec.origin if spec.has_location and spec.origin else location
        module = importlib.util.module_from_spec(spec)
        namespace = vars(module)
        with _noting_check_config(namespace):
            _run_module(spec.loader, module, origin)
    try:
        assigned = _assigned_names(ast.parse(_read_bytes(origin), filename=origin))
    except (ConfigError, SyntaxError, ValueError):  # compiled only: every name is its own
        assigned = set(namespace)
    with _noting_check_config(namespace):
        return _collect(origin, namespace, assigned)


def _run_module(loader: importlib.abc.Loader, module: types.ModuleType, origin: str) -> None:
    """Execute a config module; whatever it raises becomes a one-line ConfigError."""
    try:
        loader.exec_module(module)
    except SyntaxError as exc:
        raise ConfigError(f"config file {exc.filename or origin}: line {exc.lineno}: "
                          f"SyntaxError: {exc.msg}") from None
    except Exception as exc:  # whatever the user's code raises becomes a one-line report
        raise ConfigError(f"config file {origin}: line {_line_in(exc, origin)}: "
                          f"{type(exc).__name__}: {exc}") from exc


@contextmanager
def _on_sys_path(directory: str, first: bool) -> Iterator[None]:
    """`directory` on sys.path while a config file or module runs (unless it is there)."""
    added = directory not in sys.path
    if added:
        sys.path.insert(0 if first else len(sys.path), directory)
    try:
        yield
    finally:
        if added:
            sys.path.remove(directory)


@contextmanager
def _noting_check_config(names: dict[str, Any]) -> Iterator[None]:
    """A ConfigError while a file is read or run notes whether the file had asked for
    check_config by then (`names`: its namespace or TOML table, filled as it goes), so that
    --check-config from a file exits 1 for the file's own problems too."""
    try:
        yield
    except ConfigError as exc:
        exc.check_config = exc.check_config or any(
            names.get(key) is True for key in ("check_config", "check-config"))
        raise


def _collect(path: str, namespace: dict[str, Any], assigned: set[str]) -> dict[str, Any]:
    """The settings among a config file's module-level names (see the module docstring). What
    a gunicorn name amounts to (`control_socket_disable = True`) wins over the prefork name,
    whatever their order, as gunicorn's disable wins over its path."""
    values: dict[str, Any] = {}
    meant: dict[str, Any] = {}
    for name, value in namespace.items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        if isinstance(value, type) and unsupported(name) is None:
            continue
        setting = lookup(name)
        if setting is None:
            meant.update(_check_other_name(path, name, value, name in assigned))
        elif setting in FILE_ONLY_IN_COMMAND_LINE:
            log.warning("%s: %r can only be given on the command line; ignored", path, name)
        elif name in assigned or is_hook(BY_NAME[setting]) or not callable(value):
            values[setting] = validate(setting, value, f"{path}: {name}")
    values.update((setting, validate(setting, value, f"{path}: {setting}"))
                  for setting, value in meant.items())
    return values


def _check_other_name(path: str, name: str, value: Any, assigned: bool) -> dict[str, Any]:
    """A name that is not a prefork setting. A gunicorn setting that would change what the app
    sees or how it runs is refused; one that only tunes what prefork does its own way gets
    one warning; a value that asks for prefork's behaviour anyway, nothing. Another lowercase
    name the file assigns looks like a typo: a warning with a suggestion. Returns the prefork
    settings the name amounts to (gunicorn.judge)."""
    entry = unsupported(name)
    if entry is not None:
        return judge(entry, value, f"{path}: gunicorn setting {name} = {_short_repr(value)}",
                     f"{path}: gunicorn setting {name!r}")
    if assigned and name.islower() and not callable(value):
        log.warning("%s: unknown setting %r ignored%s", path, name, suggest_setting(name))
    return {}


def _short_repr(value: Any) -> str:
    """A value for a one-line error: functions by name, classes by repr, long values cut."""
    if callable(value) and not isinstance(value, type):
        return f"<function {getattr(value, '__name__', '?')}>"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _assigned_names(tree: ast.Module) -> set[str]:
    """Module-level names this file assigns or defines itself; every other name in its
    namespace was imported (`from base import x`, `from base import *`)."""
    names: set[str] = set()
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)  # its body is another scope
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        else:
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            pending.extend(ast.iter_child_nodes(node))
    return names


def _line_in(exc: BaseException, path: str) -> int | str:
    """The line of the config file where the exception surfaced (its innermost frame there)."""
    wanted = os.path.abspath(path)
    line: int | str = "?"
    traceback = exc.__traceback__
    while traceback is not None:
        if os.path.abspath(traceback.tb_frame.f_code.co_filename) == wanted:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line
