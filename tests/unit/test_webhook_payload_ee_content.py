"""messageNew content from BODYSTRUCTURE and headers; folder choice; pause; account commands."""

from __future__ import annotations

import base64
from email.message import EmailMessage

from mailgate_common import content
from mailgate_imap_sync import control, details, folders, mailboxes, sexp
from mailgate_imap_sync.parse import Folder
from mailgate_webhooks import queue_state

# What Dovecot answers for multipart/mixed(alternative(plain, html), png attachment).
STRUCTURE = (
    b'1 FETCH (UID 9 BODYSTRUCTURE ((("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 40 2 NIL NIL'
    b' NIL NIL)("text" "html" ("charset" "utf-8") NIL NIL "base64" 80 2 NIL NIL NIL NIL) "alternative"'
    b' ("boundary" "b2") NIL NIL NIL)("image" "png" ("name" "=?utf-8?q?r=C3=A9sum=C3=A9.png?=") "<logo@x>" NIL'
    b' "base64" 1200 NIL ("attachment" ("filename" "=?utf-8?q?r=C3=A9sum=C3=A9.png?=")) NIL NIL) "mixed"'
    b' ("boundary" "b1") NIL NIL NIL) BODY[HEADER] {'
)
HEADER = (b"From: Ann <ann@example.org>\r\nSender: Bot <bot@example.org>\r\nReply-To: r@example.org\r\n"
          b"X-Campaign: spring\r\nReceived: one\r\nReceived: two\r\nSubject: Hi\r\n\r\n")


def fetched() -> dict[str, object]:
    lines = [STRUCTURE + str(len(HEADER)).encode() + b"}", bytearray(HEADER), b")", b"Fetch completed."]
    [response] = sexp.responses(lines)
    return sexp.items(response)


def message_like_structure() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Ann <ann@example.org>"
    msg["Subject"] = "Hi"
    msg.set_content("plain body")
    msg.add_alternative("<p>html body</p>", subtype="html")
    msg.add_attachment(b"\x89PNG", maintype="image", subtype="png", filename="résumé.png", cid="<logo@x>")
    return msg.as_bytes()


def test_bodystructure_gives_the_same_ids_as_the_message_json() -> None:
    items = fetched()
    assert items["UID"] == "9"
    parts = details.leaves(items["BODYSTRUCTURE"])
    assert [p.section for p in parts] == ["1.1", "1.2", "2"]
    attachments, text = details.describe("MSGID", parts)
    served = content.message_json(message_like_structure(), "MSGID")
    assert [a["id"] for a in attachments] == [a["id"] for a in served["attachments"]]
    assert text["id"] == served["text"]["id"]
    assert text["encodedSize"] == {"plain": 40, "html": 80}
    assert attachments == [{"id": content.part_id("MSGID", "2"), "contentType": "image/png", "encodedSize": 1200,
                            "filename": "résumé.png", "embedded": False, "inline": False,
                            "contentId": "<logo@x>"}]


def test_single_part_message_is_section_one() -> None:
    [leaf] = details.leaves(["text", "plain", ["charset", "us-ascii"], None, None, "7bit", "12", "1"])
    assert (leaf.section, leaf.is_body_text) == ("1", True)


def test_headers_follow_notify_headers() -> None:
    header = fetched()["BODY[HEADER]"]
    assert isinstance(header, bytes)
    fields, none = details.header_fields(header, ())
    assert none is None
    assert fields == {"sender": {"name": "Bot", "address": "bot@example.org"},
                      "reply_to": [{"address": "r@example.org"}], "bcc": []}
    _, some = details.header_fields(header, ("x-campaign", "received"))
    assert some == {"x-campaign": ["spring"], "received": ["one", "two"]}
    _, every = details.header_fields(header, ("*",))
    assert every is not None and set(every) == {"from", "sender", "reply-to", "x-campaign", "received", "subject"}


def test_text_is_decoded_and_cut_at_notify_text_size() -> None:
    [_, html, _] = details.leaves(fetched()["BODYSTRUCTURE"])
    encoded = base64.encodebytes("<p>héllo wörld</p>".encode())
    # A partial fetch may end inside a base64 quantum.
    assert details.decode_text(encoded[:-3], html).startswith("<p>héllo w")
    assert details.cut("héllo", 2) == ("h", True)
    assert details.cut("héllo", 50) == ("héllo", False)


