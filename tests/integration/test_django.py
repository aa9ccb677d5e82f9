"""A real Django project under ``prefork -w 2``: views, a CSRF-protected form, FileResponse
and the admin (with its SQLite database), held to the same answers as Werkzeug's development
server (``run_simple``) gives for the same project.

The project lives in tests/apps/django_site/; its database is a temporary SQLite file named by
$DJANGO_SITE_DB, migrated (and given an admin user) once for this module.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from conftest import APPS, Server, base_env, launch, prefork_command

APP = "django_site.wsgi:application"
SETTINGS = "django_site.settings"
MEDIUM = "medium.bin"
ADMIN_USER, ADMIN_PASSWORD = "admin", "correct horse battery staple"
CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@pytest.fixture(scope="module")
def site_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A migrated SQLite database with one admin user, and a directory of files to serve."""
    directory = tmp_path_factory.mktemp("django-site")
    (directory / MEDIUM).write_bytes(os.urandom(3 << 20))
    env = {"DJANGO_SITE_DB": str(directory / "db.sqlite3"), "DJANGO_SITE_FILES": str(directory),
           "DJANGO_SETTINGS_MODULE": SETTINGS}
    manage = [sys.executable, "-m", "django"]
    for command in (["migrate", "--noinput", "-v", "0"],
                    ["createsuperuser", "--noinput", "--username", ADMIN_USER,
                     "--email", "admin@example.com"]):
        result = subprocess.run([*manage, *command], cwd=APPS, capture_output=True, text=True,
                                timeout=120, env=base_env(DJANGO_SUPERUSER_PASSWORD=ADMIN_PASSWORD,
                                                          **env))
        assert result.returncode == 0, result.stderr
    return env


@pytest.fixture(scope="module")
def prefork(site_env: dict[str, str]) -> Iterator[Server]:
    log = Path(site_env["DJANGO_SITE_FILES"]) / "prefork.log"
    server = launch(prefork_command("-w", "2", APP), log, site_env, "PREFORK_FD")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def werkzeug(site_env: dict[str, str]) -> Iterator[Server]:
    log = Path(site_env["DJANGO_SITE_FILES"]) / "werkzeug.log"
    server = launch([sys.executable, "werkzeug_runner.py", APP], log,
                    {**site_env, "WERKZEUG_RUN_MAIN": "true"}, "WERKZEUG_SERVER_FD")
    yield server
    server.stop()


def test_view_with_percent_encoded_path(prefork: Server) -> None:
    response = prefork.get("/hello/caf%C3%A9/")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.text == "Hello, café!\n"


def test_append_slash_redirect(prefork: Server) -> None:
    response = prefork.get("/hello/world", allow_redirects=False)
    assert response.status_code == 301
    assert response.headers["Location"] == "/hello/world/"


def _form_and_token(session: requests.Session, server: Server) -> str:
    form = session.get(server.url + "/message/", timeout=10)
    assert form.status_code == 200
    assert "csrftoken" in session.cookies
    field = CSRF_FIELD.search(form.text)
    assert field is not None, form.text
    return field.group(1)


def test_form_post_with_csrf_token_succeeds(prefork: Server) -> None:
    with requests.Session() as session:
        token = _form_and_token(session, prefork)
        response = session.post(prefork.url + "/message/",
                                data={"csrfmiddlewaretoken": token, "message": "héllo"}, timeout=10)
    assert response.status_code == 200
    assert response.text == "Thanks for: héllo\n"


@pytest.mark.parametrize("token", [None, "x" * 64], ids=["no-token", "wrong-token"])
def test_form_post_without_valid_csrf_token_is_403(prefork: Server, token: str | None) -> None:
    with requests.Session() as session:
        _form_and_token(session, prefork)  # the cookie is there; the field is missing or wrong
        data = {"message": "hi"} if token is None else {"message": "hi", "csrfmiddlewaretoken": token}
        response = session.post(prefork.url + "/message/", data=data, timeout=10)
    assert response.status_code == 403
    assert "CSRF verification failed" in response.text


