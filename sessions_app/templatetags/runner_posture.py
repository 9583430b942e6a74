"""`{% unsafe_settings as warnings %}`: the weakening settings in force (runners/posture.py)."""

from __future__ import annotations

from django import template

from runners import posture

register = template.Library()


@register.simple_tag
def unsafe_settings() -> list[str]:
    return posture.unsafe_settings()
