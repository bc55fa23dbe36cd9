"""Mail merge built like EmailEngine's: one message per entry, its own params, list headers; refusals by name."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import pytest

from mailgate_api.errors import ApiError
from mailgate_api.submit import merge, service
from mailgate_api.submit.schemas import MergeTo
from mailgate_common.db.models import Account, Template
from mailgate_common.settings import Settings
from mailgate_common.submission import MAX_MAIL_MERGE, MailMergeEntry, SubmitRequest
from mailgate_common.tracking.tokens import Signer

SETTINGS = Settings(secret="unit-test-secret-unit-test-secret")
ACCOUNT = Account(id="shop", name="The Shop", email="news@shop.example", smtp={"host": "x"})


def request(**fields: Any) -> SubmitRequest:
    return msgspec.convert(fields, SubmitRequest)


def shared(data: SubmitRequest, template: Template | None = None, list_base: str | None = None,
           mailto: bool = False) -> merge.Shared:
    options = service.local_options(data)
    if data.list_id:
        options["listId"] = data.list_id
    return merge.Shared(account=ACCOUNT, data=data, template=template, original=None, options=options,
                        blocked={}, suppressed={}, list_base=list_base, mailto=mailto)


def entry(address: str, **fields: Any) -> MailMergeEntry:
    return msgspec.convert({"to": {"address": address}, **fields}, MailMergeEntry)


def parsed(raw: bytes) -> EmailMessage:
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_each_entry_is_its_own_message_rendered_with_its_params() -> None:
    template = Template(id="t", account_id=None, name="t", format="html",
                        content={"subject": "Hi {{params.name}}", "html": "<p>{{params.name}}</p>"})
    data = request(mailMerge=[{"to": {"address": "a@example.org"}}], template="t")
    one = merge.compose(shared(data, template), entry("ann@example.org", params={"name": "Ann & Co"}), SETTINGS)
    two = merge.compose(shared(data, template), entry("bob@example.org", params={"name": "Bob"}), SETTINGS)
    assert one.envelope_to == ["ann@example.org"] and two.envelope_to == ["bob@example.org"]
    assert one.subject == "Hi Ann & Co" and two.subject == "Hi Bob"
    assert one.message_id != two.message_id
    html = parsed(one.raw).get_body(("html",))
    assert html is not None and "<p>Ann &amp; Co</p>" in html.get_content()
    # The sender is the account; no list headers without listId.
    message = parsed(one.raw)
    assert message["From"] == "The Shop <news@shop.example>" and message["List-ID"] is None


def test_entry_message_id_and_send_at_override_the_message() -> None:
    data = request(mailMerge=[{"to": {"address": "a@example.org"}}], text="x", sendAt="2099-01-01T00:00:00Z")
    own = merge.compose(shared(data), entry("a@example.org", messageId="own@example.org",
                                            sendAt="2098-05-05T05:05:05Z"), SETTINGS)
    assert own.message_id == "<own@example.org>" and own.send_at.year == 2098
    inherited = merge.compose(shared(data), entry("b@example.org"), SETTINGS)
    assert inherited.send_at.year == 2099


def test_without_params_and_template_nothing_is_rendered() -> None:
    # As in EmailEngine: only a template, params or a listId make a merge message a template.
    data = request(mailMerge=[{"to": {"address": "a@example.org"}}], subject="{{params.x}}", text="y")
    new = merge.compose(shared(data), entry("a@example.org"), SETTINGS)
    assert new.subject == "{{params.x}}"


def test_list_messages_get_list_headers_and_a_signed_unsubscribe_url() -> None:
    data = request(mailMerge=[{"to": {"address": "a@example.org"}}], listId="weekly", subject="News",
                   text="Bye: {{rcpt.unsubscribeUrl}}", headers={"list-id": "<forged>", "X-Kept": "1"})
    new = merge.compose(shared(data, list_base="https://mail.example.com", mailto=True), entry("Reader@example.org"),
                        SETTINGS)
    message = parsed(new.raw)
    assert message["List-ID"] == "<weekly.mail.example.com>"
    assert message.get_all("List-ID") == ["<weekly.mail.example.com>"] and message["X-Kept"] == "1"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https, mailto = [p.strip().strip("<>") for p in str(message["List-Unsubscribe"]).split(",")]
    assert https.startswith("https://mail.example.com/unsubscribe?")
    assert mailto.startswith("mailto:news@shop.example?subject=unsubscribe%20")
    query = parse_qs(urlsplit(https).query)
    data_signed = Signer(SETTINGS.secret).verify(query["data"][0], query["sig"][0])
    assert data_signed == {"act": "unsub", "acc": "shop", "list": "weekly", "rcpt": "Reader@example.org",
                           "msg": new.message_id}
    # A listId renders the message's own parts, so rcpt.unsubscribeUrl works without a template.
    assert message.get_content().strip() == f"Bye: {https}"
    assert new.options == {"listId": "weekly"}


def test_a_send_only_account_gets_only_the_https_unsubscribe() -> None:
    # No one reads the account's mailbox, so a mailto unsubscribe sent there would be lost.
    data = request(mailMerge=[{"to": {"address": "a@example.org"}}], listId="weekly", text="x")
    message = parsed(merge.compose(shared(data, list_base="https://mail.example.com"), entry("a@example.org"),
                                   SETTINGS).raw)
    assert str(message["List-Unsubscribe"]).strip().startswith("<https://mail.example.com/unsubscribe?")
    assert "mailto:" not in str(message["List-Unsubscribe"])


def test_an_account_without_address_gets_only_the_https_unsubscribe() -> None:
    account = Account(id="bare", name=None, email=None, smtp={"host": "x"})
    data = request(mailMerge=[{"to": {"address": "a@example.org"}}], listId="l", text="x",
                   **{"from": {"address": "me@example.org"}})
    base = merge.Shared(account=account, data=data, template=None, original=None, options={}, blocked={},
                        suppressed={}, list_base="http://127.0.0.1:3000", mailto=True)
    message = parsed(merge.compose(base, entry("a@example.org"), SETTINGS).raw)
    assert str(message["List-Unsubscribe"]).count("<") == 1
    assert message["List-ID"] == "<l.127.0.0.1>"


def test_a_bad_recipient_fails_its_entry_with_its_own_field_name() -> None:
    data = request(mailMerge=[{"to": {"address": "a@example.org"}}], text="x")
    with pytest.raises(ApiError) as caught:
        merge.compose(shared(data), entry("no-at-sign"), SETTINGS)
    result = merge._failed(MergeTo(address="no-at-sign"), 7, caught.value)
    assert result.success is False and result.status_code == 400 and result.code == "InputValidationError"
    assert result.error is not None and result.error.startswith("mailMerge[7].to.address:")


@pytest.mark.parametrize(("fields", "field"), [
    ({"to": {"address": "a@example.org"}}, "to"),
    ({"cc": [{"address": "a@example.org"}]}, "cc"),
    ({"bcc": [{"address": "a@example.org"}]}, "bcc"),
    ({"envelope": {"to": "a@example.org"}}, "envelope"),
    ({"raw": "eA=="}, "raw"),
    ({"render": False}, "render"),
    ({"messageId": "<same@example.org>"}, "messageId"),
    ({"reference": {"message": "AAAA", "action": "reply-all"}}, "reference.action"),
    ({"listId": "-bad-"}, "listId"),
    ({"listId": "a b"}, "listId"),
])
def test_fields_a_merge_forbids_are_refused_by_name(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ApiError) as caught:
        service.check(request(mailMerge=[{"to": {"address": "x@example.org"}}], **fields))
    assert caught.value.status == 400 and caught.value.field == field


def test_list_id_needs_a_merge_and_base_url_must_be_http() -> None:
    with pytest.raises(ApiError) as caught:
        service.check(request(to={"address": "x@example.org"}, listId="news"))
    assert caught.value.field == "listId"
    for bad in ("ftp://x.example.com", "not a url", "https://"):
        with pytest.raises(ApiError) as caught:
            service.check(request(to={"address": "x@example.org"}, baseUrl=bad))
        assert caught.value.field == "baseUrl"
    service.check(request(to={"address": "x@example.org"}, baseUrl=""))
    service.check(request(mailMerge=[{"to": {"address": "x@example.org"}}], listId="news.example.com"))


def test_merge_size_limits_are_part_of_the_schema() -> None:
    one = {"to": {"address": "x@example.org"}}
    with pytest.raises(msgspec.ValidationError, match=r"\$\.mailMerge"):
        request(mailMerge=[])
    with pytest.raises(msgspec.ValidationError, match=r"\$\.mailMerge"):
        request(mailMerge=[one] * (MAX_MAIL_MERGE + 1))
    assert len(request(mailMerge=[one] * MAX_MAIL_MERGE).mail_merge or []) == MAX_MAIL_MERGE


@pytest.mark.parametrize(("fields", "options"), [
    ({}, {}),
    ({"trackOpens": True}, {"trackOpens": True}),
    ({"trackingEnabled": True}, {"trackOpens": True, "trackClicks": True}),
    ({"trackingEnabled": True, "trackClicks": False}, {"trackOpens": True, "trackClicks": False}),
    ({"trackingEnabled": False, "trackOpens": True}, {"trackOpens": True, "trackClicks": False}),
    ({"baseUrl": " https://t.example.com/ "}, {"baseUrl": "https://t.example.com"}),
    ({"baseUrl": ""}, {}),
])
def test_tracking_flags_become_outbox_options_only_when_given(fields: dict[str, Any],
                                                               options: dict[str, Any]) -> None:
    assert service.local_options(request(**fields)) == options


def test_entry_keys_keep_a_merge_retry_apart_from_a_single_submit() -> None:
    assert merge.entry_key("k", 0) == "k:mailMerge:0"
    assert len({merge.entry_key("k", i) for i in range(3)}) == 3
