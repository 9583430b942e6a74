"""`{% load lab_markdown %}` then `{{ lab.description|markdown }}`: sanitized HTML from lab Markdown.

`{{ step.foreground_script|foreground_block }}`: a step's foreground script as a click-to-run block.
"""

from __future__ import annotations

import re

from django import template
from django.utils.safestring import SafeString

from labs.markdown import render_markdown

register = template.Library()


@register.filter(name="markdown")
def markdown_filter(text: str | None) -> SafeString:
    return render_markdown(str(text) if text is not None else "")


@register.filter(name="foreground_block")
def foreground_block(script: str | None) -> SafeString:
    """The script as an ``exec`` block (labs/markdown.py): the learner sends it to the terminal.

    Its ``#!`` line is dropped: typed into a shell it is only a comment.
    """
    text = str(script or "").replace("\r\n", "\n").strip("\n")
    if text.startswith("#!"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
    if not text.strip():
        return render_markdown("")
    fence = "`" * max(3, max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return render_markdown(f"{fence}exec\n{text}\n{fence}\n")