def test_every_folder_by_default_and_gmail_labels_skipped() -> None:
    assert folders.watch_spec({}) == ["*"]
    assert folders.watch_spec({"path": []}) == []
    assert folders.watch_spec({"path": "\\Sent"}) == ["\\Sent"]
    listed = [Folder("INBOX", "/", None), Folder("[Gmail]/All Mail", "/", "\\All"),
              Folder("[Gmail]/Spam", "/", "\\Junk"), Folder("[Gmail]/Trash", "/", "\\Trash"),
              Folder("Work", "/", None)]
    gmail = folders.for_server(["*"], frozenset({"IMAP4rev1", "X-GM-EXT-1"}))
    assert [f.path for f in folders.watched(gmail, listed)] == ["[Gmail]/Spam", "[Gmail]/Trash"]
    other = folders.for_server(["*"], frozenset({"IMAP4rev1"}))
    assert [f.path for f in folders.watched(other, listed)] == [
        "[Gmail]/All Mail", "[Gmail]/Spam", "[Gmail]/Trash", "Work"]


def test_folder_changes_between_listings() -> None:
    listed = [Folder("INBOX", ".", None), Folder("Work.New", ".", None), Folder("Sent", ".", "\\Sent")]
    assert mailboxes.changes({}, listed).appeared == []  # the first listing announces nothing
    change = mailboxes.changes({"INBOX": None, "Sent": "\\Sent", "Old": None}, listed)
    assert [f.path for f in change.appeared] == ["Work.New"]
    assert change.gone == {"Old": (None, ".")}
    assert mailboxes.name_of("Work.New", ".") == "New"
    assert mailboxes.changes({"INBOX": None}, [Folder("Sent", ".", None)]).gone == {}


class FakeScheduler:
    def __init__(self) -> None:
        import asyncio

        self.paused = False
        self.total = 8
        self.slot_freed = asyncio.Event()


def test_queue_state_pauses_and_sets_concurrency() -> None:
    scheduler = FakeScheduler()
    queue_state.apply(scheduler, {"paused": True, "concurrency": 3}, 8)  # type: ignore[arg-type]
    assert (scheduler.paused, scheduler.total) == (True, 3)
    queue_state.apply(scheduler, {"paused": False, "concurrency": None}, 8)  # type: ignore[arg-type]
    assert (scheduler.paused, scheduler.total, scheduler.slot_freed.is_set()) == (False, 8, True)


def test_strongest_account_command_wins() -> None:
    assert control.strongest({"sync": "a", "flush": "b"}) == "flush"
    assert control.strongest({"sync": "a", "reconnect": "b"}) == "reconnect"
    assert control.strongest({}) is None
    assert control.strongest(None) is None


def test_notify_pushes_count_as_folder_changes() -> None:
    from mailgate_imap_sync.parse import Change, change_of

    assert change_of(b"* STATUS Junk (MESSAGES 1 UIDNEXT 2)") == Change.FOLDERS
    assert change_of(b'* LIST () "/" Projects') == Change.FOLDERS
    assert change_of(b"* 3 EXISTS") == Change.EXISTS


def test_status_answer_read_for_its_own_folder_only() -> None:
    # With NOTIFY the server may slip another folder's STATUS into the answer.
    lines = [b'"My Folder" (MESSAGES 4 UIDNEXT 9 UIDVALIDITY 3)', b"Junk (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 5)",
             b"Status completed."]
    assert folders.parse_status(lines, "My Folder") == {"messages": 4, "uidnext": 9, "uidvalidity": 3}
    assert folders.parse_status(lines, "Junk") == {"messages": 1, "uidnext": 2, "uidvalidity": 5}


def test_email_and_thread_ids_where_the_server_has_them() -> None:
    gmail = (b"1 FETCH (UID 3 X-GM-MSGID 1278455344230334865 X-GM-THRID 1266894439832287888"
             b' X-GM-LABELS (\\Inbox "Work"))')
    [response] = sexp.responses([gmail, b"OK"])
    assert details.identities(sexp.items(response)) == {
        "email_id": "1278455344230334865", "thread_id": "1266894439832287888", "labels": ["\\Inbox", "Work"]}
    objectid = b"1 FETCH (UID 3 EMAILID (M6d99ac3275bb4e) THREADID (T64b478a75b7ea9))"
    [response] = sexp.responses([objectid, b"OK"])
    assert details.identities(sexp.items(response)) == {"email_id": "M6d99ac3275bb4e", "thread_id": "T64b478a75b7ea9"}
    assert "X-GM-MSGID" in details.items_for(frozenset({"X-GM-EXT-1"}))
    assert "EMAILID" in details.items_for(frozenset({"OBJECTID"}))
    assert details.items_for(frozenset()) == details.FETCH_DETAILS
