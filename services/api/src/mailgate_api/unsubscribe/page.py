"""The unsubscribe page: plain HTML, no script, no framework, every value escaped.

It must work in any mail app's built-in browser at phone width, for screen
readers and keyboard users, and it is reached from links in mail, so it keeps
its signed URL to itself (no referrer), cannot be framed, and loads nothing.
The forms post back the signed ``data`` and ``sig``: they are the only
authority the page has (nothing else identifies the recipient or the list).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from html import escape

from litestar import Response
from litestar.enums import MediaType


class State(enum.Enum):
    SUBSCRIBED = "subscribed"  # on the list: offer to leave it
    UNSUBSCRIBED = "unsubscribed"  # off the list: say so, offer to come back
    RESUBSCRIBED = "resubscribed"  # just came back: say so, offer to leave again
    INVALID = "invalid"  # forged, cut off or not an unsubscribe link
    GONE = "gone"  # the sending account no longer exists
    UNAVAILABLE = "unavailable"  # a transient failure: try again


_STATUS = {State.INVALID: 400, State.GONE: 404, State.UNAVAILABLE: 503}

HEADERS = {
    "Cache-Control": "no-store",
    # The URL carries the recipient's signed token: never leak it to another site.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": ("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
}

_STYLE = """
:root { color-scheme: light dark; }
* { box-sizing: border-box; }
body { margin: 0; font: 1rem/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       background: Canvas; color: CanvasText; }
main { max-width: 32rem; margin: 0 auto; padding: 2rem 1rem; }
h1 { font-size: 1.5rem; line-height: 1.25; margin: 0 0 1rem; }
p { margin: 0 0 1rem; overflow-wrap: anywhere; }
dl { margin: 0 0 1.5rem; }
dt { font-weight: 600; }
dd { margin: 0 0 .5rem; overflow-wrap: anywhere; }
button { font: inherit; font-weight: 600; min-height: 2.75rem; width: 100%; padding: .6rem 1rem;
         border: 2px solid #1a4fa0; border-radius: .4rem; background: #1a4fa0; color: #fff; cursor: pointer; }
button.secondary { background: transparent; color: inherit; }
button:focus-visible { outline: 3px solid #e8a200; outline-offset: 2px; }
.note { font-size: .9rem; opacity: .85; }
"""


@dataclass(frozen=True)
class View:
    state: State
    email: str = ""
    list_id: str = ""
    data: str = ""
    sig: str = ""
    # Relative, so a tracking base URL with a path prefix keeps working.
    action: str = "unsubscribe/address"


def _e(value: str) -> str:
    return escape(value, quote=True)


def _form(view: View, action: str, label: str, secondary: bool = False) -> str:
    css = ' class="secondary"' if secondary else ""
    return (
        f'<form method="post" action="{_e(view.action)}">'
        f'<input type="hidden" name="action" value="{action}">'
        f'<input type="hidden" name="data" value="{_e(view.data)}">'
        f'<input type="hidden" name="sig" value="{_e(view.sig)}">'
        f'<button type="submit"{css}>{label}</button></form>'
    )


def _who(view: View) -> str:
    return (f"<dl><dt>Email address</dt><dd>{_e(view.email)}</dd>"
            f"<dt>Mailing list</dt><dd>{_e(view.list_id)}</dd></dl>")


_ONLY_THIS_LIST = ('<p class="note">This only concerns this mailing list. Messages you need, such as '
                   "receipts or password resets, keep coming.</p>")


def _content(view: View) -> tuple[str, str]:
    """(title, body) of the page."""
    if view.state is State.SUBSCRIBED:
        return "Unsubscribe", (
            "<p>Do you want to stop receiving messages from this mailing list?</p>"
            + _who(view) + _form(view, "unsubscribe", "Unsubscribe") + _ONLY_THIS_LIST
        )
    if view.state is State.UNSUBSCRIBED:
        return "You are unsubscribed", (
            '<p role="status">You will no longer receive messages from this mailing list.</p>'
            + _who(view) + "<p>Was this a mistake?</p>"
            + _form(view, "subscribe", "Re-subscribe", secondary=True) + _ONLY_THIS_LIST
        )
    if view.state is State.RESUBSCRIBED:
        return "Subscription resumed", (
            '<p role="status">You will receive messages from this mailing list again.</p>'
            + _who(view) + _form(view, "unsubscribe", "Unsubscribe", secondary=True)
        )
    if view.state is State.GONE:
        return "This link no longer works", (
            "<p>The sender of this message no longer uses this service, so there is nothing "
            "to unsubscribe from.</p>"
        )
    if view.state is State.UNAVAILABLE:
        return "Please try again", (
            '<p role="alert">Your request could not be handled right now. Nothing was changed. '
            "Please try again in a minute.</p>"
        )
    return "This unsubscribe link is not valid", (
        '<p role="alert">The link may have been cut off or changed when it was copied. Use the '
        "unsubscribe link in the most recent message from this sender, or contact the sender.</p>"
    )


def render(view: View) -> str:
    title, body = _content(view)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex, nofollow">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main><h1>{_e(title)}</h1>{body}</main></body></html>\n"
    )


def respond(view: View) -> Response[str]:
    return Response(render(view), status_code=_STATUS.get(view.state, 200), media_type=MediaType.HTML,
                    headers=HEADERS)
