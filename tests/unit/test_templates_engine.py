"""The template engine's own contract: errors name the part, limits, data safety, variables()."""

from __future__ import annotations

from typing import Any

import pytest

from mailgate_common import templates
from mailgate_common.templates import Content, Rendered, RenderError, check, render, variables

CTX: dict[str, Any] = {"params": {"name": "<Ann>", "items": [{"n": 1}, {"n": 2}]}, "account": {"name": "A"}}


@pytest.mark.parametrize(
    ("content", "part", "needle"),
    [
        (Content(subject="{{#if params.name}}x", text=None, html=None), "subject", "unclosed"),
        (Content(subject=None, text="{{shout params.name}}", html=None), "text", "shout"),
        (Content(subject=None, text=None, html="{{#each params.items}}{{/with}}"), "html", "with"),
        (Content(subject=None, text=None, html="{{#if (shout x)}}y{{/if}}"), "html", "shout"),
        (Content(subject=None, text=None, html="{{> header}}"), "html", "partial"),
        (Content(subject="ok", text="ok", html="ok", preview_text="{{#unless x}}"), "previewText", "unclosed"),
    ],
)
def test_check_and_render_name_the_failing_part(content: Content, part: str, needle: str) -> None:
    with pytest.raises(RenderError) as checked:
        check(content)
    assert checked.value.part == part
    assert needle in checked.value.message
    assert str(checked.value).startswith(f"Failed rendering {part} template: ")
    with pytest.raises(RenderError) as rendered:
        render(content, "html", CTX)
    assert rendered.value.part == part


def test_check_accepts_every_helper_and_builtin() -> None:
    check(
        Content(
            subject="{{formatDate params.ts 'YYYY'}} {{insert params.name 'default=x'}} {{length params.items}}",
            text="{{#equals a 1}}{{/equals}}{{#notEquals a 1}}{{/notEquals}}{{#greaterThan a 1}}{{/greaterThan}}"
            "{{#lessThan a 1}}{{/lessThan}}{{#and a b}}{{/and}}{{#or a b}}{{/or}}",
            html="{{#each x}}{{lookup ../y @index}}{{else}}{{/each}}{{#with x}}{{/with}}{{#unless x}}{{/unless}}",
        )
    )


def test_runtime_helper_errors_name_the_part() -> None:
    with pytest.raises(RenderError) as info:
        render(Content(subject=None, text="{{equals params.name 1}}", html=None), "html", CTX)
    assert info.value.part == "text"
    assert "block helper" in info.value.message
    with pytest.raises(RenderError) as info:
        render(Content(subject="{{length params.name}}", text=None, html=None), "html", CTX)
    assert info.value.part == "subject"


def test_subject_and_text_are_not_escaped_html_is_and_markdown_renders() -> None:
    content = Content(subject="Hi {{params.name}}", text="Hi {{params.name}}", html="# Hi {{params.name}}")
    assert render(content, "html", CTX) == Rendered(subject="Hi <Ann>", text="Hi <Ann>", html="# Hi &lt;Ann&gt;")
    assert render(content, "markdown", CTX).html == "<h1>Hi &lt;Ann&gt;</h1>\n"
    assert render(Content(subject=None, text=None, html=None), "html", CTX) == Rendered(None, None, None)


def test_preview_text_is_rendered_but_not_returned() -> None:
    out = render(Content(subject="s", text=None, html=None, preview_text="{{params.name}}"), "html", CTX)
    assert out == Rendered(subject="s", text=None, html=None)


def test_only_dict_and_list_data_is_reachable() -> None:
    class Secret:
        password = "hunter2"

        def __str__(self) -> str:
            return "secret-object"

    ctx = {"params": {"items": [1], "s": "x", "obj": Secret(), "d": {"k": "v"}}}
    html = (
        "[{{params.items.__len__}}][{{params.s.upper}}][{{params.obj.password}}][{{params.d.__class__}}]"
        "[{{params.d.items}}][{{params.__class__.__init__.__globals__}}][{{params.obj}}]"
    )
    out = render(Content(subject=None, text=None, html=html), "html", ctx)
    assert out.html == "[][][][][][][secret-object]"


