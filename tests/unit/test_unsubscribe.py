"""Unsubscribe logic without servers: which signed data is an unsubscribe, how a mailto
unsubscribe's subject is found among new INBOX mail, list ids, and the page's escaping."""

from __future__ import annotations

from email.header import Header
from urllib.parse import parse_qs, unquote, urlsplit

from mailgate_api.unsubscribe.page import State, View, render
from mailgate_common import blocklist, unsubscribe
from mailgate_common.tracking.tokens import Signer
from mailgate_imap_sync import unsubscribes

SIGNER = Signer("unit-secret")


def signed_subject(account: str = "acct", recipient: str = "ann@example.org", list_id: str = "news.example.com",
                   signer: Signer = SIGNER) -> str:
    mailto = signer.unsubscribe_mailto("acct@sender.test", account=account, list_id=list_id,
                                       recipient=recipient, message_id="<m1@sender.test>")
    return unquote(mailto.split("?subject=", 1)[1])


def test_only_complete_unsubscribe_data_is_a_request() -> None:
    good = {"act": "unsub", "acc": "acct", "list": "news.example.com", "rcpt": "Ann@Example.org", "msg": "<m@x>"}
    assert unsubscribe.from_data(good) == unsubscribe.Request("acct", "news.example.com", "Ann@Example.org", "<m@x>")
    assert unsubscribe.from_data({**good, "msg": None}) == unsubscribe.Request("acct", "news.example.com",
                                                                               "Ann@Example.org")
    for broken in ({**good, "act": "click"}, {**good, "acc": ""}, {**good, "list": "not a list!"},
                   {**good, "rcpt": "no-at-sign"}, {**good, "rcpt": 42}, None, {}):
        assert unsubscribe.from_data(broken) is None, broken


def test_a_link_reads_back_only_with_its_own_signature() -> None:
    url = SIGNER.unsubscribe_url("https://mail.example.com", account="acct", list_id="news.example.com",
                                 recipient="ann@example.org", message_id=None)
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert unsubscribe.read(SIGNER, query["data"], query["sig"]) == unsubscribe.Request(
        "acct", "news.example.com", "ann@example.org")
    assert unsubscribe.read(Signer("another-secret"), query["data"], query["sig"]) is None
    assert unsubscribe.read(SIGNER, query["data"], query["sig"][:-2] + "AA") is None
    assert unsubscribe.read(SIGNER, query["data"], None) is None


def test_list_ids_are_host_names_as_emailengine_requires() -> None:
    for good in ("news", "news.example.com", "weekly-digest.example", "a" * 63):
        assert blocklist.is_list_id(good), good
    for bad in ("", "-news", "news-", "news letter", "news_letter", "news..example", "a" * 64, "ü.example",
                ".".join(["abc"] * 70)):
        assert not blocklist.is_list_id(bad), bad


def header(subject: str, **extra: str) -> bytes:
    lines = ["From: Ann <ann@example.org>", "To: acct@sender.test", f"Subject: {subject}",
             *(f"{k}: {v}" for k, v in extra.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_mailto_unsubscribe_is_found_in_the_subject_as_mail_apps_send_it() -> None:
    subject = signed_subject()
    expected = unsubscribe.Request("acct", "news.example.com", "ann@example.org", "<m1@sender.test>")
    # As sent, as a reply, folded at the space, and RFC 2047 encoded (Outlook encodes long subjects).
    encoded = Header(subject, "utf-8", maxlinelen=76).encode()
    for raw in (header(subject), header("Re: " + subject),
                header(subject.replace(" ", "\r\n ", 1)), header(encoded)):
        assert unsubscribes.request_in(SIGNER, "acct", raw) == expected, raw


def test_ordinary_forged_or_foreign_mail_unsubscribes_nobody() -> None:
    subject = signed_subject()
    assert unsubscribes.request_in(SIGNER, "acct", header("Quarterly report")) is None
    assert unsubscribes.request_in(SIGNER, "acct", header("how do I unsubscribe from this?")) is None
    assert unsubscribes.request_in(SIGNER, "acct", header(subject[:-3] + "xyz")) is None  # tampered
    assert unsubscribes.request_in(SIGNER, "other-account", header(subject)) is None  # another tenant's token
    assert unsubscribes.request_in(SIGNER, "acct", header(signed_subject(signer=Signer("elsewhere")))) is None
    assert unsubscribes.request_in(SIGNER, "acct", None) is None


def test_the_cheap_check_skips_subjects_that_cannot_hold_a_token() -> None:
    assert unsubscribes.raw_subject(header("Invoice 42", **{"List-Unsubscribe": "<mailto:x?subject=unsubscribe>"})) \
        is None  # "unsubscribe" elsewhere in the header does not count
    assert unsubscribes.raw_subject(header("=?utf-8?q?Gr=C3=BC=C3=9Fe?=")) is not None  # encoded: must decode
    assert unsubscribes.raw_subject(header("unsubscribe " + "x" * 9000)) is None  # far too long for a token


def test_the_page_escapes_everything_it_shows() -> None:
    hostile = '"><script>alert(1)</script>@example.org'
    html = render(View(State.SUBSCRIBED, hostile, "news.example.com", 'd"><b>', "s'<i>"))
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'value="d&quot;&gt;&lt;b&gt;"' in html and 'value="s&#x27;&lt;i&gt;"' in html
    assert 'action="unsubscribe/address"' in html and 'name="action" value="unsubscribe"' in html
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert '<html lang="en">' in html


def test_each_state_offers_the_right_button() -> None:
    def buttons(state: State) -> list[str]:
        html = render(View(state, "ann@example.org", "news.example.com", "d", "s"))
        return [part.split('"', 1)[0] for part in html.split('name="action" value="')[1:]]

    assert buttons(State.SUBSCRIBED) == ["unsubscribe"]
    assert buttons(State.UNSUBSCRIBED) == ["subscribe"]
    assert buttons(State.RESUBSCRIBED) == ["unsubscribe"]
    assert buttons(State.INVALID) == [] and buttons(State.GONE) == []
