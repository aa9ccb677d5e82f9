"""Loading APP: every spec form, every failure as one line that says where to look, and the
sys.path / --chdir preparation. Modules are real files in tmp_path."""

import os
import sys
import textwrap

import pytest

from prefork.config.appload import AppLoadError, load_app, prepare_sys_path
from prefork.config.settings import Config, ConfigError


@pytest.fixture
def modules(tmp_path, monkeypatch):
    """write(name, source) creates tmp_path/name.py (or a package for dotted names), importable
    at once; imported modules from tmp_path are dropped from sys.modules afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name, source):
        *packages, leaf = name.split(".")
        directory = tmp_path.joinpath(*packages)
        directory.mkdir(parents=True, exist_ok=True)
        for depth in range(1, len(packages) + 1):
            tmp_path.joinpath(*packages[:depth], "__init__.py").touch()
        (directory / f"{leaf}.py").write_text(textwrap.dedent(source))

    yield write
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


APP_SOURCE = textwrap.dedent("""
    def application(environ, start_response):
        return "application"

    def other(environ, start_response):
        return "other"

    class Server:
        def wsgi(self, environ, start_response):
            return "server.wsgi"

    server = Server()

    def make(name="made", times=1, **extra):
        def app(environ, start_response):
            return name * times + "".join(f",{k}={v!r}" for k, v in sorted(extra.items()))
        return app
