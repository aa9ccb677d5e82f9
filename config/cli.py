"""Everything generated from the settings table: the command line, make_config,
--print-config and the settings reference.

Precedence, lowest first:

    defaults  <  environment defaults (WEB_CONCURRENCY, FORWARDED_ALLOW_IPS; SCRIPT_NAME,
                 also from -e, for --root-path)
              <  config file (-c FILE, else ./prefork.conf.py or [tool.prefork] in
                 ./pyproject.toml, else gunicorn's ./gunicorn.conf.py with a warning)
              <  $PREFORK_CMD_ARGS (shlex-split, the syntax of the command line; else
                 $GUNICORN_CMD_ARGS with a warning)
              <  the command line

A gunicorn flag prefork lacks (`-k sync`, `--no-sendfile`, `--daemon`) is parsed with
gunicorn's shape (with or without a value) and judged by the table in gunicorn.py, as a config
file's names are: accepted silently, refused, or ignored with one warning. Only an option
neither server has is an "unknown option" error.

A later layer replaces a setting whole: `-b` on the command line replaces every bind from the
config file rather than adding to them. Relative config paths and ./pyproject.toml are found
from the current directory when load_config runs, i.e. before --chdir is applied: --chdir may
itself come from that file. The file actually read is recorded in `config` as an absolute path.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import Field
from typing import Any, NoReturn

from . import __version__, files
from .binds import default_binds, parse_bind
from .cpus import WorkerCount
from .gunicorn import GUNICORN, GunicornSetting, judge, unsupported
from .logsetup import ERROR_LOGGER
from .settings import (BY_NAME, FIELDS, Config, ConfigError, default_text, default_value,
                       did_you_mean, env_defaults, env_entries, is_hook, lookup, spec,
                       suggest_setting, validate)

PROG = "prefork"
USAGE = "prefork [OPTIONS] APP"
DESCRIPTION = ("A pre-fork WSGI server. APP is MODULE:NAME, MODULE:FACTORY(ARGS) or MODULE. "
               "A running server: `prefork status [--json]`, `prefork ctl reload|stop|workers +N|-N`.")
ENV_ARGS = "PREFORK_CMD_ARGS"
GUNICORN_ENV_ARGS = "GUNICORN_CMD_ARGS"
APP_LABEL = "APP"
log = logging.getLogger(ERROR_LOGGER)
#: Every option either server has, for "did you mean": a gunicorn user mistypes gunicorn's.
OPTIONS = ["--help", "--version", *(flag for f in FIELDS for flag in spec(f).flags),
           *(flag for entry in GUNICORN.values() if unsupported(entry.name)
             for flag in entry.flags)]


#: The argparse dest of a gunicorn flag prefork lacks: this prefix and the gunicorn name.
GUNICORN_DEST = "gunicorn:"


class _Parser(argparse.ArgumentParser):
    """argparse that raises ConfigError instead of printing usage and exiting 2."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


