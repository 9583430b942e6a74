"""`{% load lab_markdown %}` then `{{ lab.description|markdown }}`: sanitized HTML from lab Markdown.
"""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from labs.markdown import render_markdown

register = template.Library()


@register.filter(name="markdown")
def markdown_filter(text: str | None) -> SafeString:
    return render_markdown(str(text) if text is not None else "")
