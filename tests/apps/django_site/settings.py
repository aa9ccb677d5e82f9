"""Settings of the test project: production-like (DEBUG off, CSRF and sessions on, the admin),
SQLite in the file named by $DJANGO_SITE_DB (the test's temporary directory), and files for
FileResponse from the directory in $DJANGO_SITE_FILES."""

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

DB_ENV = "DJANGO_SITE_DB"
FILES_ENV = "DJANGO_SITE_FILES"

if not os.environ.get(DB_ENV):
    raise ImproperlyConfigured(f"set ${DB_ENV} to the SQLite file the test project may use")

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "tests-only, not a secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "django_site.urls"
WSGI_APPLICATION = "django_site.wsgi.application"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [BASE_DIR / "templates"],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ[DB_ENV]}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
STATIC_URL = "static/"
