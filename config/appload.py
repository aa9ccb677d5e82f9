"""Finding the WSGI application named by APP.

    module:name              an attribute; `name` may be dotted (`app:server.wsgi`)
    module:factory()         called, its result is the application
    module:factory('a', n=1) called with literal arguments: parsed with ast.literal_eval,
                             never evaluated, so APP from a config file cannot run code
    module                   its `application`, else its `app`

Every failure is an AppLoadError with a one-line message that says where to look: the missing
module or attribute, or `file:line: Exception: message` for the innermost frame of the user's
code (not importlib's, not a library's) when importing or calling a factory raises. The original
exception is chained, so the caller can still log the whole traceback at debug level.
"""

from __future__ import annotations

import ast
import importlib
import os
import sys
import sysconfig
import traceback
from collections.abc import Callable
from types import ModuleType
from typing import Any

from .settings import Config, ConfigError, env_entries

DEFAULT_NAMES = ("application", "app")  # what a bare MODULE serves, in this order

# Frames in these directories are library code: the user's mistake is in the caller.
_LIBRARY_DIRS = tuple(sorted({os.path.join(sysconfig.get_paths()[key], "")
                              for key in ("stdlib", "platstdlib", "purelib", "platlib")}))


class AppLoadError(Exception):
    """The application cannot be loaded. One line, e.g. `cannot import 'app': No module named
    'app'`, `app.py:3: SyntaxError: invalid syntax`, `'app:x' is not callable`."""


def prepare_sys_path(cfg: Config) -> None:
    """Prepare this process to import APP: put --env (raw_env) into os.environ, for an app
    that reads it at import; apply --chdir, then make sys.path start with the --pythonpath
    entries and the working directory, so that APP is imported from the project and not from
    an installed package of the same name. The order is gunicorn's, which inserts the working
    directory at sys.path[0] and then each --pythonpath entry at sys.path[0] in turn: the
    last entry comes first, the working directory after them all. Idempotent: a reload does
    not stack duplicates."""
    os.environ.update(env_entries(cfg.raw_env))
    if cfg.chdir:
        try:
            os.chdir(cfg.chdir)
        except OSError as exc:
            raise ConfigError(f"--chdir: cannot change to {cfg.chdir!r}: {exc.strerror}") from None
    front = [os.getcwd()]
    for entry in (cfg.pythonpath or "").split(","):
        if not entry.strip():
            continue
        directory = os.path.abspath(entry.strip())
        if not os.path.isdir(directory):
            raise ConfigError(f"--pythonpath: no such directory {entry.strip()!r}")
        front.insert(0, directory)
    front = list(dict.fromkeys(front))  # an entry that is the working directory counts once
    sys.path[:] = front + [entry for entry in sys.path if entry not in front]


def load_app(spec: str) -> Callable[..., Any]:
    """Import and return the WSGI callable named by spec (see the module docstring)."""
    module_name, has_colon, expression = spec.strip().partition(":")
    _check_module_name(module_name, spec)
    if has_colon and not expression.strip():
        raise AppLoadError(f"invalid application {spec!r}: nothing after ':'")
    module = _import(module_name)
    if not has_colon:
        return _default_app(module, spec)
    path, call = _parse_expression(expression.strip(), spec)
    target = _resolve(module, path, spec)
    if call is None:
        if not callable(target):
            raise AppLoadError(f"{spec!r} is not callable")
        return target
    if not callable(target):
        raise AppLoadError(f"{spec!r}: {'.'.join(path)!r} is not callable")
    args, kwargs = call
    try:
        app = target(*args, **kwargs)
    except Exception as exc:  # the factory's failure, reported in one line; chained for debug
        raise AppLoadError(f"{spec!r} failed: {_describe(exc)}") from exc
    if not callable(app):
        raise AppLoadError(f"{spec!r} returned {type(app).__name__}, which is not callable")
    return app


def _check_module_name(name: str, spec: str) -> None:
    if name.endswith(".py") or "/" in name:
        module = os.path.splitext(name)[0].replace("/", ".")
        raise AppLoadError(f"invalid application {spec!r}: give a module, not a file "
                           f"(e.g. '{module}:app')")
    if not name or not all(part.isidentifier() for part in name.split(".")):
        raise AppLoadError(f"invalid application {spec!r}: {name!r} is not a module name")


