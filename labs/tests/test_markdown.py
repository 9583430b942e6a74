"""Lab Markdown is rendered, then sanitized: nothing a lab author writes can run in the page."""

from __future__ import annotations

import pytest
from django.template import Context, Template
from django.utils.safestring import SafeString

from labs.markdown import render_markdown


def test_normal_markdown_is_rendered() -> None:
    html = render_markdown(
        "# Title\n\nSome **bold** and *italic* text with `code`.\n\n"
        "- one\n- two\n\n"
        "3. three\n4. four\n\n"
        "| Command | Does |\n|:--|--:|\n| `ls` | lists |\n\n"
        "> quoted\n\n"
        "[docs](https://example.com/docs) and [mail](mailto:help@example.com) and [page](/labs/)\n"
    )
    assert isinstance(html, SafeString)
    assert "<h2>Title</h2>" in html  # headings shift down one level: the page owns the <h1>
    assert "<strong>bold</strong>" in html and "<em>italic</em>" in html
    assert "<code>code</code>" in html
    assert "<ul>\n<li>one</li>" in html
    assert '<ol start="3">' in html  # sane_lists keeps the start number
    assert '<th align="left">Command</th>' in html and '<td align="right">lists</td>' in html
    assert "<blockquote>" in html
    assert '<a href="https://example.com/docs" rel="noopener noreferrer">docs</a>' in html
    assert 'href="mailto:help@example.com"' in html
    assert 'href="/labs/"' in html


def test_fenced_code_gets_a_copy_button_and_keeps_its_language() -> None:
    html = render_markdown("```bash\necho \"<b>hi</b>\" && ls\n```\n")
    assert '<div class="code-block" data-code-block data-language="bash">' in html
    assert "data-copy-code" in html
    assert "data-code-actions" in html
    assert '<pre><code class="language-bash">echo "&lt;b&gt;hi&lt;/b&gt;" &amp;&amp; ls' in html
    assert html.count("<pre>") == html.count("</pre>") == 1
    assert html.count("<div") == html.count("</div>")


def test_script_tag_is_removed_with_its_content() -> None:
    html = render_markdown("Hello\n\n<script>alert('owned')</script>\n\n<p>after<script>steal()</script></p>")
    assert "<script" not in html.lower()
    assert "alert" not in html and "steal" not in html
    assert "Hello" in html and "after" in html


@pytest.mark.parametrize(
    "source",
    [
        "[click](javascript:alert(1))",
        "[click](JaVaScRiPt:alert(1))",
        '<a href="javascript:alert(1)">click</a>',
        '<a href="java&#x09;script:alert(1)">click</a>',
        '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">click</a>',
        "[click](vbscript:msgbox(1))",
    ],
)
def test_dangerous_link_schemes_lose_their_href(source: str) -> None:
    html = render_markdown(source)
    assert "click" in html
    assert "href" not in html
    assert "javascript" not in html.lower() and "data:" not in html


@pytest.mark.parametrize(
    "source",
    [
        "<img src=x onerror=alert(1)>",
        '<img src="x" onerror="alert(1)">',
        '<p onclick="alert(1)">text</p>',
        '<div onmouseover="alert(1)" style="position:fixed">text</div>',
        "<svg onload=alert(1)><circle/></svg>",
        '<details open ontoggle="alert(1)"><summary>s</summary></details>',
    ],
)
def test_event_handler_attributes_are_stripped(source: str) -> None:
    html = render_markdown(source)
    assert "alert" not in html
    assert " on" not in html.lower()
    assert "style=" not in html


def test_embedding_and_form_tags_are_dropped() -> None:
    html = render_markdown(
        '<iframe src="https://evil.example"></iframe><object data="x"></object>'
        '<form action="https://evil.example"><input name="password"><button>Go</button></form>'
        "<style>body{display:none}</style><!-- hidden comment -->"
    )
    for needle in ("<iframe", "<object", "<form", "<input", "<button", "<style", "display:none", "hidden comment"):
        assert needle not in html


def test_authors_cannot_forge_the_code_block_hooks() -> None:
    html = render_markdown('<div data-code-block data-run="rm -rf /"><button data-copy-code>x</button></div>')
    assert "data-code-block" not in html
    assert "data-run" not in html
    assert "<button" not in html


def test_only_language_classes_survive() -> None:
    html = render_markdown('<code class="language-python evil">x</code><span class="hidden">y</span>')
    assert '<code class="language-python">' in html
    assert "evil" not in html and "hidden" not in html


def test_empty_text_renders_nothing() -> None:
    assert render_markdown("") == ""


def test_template_filter() -> None:
    template = Template("{% load lab_markdown %}{{ text|markdown }}")
    html = template.render(Context({"text": "Run `ls`\n\n<script>alert(1)</script>"}))
    assert "<p>Run <code>ls</code></p>" in html
    assert "script" not in html
    assert Template("{% load lab_markdown %}[{{ missing|markdown }}]").render(Context({})) == "[]"
