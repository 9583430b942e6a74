"""Admin for the judge app.

The judge keeps its checks on Lab.judge (edited in the lab admin). Any model the app defines
gets a plain admin here until it needs a tailored one, so nothing is left out of the admin.
"""

from __future__ import annotations

from django.apps import apps
from django.contrib import admin

for _model in apps.get_app_config("judge").get_models():
    if not admin.site.is_registered(_model):
        admin.site.register(_model)
