"""URLs of the test project."""

from django.contrib import admin
from django.urls import path

from . import views

urlpatterns = [
    path("hello/<str:name>/", views.hello),
    path("message/", views.message),
    path("file/<str:name>", views.download),
    path("admin/", admin.site.urls),
]
