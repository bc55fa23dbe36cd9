"""CSS inlining for templates (css-inline): what is inlined, what stays, and when it gives up."""

from __future__ import annotations

from pathlib import Path

from mailgate_common.db.models import Template
from mailgate_common.templates import apply
from mailgate_common.templates.css import MAX_NESTING, inline_css, nesting

PAGE = ("<html><head><style>p { color: red } .big { font-size: 20px }"
        " @media (max-width: 600px) { p { color: blue } }</style></head>"
        '<body><p class="big" style="margin: 0">Hi</p></body></html>')


def test_rules_become_style_attributes_and_media_queries_stay_in_a_style_block() -> None:
    out = inline_css(PAGE)
    assert out.error is None
    assert '<p class="big" style="color: red;font-size: 20px;margin: 0">Hi</p>' in out.html
    assert "<style>@media (max-width: 600px) { p { color: blue } }" in out.html
    assert ".big {" not in out.html  # inlined rules leave the style block


def test_stylesheets_are_never_loaded(tmp_path: Path) -> None:
    local = tmp_path / "evil.css"
    local.write_text("p { color: green }")
    for href in (str(local), f"file://{local}", "http://127.0.0.1:9/evil.css"):
        out = inline_css(f'<link rel="stylesheet" href="{href}"><p>x</p>')
        assert out.error is None and "green" not in out.html and "<p>x</p>" in out.html


def test_a_css_error_keeps_the_html_as_it_was() -> None:
    broken = '<style>p { color: red }</style><p style="{">x</p>'
    out = inline_css(broken)
    assert out.html == broken
    assert out.error is not None and out.error.startswith("CSS could not be inlined")


def test_deep_nesting_is_refused_before_it_can_overflow_the_stack() -> None:
    # css-inline segfaults near 20,000 levels: this must come back, un-inlined.
    deep = "<style>p{color:red}</style>" + "<div>" * 30_000 + "x"
    out = inline_css(deep)
    assert out.html == deep and out.error is not None and "nest deeper" in out.error


def test_nesting_counts_what_a_browser_builds() -> None:
    # End tags a browser infers (td, li, p) do not pile up; stray end tags close nothing.
    table = "<table>" + "<tr><td>a<td>b" * 2000 + "</table>"
    assert nesting(table) <= 4
    assert nesting("<ul>" + "<li>x" * 2000 + "</ul>" + "<p>y" * 2000) <= 2
    assert nesting("<div></span>" * 2000) > MAX_NESTING
    # An end tag the parser ignores (div is out of the cell's scope) does not hide the nesting.
    assert nesting("<div><table><td></div>" * 600) > MAX_NESTING


def _template(inline: bool, html: str) -> Template:
    return Template(id="t", account_id=None, name="n", format="html", inline_css=inline,
                    content={"subject": "S {{params.v}}", "html": html, "previewText": "Soon"})


def test_fill_inlines_rendered_html_then_adds_the_preheader() -> None:
    ctx = apply.context(params={"v": "1", "color": "red"}, account_name="A", account_email="a@x.test",
                        service_url=None, rcpt_address="r@x.test", rcpt_name=None)
    html = "<style>b { color: {{params.color}} }</style><body><b>{{rcpt.address}}</b></body>"
    filled = apply.fill({}, _template(True, html), fmt=None, render_parts_too=False, ctx=ctx)
    assert filled.subject == "S 1" and filled.css_error is None
    assert filled.html is not None
    assert '<b style="color: red;">r@x.test</b>' in filled.html
    # The preheader's own hiding styles are not touched by the template's CSS.
    assert '<body>\n<!--[if !gte mso 9]><!----><div style="display:none !important;' in filled.html

    plain = apply.fill({}, _template(False, html), fmt=None, render_parts_too=False, ctx=ctx)
    assert plain.html is not None and "<style>b { color: red }</style>" in plain.html


def test_fill_reports_a_css_failure_and_sends_the_rendered_html() -> None:
    ctx = apply.context(params={"s": "{"}, account_name=None, account_email=None, service_url=None)
    html = '<style>p { color: red }</style><p style="{{params.s}}">x</p>'
    filled = apply.fill({}, _template(True, html), fmt=None, render_parts_too=False, ctx=ctx)
    assert filled.css_error is not None
    assert filled.html is not None and '<style>p { color: red }</style><p style="{">x</p>' in filled.html