def test_input_is_not_modified_and_non_string_keys_are_read() -> None:
    ctx: dict[str, Any] = {"params": {1: "one", "l": [1, 2]}}
    out = render(Content(subject="{{params.[1]}} {{params.l}}", text=None, html=None), "html", ctx)
    assert out.subject == "one 1,2"
    assert ctx == {"params": {1: "one", "l": [1, 2]}}


def test_template_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(templates._engine, "MAX_PART_BYTES", 100)
    check(Content(subject="x" * 100, text=None, html=None))
    with pytest.raises(RenderError) as info:
        check(Content(subject=None, text="é" * 51, html=None))
    assert info.value.part == "text"
    assert "larger than 100 bytes" in info.value.message


def test_output_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(templates._engine, "MAX_OUTPUT_BYTES", 1000)
    items = {"params": {"items": list(range(100))}}
    render(Content(subject=None, text=None, html="{{#each params.items}}123456789{{/each}}"), "html", items)
    with pytest.raises(RenderError) as info:
        render(Content(subject=None, text=None, html="{{#each params.items}}1234567890{{/each}}x"), "html", items)
    assert info.value.part == "html"
    assert "larger than 1000 bytes" in info.value.message


def test_read_budget_bounds_nested_loops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(templates._engine, "MAX_DATA_READS", 5_000)
    ctx = {"params": {"a": list(range(100))}}
    loop = "{{#each params.a}}{{#each ../params.a}}{{#each ../../params.a}}x{{/each}}{{/each}}{{/each}}"
    render(Content(subject=None, text=None, html="{{#each params.a}}{{this}}{{/each}}"), "html", ctx)
    with pytest.raises(RenderError) as info:
        render(Content(subject=None, text=loop, html=None), "html", ctx)
    assert info.value.part == "text"
    assert "5000" in info.value.message


def test_render_time_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(templates._engine, "MAX_RENDER_SECONDS", 0.0)
    ctx = {"params": {"a": list(range(200))}}
    with pytest.raises(RenderError) as info:
        render(Content(subject=None, text=None, html="{{#each params.a}}{{this}}{{/each}}"), "html", ctx)
    assert "longer than" in info.value.message


def test_nesting_depth_is_bounded() -> None:
    deep = "{{#if a}}" * 200 + "x" + "{{/if}}" * 200
    with pytest.raises(RenderError) as info:
        check(Content(subject=None, text=None, html=deep))
    assert info.value.part == "html"


def test_variables_suggests_a_model_from_the_paths_used() -> None:
    content = Content(
        subject="Hi {{params.firstName}} {{insert params.nick 'default=you'}}",
        text="{{#each params.items}}{{name}} {{price.amount}} {{../params.currency}} {{@root.account.name}}"
        "{{#each tags}}{{label}}{{/each}}{{/each}}",
        html="{{#with params.address}}{{city}}{{/with}}{{#each params.tags}}{{this}}{{/each}}"
        "{{#greaterThan params.count 3}}{{rcpt.unsubscribeUrl}}{{/greaterThan}}{{#if (length params.list)}}{{/if}}"
        "{{@index}} {{this}} {{lookup params.map 'k'}}",
        preview_text="{{params.preheader}}",
    )
    assert variables(content) == {
        "params": {
            "firstName": "",
            "nick": "",
            "items": [{"name": "", "price": {"amount": ""}, "tags": [{"label": ""}]}],
            "currency": "",
            "address": {"city": ""},
            "tags": [],
            "count": "",
            "list": "",
            "map": "",
            "preheader": "",
        },
        "account": {"name": ""},
        "rcpt": {"unsubscribeUrl": ""},
    }


def test_variables_skips_parts_that_do_not_compile() -> None:
    content = Content(subject="{{#if params.a}}", text="{{params.b}}", html=None)
    assert variables(content) == {"params": {"b": ""}}
