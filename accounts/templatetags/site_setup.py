"""`{% site_setup_notes as notes %}`: what the admin index tells staff is not set up, and so hidden."""

from __future__ import annotations

from django import template
from django.conf import settings

from accounts.github_login import GitHubSetup, github_setup
from jobqueue.queueing import uses_redis

register = template.Library()


@register.simple_tag(takes_context=True)
def site_setup_notes(context: template.Context) -> list[str]:
    notes = []
    setup = github_setup(context.get("request"))
    if setup is GitHubSetup.MISSING:
        notes.append("Signing in with GitHub is off: no GitHub app is set up (GITHUB_CLIENT_ID and "
                     "GITHUB_CLIENT_SECRET, or a social application for GitHub), so the sign-in page shows no "
                     "GitHub button.")
    elif setup is GitHubSetup.AMBIGUOUS:
        notes.append("Signing in with GitHub fails: GitHub is set up more than once (GITHUB_CLIENT_ID and a social "
                     "application, or two social applications). Keep one.")
    if not uses_redis():
        where = "inside the requests" if settings.LAB_EMBEDDED_JOBS == "inline" else "in the web process"
        notes.append(f"Jobs run {where}, not in RQ workers (REDIS_URL is not set), so there is no job queue "
                     "dashboard (Django RQ) to show.")
    return notes