def _import(module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise AppLoadError(f"cannot import {module_name!r}: No module named {exc.name!r} "
                               f"(not in {os.getcwd()} nor on sys.path; see --chdir, "
                               f"--pythonpath)") from exc
        raise AppLoadError(_describe(exc)) from exc  # the app imports something missing
    except SyntaxError as exc:
        raise AppLoadError(f"{_display(exc.filename or '?')}:{exc.lineno}: "
                           f"SyntaxError: {exc.msg}") from exc
    except Exception as exc:  # anything the module raises while importing, as one line
        raise AppLoadError(_describe(exc)) from exc


def _parse_expression(expression: str, spec: str) -> tuple[list[str], tuple[list, dict] | None]:
    """`name.attr` -> (["name", "attr"], None); `f(1, x='a')` -> (["f"], ([1], {"x": "a"}))."""
    try:
        node = ast.parse(expression, mode="eval").body
    except SyntaxError:
        raise AppLoadError(f"invalid application {spec!r}: cannot parse {expression!r}") from None
    call = None
    if isinstance(node, ast.Call):
        if any(isinstance(arg, ast.Starred) for arg in node.args) or any(
                keyword.arg is None for keyword in node.keywords):
            raise AppLoadError(f"invalid application {spec!r}: no *args or **kwargs")
        try:
            call = ([ast.literal_eval(arg) for arg in node.args],
                    {keyword.arg: ast.literal_eval(keyword.value) for keyword in node.keywords})
        except (ValueError, TypeError, SyntaxError):
            raise AppLoadError(f"invalid application {spec!r}: factory arguments must be "
                               f"literals (strings, numbers, lists, ...)") from None
        node = node.func
    path = _dotted_name(node)
    if path is None:
        raise AppLoadError(f"invalid application {spec!r}: expected NAME, NAME.ATTR or "
                           f"FACTORY(ARGS) after ':'")
    return path, call


def _dotted_name(node: ast.expr) -> list[str] | None:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        base = _dotted_name(node.value)
        return None if base is None else [*base, node.attr]
    return None


def _resolve(module: ModuleType, path: list[str], spec: str) -> Any:
    target: Any = module
    owner = f"module {module.__name__!r}"
    for depth, name in enumerate(path, start=1):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise AppLoadError(f"{spec!r}: {owner} has no attribute {name!r}") from None
        owner = repr(".".join(path[:depth]))
    return target


def _default_app(module: ModuleType, spec: str) -> Callable[..., Any]:
    for name in DEFAULT_NAMES:
        if hasattr(module, name):
            app = getattr(module, name)
            if not callable(app):
                raise AppLoadError(f"'{spec}:{name}' is not callable")
            return app
    raise AppLoadError(f"{spec!r}: module {module.__name__!r} has no attribute "
                       f"{DEFAULT_NAMES[0]!r} or {DEFAULT_NAMES[1]!r}; name it: '{spec}:NAME'")


def _describe(exc: BaseException) -> str:
    """`file:line: Type: message` at the innermost frame of user code, else `Type: message`."""
    frame = _user_frame(exc)
    where = f"{_display(frame.filename)}:{frame.lineno}: " if frame else ""
    message = " ".join(str(exc).splitlines())
    return f"{where}{type(exc).__name__}: {message}" if message else f"{where}{type(exc).__name__}"


def _user_frame(exc: BaseException) -> traceback.FrameSummary | None:
    """The innermost frame outside importlib (`<frozen ...>`) and this module, preferring code
    outside the standard library and site-packages: a json.loads failure is the caller's."""
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__)
              if not frame.filename.startswith("<") and frame.filename != __file__]
    user = [frame for frame in frames if not frame.filename.startswith(_LIBRARY_DIRS)]
    chosen = user or frames
    return chosen[-1] if chosen else None


def _display(path: str) -> str:
    """A path relative to the working directory when it is below it: `app.py`, not
    `/srv/project/app.py`."""
    relative = os.path.relpath(path) if os.path.isabs(path) else path
    return path if relative.startswith("..") else relative
