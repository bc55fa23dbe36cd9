"""EmailEngine's search object compiled to IMAP UID SEARCH criteria."""

from __future__ import annotations

import pytest

from mailgate_imap_sync.search import SearchError, compile_search

DOVECOT = frozenset({"IMAP4rev1", "LITERAL+", "UIDPLUS", "MOVE", "CONDSTORE"})
GMAIL = frozenset({"IMAP4rev1", "X-GM-EXT-1"})
PLAIN = frozenset({"IMAP4rev1"})


def test_empty_search_is_all() -> None:
    compiled = compile_search({}, DOVECOT)
    assert compiled.criteria == ["ALL"] and compiled.charset is None


@pytest.mark.parametrize(("search", "criteria"), [
    ({"seen": True}, ["SEEN"]),
    ({"seen": False}, ["UNSEEN"]),
    ({"unseen": True}, ["UNSEEN"]),
    ({"answered": False, "flagged": True}, ["UNANSWERED", "FLAGGED"]),
    ({"deleted": True, "draft": False}, ["DELETED", "UNDRAFT"]),
    ({"from": "nyan.cat@example.com"}, ["FROM", '"nyan.cat@example.com"']),
    ({"to": "a", "cc": "b", "bcc": "c"}, ["TO", '"a"', "CC", '"b"', "BCC", '"c"']),
    ({"subject": 'say "hi" \\ there'}, ["SUBJECT", '"say \\"hi\\" \\\\ there"']),
    ({"body": "Hello world"}, ["BODY", '"Hello world"']),
    ({"larger": 1048576, "smaller": 2000000}, ["LARGER", "1048576", "SMALLER", "2000000"]),
    ({"since": "2022-08-09", "before": "2024-08-09T10:00:00Z"}, ["SINCE", "9-Aug-2022", "BEFORE", "9-Aug-2024"]),
    ({"sentSince": "2022-01-31", "sentBefore": "2022-12-01"}, ["SENTSINCE", "31-Jan-2022", "SENTBEFORE", "1-Dec-2022"]),
    ({"uid": "100:200,300"}, ["UID", "100:200,300"]),
    ({"seq": "1:*"}, ["1:*"]),
    ({"modseq": 12345}, ["MODSEQ", "12345"]),
    ({"header": {"Message-ID": "<1DAF52A51E674A2@example.com>"}},
     ["HEADER", "Message-ID", '"<1DAF52A51E674A2@example.com>"']),
    ({"header": {"X-Campaign": True}}, ["HEADER", "X-Campaign", '""']),
])
def test_criteria(search: dict[str, object], criteria: list[str]) -> None:
    compiled = compile_search(search, DOVECOT)
    assert compiled.criteria == criteria
    assert compiled.charset is None


def test_non_ascii_is_quoted_utf8_with_charset() -> None:
    compiled = compile_search({"subject": "Grüße", "from": "ann"}, DOVECOT)
    assert compiled.criteria == ["SUBJECT", '"Grüße"', "FROM", '"ann"']
    assert compiled.charset == "UTF-8"


def test_ids_need_the_server_extension() -> None:
    with pytest.raises(SearchError) as refused:
        compile_search({"emailId": "M6d99ac3275bb4e"}, DOVECOT)
    assert refused.value.field == "search.emailId"
    assert compile_search({"emailId": "M6d99ac3275bb4e"}, DOVECOT | {"OBJECTID"}).criteria == \
        ["EMAILID", "M6d99ac3275bb4e"]
    assert compile_search({"threadId": "1278455344230334865"}, GMAIL).criteria == \
        ["X-GM-THRID", "1278455344230334865"]
    assert compile_search({"emailIds": ["1", "2", "3"]}, GMAIL).criteria == \
        ["OR", "(", "X-GM-MSGID", "1", ")", "(", "OR", "(", "X-GM-MSGID", "2", ")", "(", "X-GM-MSGID", "3", ")", ")"]
    with pytest.raises(SearchError) as gmail_only:
        compile_search({"gmailRaw": "has:attachment"}, DOVECOT)
    assert gmail_only.value.field == "search.gmailRaw"
    assert compile_search({"labels": {"has": ["Work"], "not": "Spam"}}, GMAIL).criteria == \
        ["X-GM-LABELS", '"Work"', "NOT", "X-GM-LABELS", '"Spam"']


@pytest.mark.parametrize(("search", "field"), [
    ({"since": "last tuesday"}, "search.since"),
    ({"uid": "1:2; DELETE"}, "search.uid"),
    ({"subject": "two\r\nlines"}, "search.subject"),
    ({"larger": -1}, "search.larger"),
    ({"header": {"Bad Name": "x"}}, "search.header.Bad Name"),
    ({"modseq": 5}, "search.modseq"),
    ({"nonsense": 1}, "search.nonsense"),
])
def test_refusals_name_the_key(search: dict[str, object], field: str) -> None:
    with pytest.raises(SearchError) as refused:
        compile_search(search, PLAIN)
    assert refused.value.field == field