""")

FORMS = [
    # spec, what the loaded application returns
    ("pfa_app", "application"),
    ("pfa_app:application", "application"),
    ("pfa_app:other", "other"),
    ("pfa_app:server.wsgi", "server.wsgi"),
    ("pfa_app:make()", "made"),
    ("pfa_app:make('x', 3)", "xxx"),
    ("pfa_app:make(name='y', debug=False, ports=[1, 2])", "y,debug=False,ports=[1, 2]"),
    ("  pfa_app:make ( 'z' )  ", "z"),
    ("pfa_pkg.web:application", "application"),
]


@pytest.mark.parametrize(("spec", "returns"), FORMS, ids=[case[0].strip() for case in FORMS])
def test_every_spec_form_loads(modules, spec, returns):
    modules("pfa_app", APP_SOURCE)
    modules("pfa_pkg.web", APP_SOURCE)
    assert load_app(spec)(None, None) == returns


def test_bare_module_falls_back_to_app(modules):
    modules("pfa_flask_style", "def app(environ, start_response):\n    return 'app'\n")
    assert load_app("pfa_flask_style")(None, None) == "app"


FAILURES = [
    # {module: source}, spec, exact message
    ({}, "pfa_missing:app",
     "cannot import 'pfa_missing': No module named 'pfa_missing' (not in {cwd} nor on sys.path; "
     "see --chdir, --pythonpath)"),
    ({}, "pfa_nopkg.web:app",
     "cannot import 'pfa_nopkg.web': No module named 'pfa_nopkg' (not in {cwd} nor on sys.path; "
     "see --chdir, --pythonpath)"),
    ({"pfa_pkg.other": ""}, "pfa_pkg.web:app",
     "cannot import 'pfa_pkg.web': No module named 'pfa_pkg.web' (not in {cwd} nor on sys.path; "
     "see --chdir, --pythonpath)"),
    ({"pfa_dep": "import os\nimport pfa_not_installed_dependency\n"}, "pfa_dep:app",
     "pfa_dep.py:2: ModuleNotFoundError: No module named 'pfa_not_installed_dependency'"),
    ({"pfa_syntax": "def application(environ, start_response):\n    return [b'x'\n\nx = 1\n"},
     "pfa_syntax:application", "pfa_syntax.py:2: SyntaxError: '[' was never closed"),
    ({"pfa_outer": "import pfa_inner\n", "pfa_inner": "x = 1\n\nraise RuntimeError('no DB')\n"},
     "pfa_outer:app", "pfa_inner.py:3: RuntimeError: no DB"),
    ({"pfa_json": "import json\nsettings = json.loads('{')\n"}, "pfa_json:app",
     "pfa_json.py:2: JSONDecodeError: Expecting property name enclosed in double quotes: "
     "line 1 column 2 (char 1)"),
    ({"pfa_app": APP_SOURCE}, "pfa_app:nope",
     "'pfa_app:nope': module 'pfa_app' has no attribute 'nope'"),
    ({"pfa_app": APP_SOURCE}, "pfa_app:server.nope",
     "'pfa_app:server.nope': 'server' has no attribute 'nope'"),
    ({"pfa_app": APP_SOURCE}, "pfa_app:server", "'pfa_app:server' is not callable"),
    ({"pfa_app": APP_SOURCE}, "pfa_app:nope()",
     "'pfa_app:nope()': module 'pfa_app' has no attribute 'nope'"),
    ({"pfa_app": APP_SOURCE + "\nnumber = 5\n"}, "pfa_app:number()",
     "'pfa_app:number()': 'number' is not callable"),
    ({"pfa_empty": "x = 1\n"}, "pfa_empty",
     "'pfa_empty': module 'pfa_empty' has no attribute 'application' or 'app'; "
     "name it: 'pfa_empty:NAME'"),
    ({"pfa_none": "application = None\n"}, "pfa_none", "'pfa_none:application' is not callable"),
    ({"pfa_factory": "def make():\n    settings = {}\n    return settings['DB']\n"},
     "pfa_factory:make()", "'pfa_factory:make()' failed: pfa_factory.py:3: KeyError: 'DB'"),
    ({"pfa_factory": "def make():\n    return None\n"}, "pfa_factory:make()",
     "'pfa_factory:make()' returned NoneType, which is not callable"),
    ({"pfa_factory": "def make():\n    pass\n"}, "pfa_factory:make(1)",
     "'pfa_factory:make(1)' failed: TypeError: make() takes 0 positional arguments but 1 was "
     "given"),
    ({"pfa_app": APP_SOURCE}, "pfa_app:make(name)",
     "invalid application 'pfa_app:make(name)': factory arguments must be literals "
     "(strings, numbers, lists, ...)"),
    ({"pfa_app": APP_SOURCE}, "pfa_app:make(*[1])",
     "invalid application 'pfa_app:make(*[1])': no *args or **kwargs"),
    ({"pfa_app": APP_SOURCE}, "pfa_app:make(**{})",
     "invalid application 'pfa_app:make(**{})': no *args or **kwargs"),
    ({"pfa_app": APP_SOURCE}, "pfa_app:1 + 2",
     "invalid application 'pfa_app:1 + 2': expected NAME, NAME.ATTR or FACTORY(ARGS) after ':'"),
    ({"pfa_app": APP_SOURCE}, "pfa_app:make(",
     "invalid application 'pfa_app:make(': cannot parse 'make('"),
    ({}, "pfa_app:", "invalid application 'pfa_app:': nothing after ':'"),
    ({}, "", "invalid application '': '' is not a module name"),
    ({}, "my-app:app", "invalid application 'my-app:app': 'my-app' is not a module name"),
    ({}, "app.py:app",
     "invalid application 'app.py:app': give a module, not a file (e.g. 'app:app')"),
    ({}, "src/app.py", "invalid application 'src/app.py': give a module, not a file "
                       "(e.g. 'src.app:app')"),
]


@pytest.mark.parametrize(("files", "spec", "message"), FAILURES,
                         ids=[case[2][:60] for case in FAILURES])
def test_failures_are_one_line_saying_where(modules, tmp_path, files, spec, message):
    for name, source in files.items():
        modules(name, source)
    with pytest.raises(AppLoadError) as caught:
        load_app(spec)
    assert str(caught.value) == message.replace("{cwd}", str(tmp_path))
    assert "\n" not in str(caught.value)


def test_factory_arguments_are_never_evaluated(modules, tmp_path):
    modules("pfa_app", APP_SOURCE)
    with pytest.raises(AppLoadError, match="factory arguments must be literals"):
        load_app("pfa_app:make(__import__('pathlib').Path('EVALUATED').touch())")
    assert not (tmp_path / "EVALUATED").exists()


def test_import_errors_keep_the_original_exception_for_the_debug_log(modules):
    modules("pfa_outer", "import pfa_inner\n")
    modules("pfa_inner", "raise RuntimeError('no DB')\n")
    with pytest.raises(AppLoadError) as caught:
        load_app("pfa_outer")
    assert isinstance(caught.value.__cause__, RuntimeError)


@pytest.fixture
def saved_sys_path(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)  # restores the working directory afterwards


def test_prepare_sys_path_applies_chdir_and_pythonpath_in_order(tmp_path, saved_sys_path):
    project = tmp_path / "project"
    (project / "lib").mkdir(parents=True)
    (tmp_path / "vendor").mkdir()
    cfg = Config(chdir=str(project), pythonpath="lib, ../vendor,")
    prepare_sys_path(cfg)
    expected = [str(tmp_path / "vendor"), str(project / "lib"), str(project)]  # gunicorn's order
    assert os.getcwd() == str(project)
    assert sys.path[:3] == expected
    length = len(sys.path)
    prepare_sys_path(Config(pythonpath="lib,../vendor"))  # a reload: no duplicates
    assert sys.path[:3] == expected and len(sys.path) == length


def test_prepare_sys_path_lets_the_project_shadow_installed_modules(tmp_path, saved_sys_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "pfa_shadow.py").write_text("def app(environ, start_response):\n    return 'mine'\n")
    sys.path.append(str(tmp_path))  # somewhere later on the path, as an installed package would
    prepare_sys_path(Config(chdir=str(project)))
    try:
        assert load_app("pfa_shadow:app")(None, None) == "mine"
    finally:
        sys.modules.pop("pfa_shadow", None)


@pytest.mark.parametrize(("cfg", "message"), [
    (Config(chdir="missing-dir"),
     "--chdir: cannot change to 'missing-dir': No such file or directory"),
    (Config(chdir="a-file"), "--chdir: cannot change to 'a-file': Not a directory"),
    (Config(pythonpath="lib,missing-lib"), "--pythonpath: no such directory 'missing-lib'"),
])
def test_prepare_sys_path_errors_name_the_setting(tmp_path, saved_sys_path, cfg, message):
    (tmp_path / "a-file").touch()
    (tmp_path / "lib").mkdir()
    with pytest.raises(ConfigError) as caught:
        prepare_sys_path(cfg)
    assert str(caught.value) == message
