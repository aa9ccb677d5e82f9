"""Views of the test project: plain text, a form behind CSRF protection, a FileResponse."""

import os

from django import forms
from django.conf import settings
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import render


class MessageForm(forms.Form):
    message = forms.CharField(max_length=200)


def hello(request: HttpRequest, name: str) -> HttpResponse:
    return HttpResponse(f"Hello, {name}!\n", content_type="text/plain; charset=utf-8")


def message(request: HttpRequest) -> HttpResponse:
    """GET: the form (with its CSRF token); POST: "Thanks" if it validates. CsrfViewMiddleware
    answers 403 before this view runs when the token is missing or wrong."""
    form = MessageForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        return HttpResponse(f"Thanks for: {form.cleaned_data['message']}\n",
                            content_type="text/plain; charset=utf-8")
    return render(request, "message.html", {"form": form})


def download(request: HttpRequest, name: str) -> FileResponse:
    """A file of the test's directory, the way a static or media view serves one."""
    if "/" in name or name.startswith("."):
        raise Http404(name)
    path = os.path.join(os.environ[settings.FILES_ENV], name)
    if not os.path.isfile(path):
        raise Http404(name)
    return FileResponse(open(path, "rb"), content_type="application/octet-stream")
