"""Lab content (descriptions, step bodies) from Markdown to HTML that is safe to show.

Markdown allows raw HTML, so the rendered output is run through nh3 with an allowlist:
scripts, event-handler attributes, styles and non-web URL schemes never reach the page,
whoever wrote the lab. Code blocks are then wrapped with a copy button; the wrapper is
added after sanitizing, so lab content cannot forge the data-* hooks the page's scripts use.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import markdown
import nh3
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from markdown.extensions import Extension
from markdown.preprocessors import Preprocessor
from markdown.treeprocessors import Treeprocessor

ALLOWED_TAGS = frozenset({
    "a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "details", "div", "dl", "dt", "em",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p",
    "pre", "q", "s", "samp", "small", "span", "strong", "sub", "summary", "sup", "table", "tbody",
    "td", "tfoot", "th", "thead", "tr", "ul", "var",
})
ALLOWED_ATTRIBUTES: dict[str, set[str]] = {
    "a": {"href", "title"},
    "abbr": {"title"},
    "code": {"class"},
    "img": {"src", "alt", "title", "width", "height"},
    "ol": {"start"},
    "td": {"align", "colspan", "rowspan"},
    "th": {"align", "colspan", "rowspan", "scope"},
}
URL_SCHEMES = frozenset({"http", "https", "mailto"})
# Removed together with everything inside them, not just unwrapped.
CLEAN_CONTENT_TAGS = frozenset({"script", "style", "iframe", "object", "embed", "template", "noscript"})

_LANGUAGE_CLASS = re.compile(r"^language-[A-Za-z0-9_+#.-]{1,40}$")
_PRE_OPEN = re.compile(r'<pre>(?=(?:<code class="language-([A-Za-z0-9_+#.-]+)">)?)')


class _ShiftHeadings(Treeprocessor):
    """`# Title` in lab content becomes <h2>: the page around it already has the <h1>."""

    def run(self, root: ET.Element) -> None:
        for element in root.iter():
            if element.tag in {"h1", "h2", "h3", "h4", "h5"}:
                element.tag = f"h{int(element.tag[1]) + 1}"


class _ShiftHeadingsExtension(Extension):
    def extendMarkdown(self, md: markdown.Markdown) -> None:
        md.treeprocessors.register(_ShiftHeadings(md), "lab_shift_headings", 5)


class _MarkdownInDetails(Preprocessor):
    """`<details>` blocks (solutions, asides in Killercoda scenarios) hold Markdown, not raw HTML:
    they get markdown="1" for the md_in_html extension (outside code fences only)."""

    OPEN = re.compile(r"<(details|summary)(?=[\s>])(?![^>]*\bmarkdown=)", re.IGNORECASE)
    FENCE = re.compile(r"^\s*(`{3,}|~{3,})")

    @staticmethod
    def _with_markdown(match: re.Match[str]) -> str:
        tag = match.group(1)
        return f'<{tag} markdown="{"span" if tag.lower() == "summary" else "1"}"'

    def run(self, lines: list[str]) -> list[str]:
        fence = ""
        result = []
        for line in lines:
            opening = self.FENCE.match(line)
            if fence:
                if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                    fence = ""
            elif opening:
                fence = opening.group(1)
            else:
                line = self.OPEN.sub(self._with_markdown, line)
            result.append(line)
        return result


class _MarkdownInDetailsExtension(Extension):
    def extendMarkdown(self, md: markdown.Markdown) -> None:
        md.preprocessors.register(_MarkdownInDetails(md), "lab_markdown_in_details", 35)


def _keep_attribute(tag: str, attribute: str, value: str) -> str | None:
    """Only `language-…` classes survive on <code>; they name the fence's language."""
    if tag == "code" and attribute == "class":
        kept = [name for name in value.split() if _LANGUAGE_CLASS.match(name)]
        return kept[0] if kept else None
    return value


