"""EmailEngine-compatible template rendering (Handlebars 4.7 semantics, SendGrid-style helpers).

Subject, text and previewText are rendered without HTML escaping (EmailEngine compiles them with
``noEscape``); html is escaped like handlebars.js; format "markdown" renders the escaped Handlebars
output of the html part as Markdown, like EmailEngine does with ``marked``.
"""

from mailgate_common.templates._engine import (
    MAX_OUTPUT_BYTES,
    MAX_PART_BYTES,
    MAX_RENDER_SECONDS,
    Content,
    Rendered,
    RenderError,
    check,
    render,
    variables,
)

__all__ = [
    "MAX_OUTPUT_BYTES",
    "MAX_PART_BYTES",
    "MAX_RENDER_SECONDS",
    "Content",
    "RenderError",
    "Rendered",
    "check",
    "render",
    "variables",
]
