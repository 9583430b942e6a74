"""A learner's attempts across all their sessions and labs, under /attempts/ (labsite/urls.py)."""

from django.urls import path

from judge import views

app_name = "attempts"

urlpatterns = [
    path("", views.my_attempts, name="mine"),
]
