"""EmailEngine's /v1/templates bodies (camelCase on the wire, unknown fields refused)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Description = Annotated[str, msgspec.Meta(max_length=1024)]
AccountId = Annotated[str, msgspec.Meta(max_length=256)]
Format = Literal["html", "markdown"]


class TemplateContent(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True,
                      omit_defaults=True):
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    # EmailEngine's hidden preheader, put at the top of the html body when sent.
    preview_text: str | None = None


class TemplateCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Required like EmailEngine's, null for a public template (admin only).
    account: AccountId | None
    name: Name
    content: TemplateContent
    description: Description | None = None
    format: Format = "html"
    # Inline the rendered html's <style> rules into style attributes (css-inline).
    inline_css: bool = msgspec.field(default=False, name="inlineCss")


class TemplateUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Partial update: what is given replaces what is stored (``content`` as a whole, like EmailEngine)."""

    name: Name | None = None
    description: Description | None = None
    format: Format | None = None
    content: TemplateContent | None = None
    inline_css: bool | None = msgspec.field(default=None, name="inlineCss")


class ValidateRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    params: dict[str, Any] = msgspec.field(default_factory=dict)


class PartResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    valid: bool
    rendered: str | None = None
    error: str | None = None
    # Set when the html is shown (and would be sent) without its CSS inlined, and why.
    warning: str | None = None


class ValidateResponse(msgspec.Struct, kw_only=True, rename="camel"):
    """Each part rendered with ``params`` (nothing sent) and the model the template's variables suggest."""

    valid: bool
    subject: PartResult | None
    text: PartResult | None
    html: PartResult | None
    preview_text: PartResult | None
    variables: dict[str, Any]
