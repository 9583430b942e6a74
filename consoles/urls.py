"""Staff replay of terminal recordings, under /sessions/recordings/ (labsite/urls.py)."""

from django.urls import path

from consoles import views

urlpatterns = [
    path("<int:pk>/replay/", views.replay, name="recording_replay"),
    path("<int:pk>/cast/", views.cast, name="recording_cast"),
]
