"""What one folder sync does, decided from the stored folder row and the SELECT answer
(pure logic of ``sync.py``), and the IMAP sets and answers it builds and reads."""

from __future__ import annotations

from datetime import UTC, datetime

from mailgate_common.db.models import Mailbox
from mailgate_imap_sync import parse
from mailgate_imap_sync.sync import ANY_CHANGE, CHUNK, Mode, boundaries, plan, uid_ranges

INFO = {"uidvalidity": 7, "uidnext": 101, "exists": 100, "highestmodseq": 50}
EXISTS = int(parse.Change.EXISTS)
FLAGS = int(parse.Change.FLAGS)


def stored(uidvalidity: int = 7, uidnext: int | None = 101, modseq: int | None = 50,
           synced: bool = True) -> Mailbox:
    return Mailbox(uidvalidity=uidvalidity, uidnext=uidnext, highestmodseq=modseq, messages=100,
                   synced_at=datetime.now(UTC) if synced else None)


def test_a_folder_never_synced_or_recreated_gets_a_first_sync() -> None:
    assert plan(None, INFO, True, EXISTS) is Mode.FIRST
    assert plan(stored(synced=False), INFO, True, EXISTS) is Mode.FIRST  # a first sync cut short
    assert plan(stored(uidvalidity=6), INFO, True, EXISTS) is Mode.FIRST  # UIDVALIDITY changed


def test_new_mail_costs_only_the_new_mail() -> None:
    assert plan(stored(uidnext=95), INFO, True, EXISTS) is Mode.NEW
    assert plan(stored(), INFO, True, ANY_CHANGE) is Mode.NEW  # CONDSTORE finds flag changes
    assert plan(stored(), INFO, True, FLAGS) is Mode.NEW  # ... with UID SEARCH MODSEQ
    assert plan(stored(uidnext=95), INFO, False, EXISTS) is Mode.NEW


def test_a_full_comparison_only_when_the_cheap_path_cannot_tell() -> None:
    # A flag may have changed and there is no modification sequence to say which.
    assert plan(stored(), INFO, False, FLAGS) is Mode.WALK
    assert plan(stored(), INFO, False, ANY_CHANGE) is Mode.WALK
    assert plan(stored(modseq=None), INFO, True, ANY_CHANGE) is Mode.WALK
    assert plan(stored(), {k: v for k, v in INFO.items() if k != "highestmodseq"}, True, FLAGS) is Mode.WALK
    # More arrived than one chunk, or the server's UIDNEXT makes no sense.
    assert plan(stored(uidnext=101 - CHUNK - 1), INFO, True, EXISTS) is Mode.WALK
    assert plan(stored(uidnext=200), INFO, True, EXISTS) is Mode.WALK
    assert plan(stored(), {k: v for k, v in INFO.items() if k != "uidnext"}, True, EXISTS) is Mode.WALK


def test_chunks_are_uid_ranges_cut_every_chunk_messages() -> None:
    assert boundaries(CHUNK) is None
    assert boundaries(20_000) == ",".join(str(n) for n in range(CHUNK, 20_001, CHUNK))
    assert boundaries(1_001) == f"{CHUNK},{2 * CHUNK}"
    # UIDs at those positions close each range; the last is open for what arrives meanwhile.
    assert uid_ranges([]) == [(1, None)]
    assert uid_ranges([900, 412, 412]) == [(1, 412), (413, 900), (901, None)]


def test_uid_sets_are_compact() -> None:
    assert parse.uid_set([5, 1, 2, 3, 9, 10, 3]) == "1:3,5,9:10"
    assert parse.uid_set(list(range(1, 501))) == "1:500"


def test_search_answers_as_aioimaplib_hands_them_over() -> None:
    # "* SEARCH 3 9 (MODSEQ 917)" arrives as "3 9 (MODSEQ 917)"; "* SEARCH" alone as "".
    assert parse.search_result([b"3 9 (MODSEQ 917)"]) == [3, 9]
    assert parse.search_result([b""]) == []
    assert parse.search_result([b"1 " + b"9" * 40]) == [1]  # no number is that long


def test_pushes_are_told_apart() -> None:
    assert parse.change_of(b"* 12 EXISTS") == EXISTS
    assert parse.change_of(b"* 3 EXPUNGE") == int(parse.Change.EXPUNGE)
    assert parse.change_of(b"* VANISHED 5:7") == int(parse.Change.EXPUNGE)
    assert parse.change_of(b"* 4 FETCH (FLAGS (\\Seen))") == FLAGS
    assert parse.change_of(b"* OK Still here") == 0