def _code_block_open(match: re.Match[str]) -> str:
    language = match.group(1) or ""
    return (
        f'<div class="code-block" data-code-block data-language="{escape(language)}">'
        '<div class="code-actions" data-code-actions>'
        '<button type="button" class="code-copy" data-copy-code aria-label="Copy code" hidden>Copy</button>'
        "</div><pre>"
    )


def _wrap_code_blocks(html: str) -> str:
    # nh3 serialises every <pre> as a bare, balanced tag and escapes any "<pre>" in text,
    # so plain string replacement keeps the markup well formed.
    return _PRE_OPEN.sub(_code_block_open, html).replace("</pre>", "</pre></div>")


def render_markdown(text: str) -> SafeString:
    """Render lab Markdown to sanitized HTML, marked safe for templates."""
    if not text:
        return mark_safe("")
    html = markdown.markdown(
        text,
        extensions=["fenced_code", "tables", "sane_lists", "md_in_html", _ShiftHeadingsExtension(),
                    _MarkdownInDetailsExtension()],
        extension_configs={"tables": {"use_align_attribute": True}},
        output_format="html",
    )
    clean = nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        clean_content_tags=set(CLEAN_CONTENT_TAGS),
        attributes=ALLOWED_ATTRIBUTES,
        attribute_filter=_keep_attribute,
        url_schemes=set(URL_SCHEMES | ACTION_URL_SCHEMES),
        link_rel="noopener noreferrer",
        strip_comments=True,
    )
    return mark_safe(mark_lab_actions(_wrap_code_blocks(clean)))  # noqa: S308 (sanitized by nh3 above)


# ---- lab actions: click-to-run / click-to-copy blocks and links to the session's web preview ----
#
# Written by lab authors (and by labs/killercoda.py when it converts Killercoda's {{exec}},
# {{exec interrupt}}, {{copy}} and {{TRAFFIC_HOST1_<port>}}):
#
#   ```exec            a block the session page can send to the terminal (data-action="exec")
#   ```exec-interrupt  the same, interrupting what runs first (Ctrl-C)   (data-action="exec-interrupt")
#   ```copy            a block meant to be copied                         (data-action="copy")
#   [app](preview:8080/path)  a link to the session's web preview of port 8080
#
# The hooks are added after sanitizing, like the code-block wrapper. A preview link becomes the
# *relative* link "preview/8080/path" plus data-preview-port: on the session page
# (/sessions/<id>/) the browser resolves it to /sessions/<id>/preview/8080/path by itself.

ACTION_LANGUAGES = ("exec", "exec-interrupt", "copy")
ACTION_URL_SCHEMES = frozenset({"preview"})  # let nh3 keep preview: URLs for mark_lab_actions
_ACTION_BLOCK = re.compile(
    r'<div class="code-block" data-code-block data-language="(' + "|".join(ACTION_LANGUAGES) + r')">'
)
# Only inside <a> and <img> tags: text never holds a raw "<", so code that shows such markup is left alone.
_PREVIEW_URL = re.compile(r'(<(?:a|img)\s[^>]*?)\b(href|src)="preview:([^"]*)"')
_PREVIEW_TARGET = re.compile(r"^(\d{1,5})(/[^\s]*)?$")


def _preview_attribute(match: re.Match[str]) -> str:
    before, attribute, target = match.group(1), match.group(2), match.group(3)
    parsed = _PREVIEW_TARGET.match(target)
    if not parsed or not 1 <= int(parsed.group(1)) <= 65535:
        return f'{before}{attribute}="#"'  # not a port: a dead link rather than an unknown scheme
    port, path = int(parsed.group(1)), (parsed.group(2) or "/").lstrip("/")
    hook = f' data-preview-port="{port}"' if attribute == "href" else ""
    return f'{before}{attribute}="preview/{port}/{path}"{hook}'


def mark_lab_actions(html: str) -> str:
    """Add data-action to exec/exec-interrupt/copy blocks and turn preview: URLs into preview links."""
    html = _ACTION_BLOCK.sub(
        lambda m: f'<div class="code-block" data-code-block data-language="" data-action="{m.group(1)}">', html
    )
    return _PREVIEW_URL.sub(_preview_attribute, html)
