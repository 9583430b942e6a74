"""Judge URLs, included under sessions/<uuid:pk>/judge/ (labsite/urls.py)."""

from django.urls import path

from judge import views

app_name = "judge"

urlpatterns = [
    path("", views.attempt_history, name="attempts"),
    path("steps/<int:step_id>/", views.step_box, name="step"),
    path("steps/<int:step_id>/check/", views.check_step, name="check_step"),
    path("final/", views.final_box, name="final"),
    path("final/check/", views.check_final, name="check_final"),
    path("attempts/<int:attempt_id>/", views.attempt_status, name="attempt"),
]