def test_file_response(prefork: Server, site_env: dict[str, str]) -> None:
    expected = (Path(site_env["DJANGO_SITE_FILES"]) / MEDIUM).read_bytes()
    response = prefork.get("/file/" + MEDIUM, timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(len(expected))
    assert response.headers["Content-Disposition"] == 'inline; filename="medium.bin"'
    assert response.content == expected


def test_admin_login_page_renders(prefork: Server) -> None:
    response = prefork.get("/admin/login/")
    assert response.status_code == 200
    assert '<form action="/admin/login/" method="post" id="login-form">' in response.text
    for field in ('name="username"', 'name="password"', 'name="csrfmiddlewaretoken"'):
        assert field in response.text


def test_admin_login_uses_the_database(prefork: Server) -> None:
    """The login form checks the password against the SQLite user table and stores the
    session there: a worker reads and writes the database."""
    with requests.Session() as session:
        page = session.get(prefork.url + "/admin/login/", timeout=10)
        token = CSRF_FIELD.search(page.text).group(1)  # type: ignore[union-attr]
        wrong = session.post(prefork.url + "/admin/login/", timeout=10, data={
            "csrfmiddlewaretoken": token, "username": ADMIN_USER, "password": "wrong"})
        assert wrong.status_code == 200
        assert "Please enter the correct username and password" in wrong.text
        right = session.post(prefork.url + "/admin/login/?next=/admin/", timeout=10,
                             allow_redirects=False, data={
                                 "csrfmiddlewaretoken": token, "username": ADMIN_USER,
                                 "password": ADMIN_PASSWORD})
        assert right.status_code == 302
        assert right.headers["Location"] == "/admin/"
        index = session.get(prefork.url + "/admin/", timeout=10)
    assert index.status_code == 200
    assert "Site administration" in index.text


# -- the same answers as Werkzeug's development server ---------------------------------------

# Headers the two servers legitimately differ on, left out of the comparison:
#   Date, Server            - each server's own;
#   Content-Length, Transfer-Encoding, Connection, Keep-Alive
#                           - framing: Werkzeug's dev server closes every connection, prefork
#                             keeps them alive; the body bytes are compared instead;
#   Expires                 - the admin's never_cache sets it to "now".
# And values that are random or time-dependent per response, masked in both:
#   the CSRF cookie's token and expiry date, the form's csrfmiddlewaretoken field.
NOT_COMPARED = frozenset({"date", "server", "content-length", "transfer-encoding", "connection",
                          "keep-alive", "expires"})
MASKS = [
    (re.compile(r"csrftoken=[^;]+"), "csrftoken=<token>"),
    (re.compile(r"expires=[^;]+"), "expires=<date>"),
]
COMPARED_REQUESTS = [
    ("GET", "/hello/world/", {}),
    ("GET", "/hello/caf%C3%A9/", {}),
    ("GET", "/hello/world", {}),
    ("GET", "/no/such/page/", {}),
    ("GET", "/file/" + MEDIUM, {}),
    ("HEAD", "/file/" + MEDIUM, {}),
    ("GET", "/file/missing.bin", {}),
    ("GET", "/message/", {}),
    ("POST", "/message/", {"data": {"message": "no token"}}),
    ("GET", "/admin/", {}),
    ("GET", "/admin/login/", {}),
    ("GET", "/admin/login/?next=/admin/auth/user/", {}),
]


def _answer(base: str, method: str, path: str,
            kwargs: dict) -> tuple[int, list[tuple[str, str]], bytes]:
    with requests.Session() as session:
        response = session.request(method, base + path, allow_redirects=False, timeout=30,
                                   **kwargs)
    headers = []
    for name, value in response.raw.headers.items():
        if name.lower() not in NOT_COMPARED:
            for pattern, mask in MASKS:
                value = pattern.sub(mask, value)
            headers.append((name.lower(), value))
    body = CSRF_FIELD.sub('name="csrfmiddlewaretoken" value="<token>"',
                          response.content.decode("latin-1")).encode("latin-1")
    return response.status_code, sorted(headers), body


@pytest.mark.parametrize(("method", "path", "kwargs"), COMPARED_REQUESTS,
                         ids=[f"{m} {p}" for m, p, _ in COMPARED_REQUESTS])
def test_same_answer_as_werkzeug(prefork: Server, werkzeug: Server, method: str, path: str,
                                 kwargs: dict) -> None:
    got = _answer(prefork.url, method, path, kwargs)
    expected = _answer(werkzeug.url, method, path, kwargs)
    assert got[0] == expected[0]
    assert got[1] == expected[1]
    assert got[2] == expected[2]
