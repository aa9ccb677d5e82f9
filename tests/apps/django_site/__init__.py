"""A minimal Django project for tests/test_django.py: settings, URLs, views, WSGI entry point."""
