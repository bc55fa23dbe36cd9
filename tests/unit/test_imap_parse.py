"""Parsing of IMAP responses and headers for the mailbox index (pure logic)."""

from __future__ import annotations

from datetime import UTC, datetime

from mailgate_imap_sync import parse


def test_list_uses_special_use_and_falls_back_to_common_names() -> None:
    folders = parse.parse_list([
        b'(\\HasNoChildren) "/" INBOX',
        b'(\\HasNoChildren \\Sent) "/" "Sent Mail"',
        b'(\\HasNoChildren) "/" "Sent Items"',
        b'(\\HasNoChildren) "." Trash',
        b'(\\Noselect \\HasChildren) "/" "[Gmail]"',
    ])
    by_path = {f.path: f.special_use for f in folders}
    assert by_path == {"INBOX": None, "Sent Mail": "\\Sent", "Sent Items": None, "Trash": "\\Trash"}


def test_fetch_with_header_literal() -> None:
    lines = [
        b'1 FETCH (UID 7 FLAGS (\\Seen \\Recent) RFC822.SIZE 144 INTERNALDATE "22-Nov-2026 03:12:35 +0000"'
        b' BODY[HEADER.FIELDS (SUBJECT)] {16}',
        bytearray(b"Subject: two\r\n\r\n"),
        b")",
        b"2 FETCH (UID 9 FLAGS ())",
        b"Fetch completed.",
    ]
    first, second = parse.parse_fetch(lines)
    assert (first.uid, first.flags, first.size) == (7, ["\\Seen", "\\Recent"], 144)
    assert first.internal_date == datetime(2026, 11, 22, 3, 12, 35, tzinfo=UTC)
    assert first.header == b"Subject: two\r\n\r\n"
    assert (second.uid, second.flags, second.header) == (9, [], None)


def test_envelope_decodes_words_and_addresses() -> None:
    env = parse.envelope(
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nFrom: =?utf-8?q?J=C3=BCrgen?= <j@x.test>\r\n"
        b"To: a@y.test, B <b@y.test>\r\nDate: Sun, 22 Nov 2026 03:00:00 +0100\r\n"
        b"In-Reply-To: <p@x>\r\n\r\n"
    )
    assert env["subject"] == "Grüße"
    assert env["from_addr"] == {"name": "Jürgen", "address": "j@x.test"}
    assert env["to_addr"] == [{"address": "a@y.test"}, {"name": "B", "address": "b@y.test"}]
    assert env["date"] == datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
    assert env["in_reply_to"] == "<p@x>"


def test_message_id_is_stable_and_distinct() -> None:
    a = parse.message_id("acct", "INBOX", 1, 5)
    assert a == parse.message_id("acct", "INBOX", 1, 5)
    assert a != parse.message_id("acct", "INBOX", 2, 5)
    assert "/" not in a and "+" not in a


def test_select_info() -> None:
    info = parse.select_info([b"OK [UIDVALIDITY 42] UIDs valid", b"3 EXISTS",
                              b"OK [UIDNEXT 9] Predicted next UID", b"OK [HIGHESTMODSEQ 17] Highest"])
    assert info == {"uidvalidity": 42, "exists": 3, "uidnext": 9, "highestmodseq": 17}


def test_envelope_text_is_clean_and_capped() -> None:
    # "YQBi" is base64 for "a\0b": PostgreSQL refuses NUL in text and in jsonb.
    env = parse.envelope(
        b"Subject: =?utf-8?b?YQBi?=\r\nFrom: =?utf-8?b?YQBi?= <nul@x.test>\r\n"
        b"To: " + b", ".join(b"u%d@y.test" % n for n in range(300)) + b"\r\n"
        b"Message-ID: <" + b"m" * 5000 + b"@x.test>\r\nIn-Reply-To: \xff\xfe<p@x>\r\n"
        b"Date: Sun, 22 Nov 99999 03:00:00 +0100\r\n\r\n"
    )
    assert env["subject"] == "a\ufffdb"
    assert env["from_addr"] == {"name": "a\ufffdb", "address": "nul@x.test"}
    assert len(env["to_addr"]) == parse.ADDRESSES_MAX
    assert len(env["message_id"]) == parse.MESSAGE_ID_MAX
    assert "\x00" not in env["in_reply_to"] and env["in_reply_to"].endswith("<p@x>")
    assert env["date"] is None


def test_server_data_that_is_not_text_or_numbers_is_made_safe() -> None:
    [item] = parse.parse_fetch([b"1 FETCH (UID 5 FLAGS (\\Seen $L\xe4bel \x00x) RFC822.SIZE 99999999999999999999999)"])
    assert item.flags == ["\\Seen", "$Läbel", "\ufffdx"]
    assert item.size is None  # not a size any message has
    assert parse.parse_fetch([b"1 FETCH (UID 99999999999 FLAGS ())"]) == []
    assert parse.select_info([b"OK [UIDNEXT 123456789012345678901234] x", b"OK [HIGHESTMODSEQ 12] y"]) == {
        "highestmodseq": 12}
    [folder] = parse.parse_list([b'(\\HasNoChildren) "/" "Caf\xe9\x00"'])
    assert folder.path == "Café\ufffd"