class _GunicornFlag(argparse.Action):
    """A gunicorn flag prefork lacks: keeps (the flag as typed, its value) for gunicorn.judge,
    so that a message names `-k` when the user wrote `-k`."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, (option_string, self.const if self.nargs == 0 else values))


def build_parser() -> argparse.ArgumentParser:
    """The `prefork` command line, one option per setting that has flags, grouped by section.
    Values stay strings here; the table's parsers validate them afterwards, so a bad value
    gets the same message from every source."""
    parser = _Parser(prog=PROG, usage=USAGE, description=DESCRIPTION, allow_abbrev=False,
                     argument_default=argparse.SUPPRESS)
    parser.add_argument("-v", "--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("app", nargs="?", metavar=APP_LABEL, help=_help_line(BY_NAME["app"]))
    with_flags = [f for f in FIELDS if spec(f).flags]
    groups = {section: parser.add_argument_group(section)
              for section in dict.fromkeys(spec(f).section for f in with_flags)}
    for f in with_flags:
        info = spec(f)
        options: dict[str, Any] = {"dest": f.name, "action": info.action, "help": _help_line(f)}
        if info.action in ("store", "append"):
            options["metavar"] = info.metavar
        if info.const is not None:
            options.update(nargs="?", const=info.const)
        groups[info.section].add_argument(*info.flags, **options)
    for entry in GUNICORN.values():  # not in --help: docs/from-gunicorn.md lists them
        if entry.flags and unsupported(entry.name):
            switch = entry.flag_value is not None
            parser.add_argument(*entry.flags, dest=GUNICORN_DEST + entry.name,
                                action=_GunicornFlag, nargs=0 if switch else None,
                                const=entry.flag_value, help=argparse.SUPPRESS)
    return parser


def load_config(argv: Sequence[str] | None = None,
                environ: Mapping[str, str] | None = None) -> Config:
    """The configuration from defaults, config file (-c, else the default files, see above),
    $PREFORK_CMD_ARGS and argv (sys.argv[1:] by default). ConfigError on any bad input;
    --help and --version print and exit 0."""
    environ = os.environ if environ is None else environ
    argv = sys.argv[1:] if argv is None else list(argv)
    layers: list[dict[str, Any]] = []  # the layers read before a failure
    try:
        return _load(argv, environ, layers)
    except ConfigError as exc:  # (a flag can only set it, so any layer asking for it decides)
        exc.check_config = (exc.check_config or "--check-config" in argv
                            or any(layer.get("check_config") for layer in layers))
        raise


def _load(argv: list[str], environ: Mapping[str, str], layers: list[dict[str, Any]]) -> Config:
    """load_config's work; `layers` collects the command line, the variable and the file as
    each is read, so that a failure can still tell whether --check-config was asked for."""
    parser = build_parser()
    from_argv, argv_doubt = _command_line(parser, argv)
    layers.append(from_argv)
    from_env, env_doubt = _command_line_from_env(parser, environ)
    layers.append(from_env)
    config_path = from_argv.get("config", from_env.get("config"))
    if config_path:
        from_file = files.read_config_file(config_path)
    else:
        config_path, from_file = files.read_default_config()
    layers.append(from_file)
    _settle_doubt(argv_doubt, from_env, from_file)
    _settle_doubt(env_doubt, from_argv, from_file)
    values = {**env_defaults(environ), **from_file, **from_env, **from_argv}
    if config_path:
        values["config"] = files.source_name(config_path)
    _root_path_from_script_name(values, environ)
    cfg = Config(**values)
    _check_together(cfg, environ)
    return cfg


def make_config(**settings: Any) -> Config:
    """The Python API: config-file names (gunicorn's, `wsgi_app` or `app`), the same validation,
    and the same environment defaults as the command line."""
    values = env_defaults(os.environ)
    for key, value in settings.items():
        name = lookup(key)
        if name is None:
            raise ConfigError(f"unknown setting {key!r}{suggest_setting(key)}")
        values[name] = validate(name, value, key)
    _root_path_from_script_name(values, os.environ)
    cfg = Config(**values)
    _check_together(cfg, os.environ)
    return cfg


#: Settings about this one invocation rather than the server: left out of --print-config, so
#: that its output loaded with -c configures a server instead of printing itself again.
INVOCATION_ONLY = frozenset({"config", "print_config", "check_config"})


def format_config(cfg: Config, environ: Mapping[str, str] | None = None) -> str:
    """`name = value` lines, sorted; values as Python literals, so that `-c` on the output gives
    the same configuration: the binds the default resolves to are written out, a value `auto`
    resolved says from what in a comment, and a hook that is set (a function cannot be printed)
    is named in a comment at the end."""
    environ = os.environ if environ is None else environ
    values = {f.name: getattr(cfg, f.name) for f in FIELDS
              if not is_hook(f) and f.name not in INVOCATION_ONLY}
    values["bind"] = values["bind"] or default_binds(environ)
    lines = sorted(f"{name} = {value!r}{_resolved_from(value)}" for name, value in values.items())
    source = cfg.config or "the Python API"
    lines += [f"# {f.name}: a hook set in {source}, not printed" for f in FIELDS
              if is_hook(f) and getattr(cfg, f.name) is not default_value(f)]
    return "\n".join(lines)


def _resolved_from(value: Any) -> str:
    return f"  # {value.budget.explain()}" if isinstance(value, WorkerCount) else ""


def settings_reference_markdown() -> str:
    """The settings table for the README: flags, config name, default, description.
    Deterministic (the table's order), so a test can compare it with the README."""
    rows = [["Flag", "Setting", "Default", "Description"], ["---"] * 4]
    for f in FIELDS:
        info = spec(f)
        if f.name == "app":
            flags = f"`{APP_LABEL}` (argument)"
        elif info.flags:
            flags = ", ".join(f"`{flag}`" for flag in info.flags)
        else:
            flags = "config file"
        if is_hook(f):
            names = f"`{f.name}{info.metavar}`"
        else:
            names = ", ".join(f"`{name}`" for name in (f.name, *info.aliases))
        description = f"{info.short} {info.advice}".strip()
        rows.append([flags, names, f"`{default_text(f)}`", description])
    # A `|` inside a cell would end the cell.
    return "".join("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |\n"
                   for row in rows)


def _command_line(parser: argparse.ArgumentParser, args: Sequence[str], source: str = "",
                  positional: bool = True) -> tuple[dict[str, Any], ConfigError | None]:
    """Validated settings from one command line, only those it gives, and the doubt about its
    APP (see _settle_doubt). `source` starts the warnings about gunicorn flags ("" for argv,
    "GUNICORN_CMD_ARGS: " for the variable). Without `positional` (gunicorn's variable),
    words that are no option's value are ignored with one warning, as gunicorn ignores them."""
    folded, guesses = _fold_optional_values(args)
    namespace, extras = parser.parse_known_args(folded)
    for extra in extras:
        if extra.startswith("-") and extra != "-":
            option = extra.split("=", 1)[0]
            hint = did_you_mean(option, OPTIONS, quote=False)
            raise ConfigError(f"unknown option {option}{hint}")
    given = vars(namespace)
    words = ([given.pop("app")] if "app" in given else []) + extras
    doubt = next((guesses[word] for word in words if word in guesses), None)
    if doubt is not None and (len(words) > 1 or not positional):
        raise doubt  # a second word, or no APP allowed: the word after the flag was its value
    if not positional and words:
        log.warning("%s'%s' ignored: gunicorn reads only options there", source,
                    "' '".join(words))
    elif len(words) > 1:
        raise ConfigError(f"unexpected argument {words[1]!r}")
    elif words:
        given["app"] = words[0]
    for dest in [dest for dest in given if dest.startswith(GUNICORN_DEST)]:
        flag, value = given.pop(dest)
        given.update(_judge_flag(GUNICORN[dest.removeprefix(GUNICORN_DEST)], flag, value,
                                 source))
    return ({name: validate(name, raw, APP_LABEL if name == "app" else _flag(BY_NAME[name]))
             for name, raw in given.items()}, doubt)


def _judge_flag(entry: GunicornSetting, flag: str, value: Any, source: str) -> dict[str, Any]:
    """A gunicorn flag prefork lacks, as its config-file name would be judged; the prefork
    settings it amounts to. Refusals carry no `source`: _command_line_from_env puts the
    variable's name before every error."""
    typed = flag if entry.flag_value is not None else f"{flag} {shlex.quote(value)}"
    return judge(entry, value, f"gunicorn option {typed}", f"{source}gunicorn option {flag}")


#: The flags whose value is optional (`--proxy-protocol [MODE]`), with their field.
OPTIONAL_VALUE_FLAGS = {flag: f for f in FIELDS if spec(f).const is not None
                        for flag in spec(f).flags}


def _fold_optional_values(args: Sequence[str]) -> tuple[list[str], dict[str, ConfigError]]:
    """`args` with every bare optional-value flag made explicit, so that argparse never takes
    the next word itself: `--proxy-protocol v2` -> `--proxy-protocol=v2` when the word is a
    value of the flag (gunicorn's form), else `--proxy-protocol=auto` and the word stays a
    positional: `--proxy-protocol app:app` is APP, as prefork always read it. Such words map
    to the error they would get as the flag's value (the doubt about them). An explicit
    `--proxy-protocol=WORD` is always the flag's value."""
    folded: list[str] = []
    guesses: dict[str, ConfigError] = {}
    words = iter(args)
    for word in words:
        f = OPTIONAL_VALUE_FLAGS.get(word)
        if word == "--":
            folded += [word, *words]
        elif f is None:
            folded.append(word)
        else:
            following = next(words, None)
            value = _value_or_none(f, following)
            folded.append(f"{word}={value or spec(f).const}")
            if following is not None and value is None:
                folded.append(following)
                if not following.startswith("-"):
                    guesses[following] = _value_error(f, following)
    return folded, guesses


def _value_or_none(f: Field, word: str | None) -> str | None:
    """`word` when the optional-value flag `f` accepts it (an option is never a value)."""
    if word is None or word.startswith("-"):
        return None
    try:
        spec(f).parse(word)
    except ValueError:
        return None
    return word


def _value_error(f: Field, word: str) -> ConfigError:
    """The error `word` gets as the value of the optional-value flag `f` (it is none)."""
    try:
        validate(f.name, word, _flag(f))
    except ConfigError as exc:
        return exc
    raise AssertionError(f"{word!r} is a value of {_flag(f)}")


def _settle_doubt(doubt: ConfigError | None, *others: Mapping[str, Any]) -> None:
    """A layer's APP that is the word after a bare `--proxy-protocol` (`doubt` is the error it
    gets as a MODE) is APP only when no other layer gives one: with an APP from elsewhere the
    word was meant as the MODE (`-c conf.py --proxy-protocol of`), and a typo must not
    silently become APP, or be silently replaced by another APP."""
    if doubt is not None and any("app" in layer for layer in others):
        raise doubt


def _command_line_from_env(parser: argparse.ArgumentParser,
                           environ: Mapping[str, str]) -> tuple[dict[str, Any], ConfigError | None]:
    """$PREFORK_CMD_ARGS; gunicorn's $GUNICORN_CMD_ARGS when only that one is set, with a
    warning saying so (an ignored variable would be a silent surprise, so is that too).
    A word in $PREFORK_CMD_ARGS that is no option's value is APP, below the command line's
    (an env file's APP yields to ExecStart='s); gunicorn's variable takes no APP, as in
    gunicorn, but a word ignored there is named in a warning. Returns what _command_line
    does, the doubt's message naming the variable."""
    name = ENV_ARGS
    if environ.get(GUNICORN_ENV_ARGS):
        if environ.get(ENV_ARGS):
            log.warning("$%s is ignored: $%s is set", GUNICORN_ENV_ARGS, ENV_ARGS)
        else:
            log.warning("Reading $%s (gunicorn's) as $%s", GUNICORN_ENV_ARGS, ENV_ARGS)
            name = GUNICORN_ENV_ARGS
    tokens: list[str] = []
    try:
        tokens = shlex.split(environ.get(name, ""))
        values, doubt = _command_line(parser, tokens, f"{name}: ", name == ENV_ARGS)
        return values, doubt and ConfigError(f"{name}: {doubt}")
    except (ConfigError, ValueError) as exc:  # ValueError: shlex, e.g. "No closing quotation"
        error = ConfigError(f"{name}: {exc}")
        error.check_config = "--check-config" in tokens
        raise error from None


def _root_path_from_script_name(values: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Without --root-path, SCRIPT_NAME from the environment is the root path: gunicorn reads
    os.environ["SCRIPT_NAME"] for every request, so `-e SCRIPT_NAME=/api`, systemd's
    Environment= or the shell mount the app there. -e wins over the inherited value, as in
    gunicorn, where it is put into os.environ. A malformed -e value is an error; a malformed
    inherited one is only a warning: a variable left in a shell must not stop a server."""
    if "root_path" in values:
        return
    given = env_entries(values.get("raw_env", ())).get("SCRIPT_NAME")
    if given is not None:
        values["root_path"] = validate("root_path", given, "SCRIPT_NAME")
        return
    inherited = environ.get("SCRIPT_NAME")
    if not inherited:
        return
    try:
        values["root_path"] = spec(BY_NAME["root_path"]).parse(inherited)
    except ValueError as exc:
        log.warning("SCRIPT_NAME in the environment is ignored: %s", exc)


def _check_together(cfg: Config, environ: Mapping[str, str]) -> None:
    """Checks that need more than one value or another module: the bind syntax, the PORT
    behind the default bind, a key without a certificate; a umask that leaves files
    writable by any user is only warned about."""
    for address in cfg.bind:
        parse_bind(address)
    if not cfg.bind:
        default_binds(environ)
    if cfg.metrics_bind:
        parse_bind(cfg.metrics_bind, "--metrics-bind")
    if cfg.keyfile and not cfg.certfile:
        raise ConfigError(f"--keyfile: needs --certfile as well, got only {cfg.keyfile!r}")
    if cfg.umask is not None and not cfg.umask & 0o002:
        # gunicorn applies its umask (default 0) only while it creates its unix sockets, so a
        # config written for it may carry `umask = 0`; here it governs every file.
        log.warning("--umask %#o lets any user write the files prefork and the app create "
                    "(logs, the pidfile, the app's files); 0o22 or 0o27 is usual", cfg.umask)


def _flag(f: Field) -> str:
    """The name errors use for a setting: its first long flag."""
    return next(flag for flag in spec(f).flags if flag.startswith("--"))


def _help_line(f: Field) -> str:
    """The short help plus the default, unless the default is "not set" or "flag not given"."""
    info = spec(f)
    unset = info.default_doc is None and default_value(f) is None
    suffix = "" if unset or info.action.startswith("store_") else f" [default: {default_text(f)}]"
    return f"{info.short}{suffix}".replace("%", "%%")

