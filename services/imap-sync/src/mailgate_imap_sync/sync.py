"""One sync of one folder, at a cost that follows what changed, not the folder's size.

After SELECT, the folder row says what the index already holds (``index.py``):

* ``FIRST`` - never synced under this UIDVALIDITY: a full comparison that
  fetches every message's headers and indexes silently (existing mail is not
  "new"), committed a chunk at a time; the folder counts as synced only at the end.
* ``NEW`` - the usual push: ``UID FETCH <stored UIDNEXT>:*`` for new mail,
  and with CONDSTORE ``UID SEARCH MODSEQ`` for flag changes.  If the counts
  show that something was expunged meanwhile, it turns into a ``WALK``.
* ``WALK`` - a full comparison of UIDs and flags, a chunk of ``CHUNK``
  messages at a time: when messages were expunged, when flags may have
  changed on a server without CONDSTORE, when too much arrived at once.

Chunks are UID ranges cut at every ``CHUNK``-th message (one ``FETCH n,2n,..
(UID)`` tells where): no response holds thousands of lines, no transaction
thousands of rows, and an expunge during the walk shifts no range.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence

from mailgate_common.db.models import Mailbox
from mailgate_common.event_relay import EventRelay
from mailgate_imap_sync import bounces, details, parse, unsubscribes
from mailgate_imap_sync.client import Connection, ImapError
from mailgate_imap_sync.index import Batch, FolderIndex, FolderState, Known, compare

log = logging.getLogger(__name__)

# Messages per FETCH and per transaction of a full comparison.
CHUNK = 500
# The bounce hint fields ride along so deciding what to check costs no round trip.
FETCH_NEW = (f"(UID FLAGS RFC822.SIZE INTERNALDATE "
             f"BODY.PEEK[HEADER.FIELDS ({parse.HEADER_FIELDS} {bounces.HINT_FIELDS})])")
FETCH_FLAGS = "(UID FLAGS)"
# Nothing is known about what changed (a reconnect, a folder poll).
ANY_CHANGE = int(parse.Change.EXISTS | parse.Change.EXPUNGE | parse.Change.FLAGS)


class Mode(enum.Enum):
    FIRST = "first"
    NEW = "new"
    WALK = "walk"


def plan(stored: Mailbox | None, info: dict[str, int], condstore: bool, pushed: int) -> Mode:
    """What a sync must do, from the folder row, the SELECT answer and what the server pushed."""
    if stored is None or stored.synced_at is None or stored.uidvalidity != info.get("uidvalidity"):
        return Mode.FIRST
    uidnext = info.get("uidnext")
    if uidnext is None or stored.uidnext is None or not stored.uidnext <= uidnext <= stored.uidnext + CHUNK:
        return Mode.WALK
    modseqs = condstore and "highestmodseq" in info and stored.highestmodseq is not None
    if pushed & parse.Change.FLAGS and not modseqs:
        return Mode.WALK  # a flag may have changed and only a comparison tells which
    return Mode.NEW


def boundaries(exists: int) -> str | None:
    """The sequence numbers where chunks end ("500,1000,..."), None for a single chunk."""
    if exists <= CHUNK:
        return None
    return ",".join(str(n) for n in range(CHUNK, exists + 1, CHUNK))


def uid_ranges(ends: Sequence[int]) -> list[tuple[int, int | None]]:
    """Consecutive UID ranges closed at each of ``ends``; the last is open (``lo:*``)."""
    ranges: list[tuple[int, int | None]] = []
    low = 1
    for end in sorted(set(ends)):
        if end >= low:
            ranges.append((low, end))
            low = end + 1
    ranges.append((low, None))
    return ranges


def chunked(items: Sequence[int], size: int = CHUNK) -> list[Sequence[int]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


class FolderSync:
    """Syncs one folder over one connection (``run`` once per change)."""

    def __init__(self, connection: Connection, folder: FolderIndex, relay: EventRelay,
                 progress: Callable[[], None]) -> None:
        self.connection = connection
        self.folder = folder
        self.relay = relay
        # Called after every step: the replica's watchdog tells a slow sync from a hung one.
        self.progress = progress

    async def run(self, pushed: int = ANY_CHANGE) -> None:
        """Sync; again (twice at most) if the server announced changes meanwhile."""
        for _ in range(3):
            count = await self._once(pushed)
            exists, expunged = self.connection.announced()
            if not expunged and (exists is None or exists == count):
                return
            pushed = ANY_CHANGE

    async def _once(self, pushed: int) -> int:
        """One pass; returns the number of messages the folder then holds."""
        info = await self.connection.select(self.folder.path)
        self.progress()
        stored = await self.folder.stored()
        condstore = "CONDSTORE" in self.connection.capabilities
        mode = plan(stored, info, condstore, pushed)
        if mode is Mode.NEW:
            assert stored is not None and stored.uidnext is not None
            count = await self._new(info, stored.uidnext, stored.messages, stored.highestmodseq, condstore)
            if count is not None:
                return count
            mode = Mode.WALK
        if mode is Mode.FIRST:
            await self.folder.forget_other_generations(info.get("uidvalidity", 0))
        return await self._walk(info, first=mode is Mode.FIRST)

    # --- new mail and changed flags ---------------------------------------

    async def _new(self, info: dict[str, int], known_next: int, known_count: int, known_modseq: int | None,
                   condstore: bool) -> int | None:
        """New mail and flag changes since the last sync; None when a full comparison is needed."""
        uidvalidity, uidnext = info.get("uidvalidity", 0), info["uidnext"]
        arrived: list[parse.FetchedMessage] = []
        if uidnext > known_next:
            lines = await self.connection.uid_fetch(f"{known_next}:*", FETCH_NEW)
            self.progress()
            # "n:*" also returns the last message when nothing has a UID >= n.
            arrived = [m for m in parse.parse_fetch(lines) if m.uid >= known_next]
        if info.get("exists") != known_count + sum(1 for m in arrived if m.uid < uidnext):
            return None  # fewer than stored plus new: something was expunged
        if await self.folder.count(uidvalidity) != known_count:
            # The index lost rows (a sync cut short between its batches, a row deleted
            # by hand): a comparison finds them again.  PostgreSQL counts from its
            # index alone, about 1 ms per 10,000 messages; no row leaves the database.
            return None
        known = await self.folder.known_uids(uidvalidity, [m.uid for m in arrived])
        batch = Batch(uidvalidity, new=[m for m in arrived if m.uid not in known])
        modseq = info.get("highestmodseq")
        if condstore and modseq is not None and known_modseq is not None and modseq != known_modseq and known_next > 1:
            changed = await self.connection.uid_search("UID", f"1:{known_next - 1}", "MODSEQ", str(known_modseq + 1))
            self.progress()
            for part in chunked(sorted(changed)):
                flags = {m.uid: m.flags for m in await self._flags(parse.uid_set(list(part)))}
                compare(batch, await self.folder.known_uids(uidvalidity, part), flags)
                if len(batch.changed) >= CHUNK:
                    await self._apply(batch, announce=True)
                    batch = Batch(uidvalidity)
        last = max((m.uid for m in arrived), default=0)
        count = info["exists"] + sum(1 for m in arrived if m.uid >= uidnext)
        await self._apply(batch, announce=True,
                          finished=FolderState(uidvalidity, max(uidnext, last + 1), modseq, count))
        return count

    async def _flags(self, uids: str) -> list[parse.FetchedMessage]:
        messages = parse.parse_fetch(await self.connection.uid_fetch(uids, FETCH_FLAGS))
        self.progress()
        return messages

    # --- full comparison ---------------------------------------------------

    async def _walk(self, info: dict[str, int], first: bool) -> int:
        """Compare the whole folder a chunk at a time; returns the messages seen."""
        uidvalidity = info.get("uidvalidity", 0)
        ends: list[int] = []
        where = boundaries(info.get("exists", 0))
        if where is not None:
            ends = [m.uid for m in await self.connection.fetch(where, "(UID)")]
            self.progress()
        count, last = 0, 0
        for low, high in uid_ranges(ends):
            # The first sync reads the headers along: every message is new to the index.
            items = FETCH_NEW if first else FETCH_FLAGS
            lines = await self.connection.uid_fetch(f"{low}:{'*' if high is None else high}", items)
            self.progress()
            server = [m for m in parse.parse_fetch(lines) if m.uid >= low and (high is None or m.uid <= high)]
            known: Known = await self.folder.known(uidvalidity, low, high)
            flags = {m.uid: m.flags for m in server}
            batch = Batch(uidvalidity)
            missing = set(compare(batch, known, flags, [uid for uid in known if uid not in flags]))
            if first:
                batch.new = [m for m in server if m.uid in missing]
            elif missing:
                lines = await self.connection.uid_fetch(parse.uid_set(sorted(missing)), FETCH_NEW)
                self.progress()
                batch.new = [m for m in parse.parse_fetch(lines) if m.uid in missing]
            count += len(server)
            last = max([last, *flags])
            await self._apply(batch, announce=not first)
        uidnext = info.get("uidnext")
        await self.folder.finish(FolderState(uidvalidity, max(uidnext or 0, last + 1), info.get("highestmodseq"),
                                             count))
        return count

    async def _details(self, batch: Batch) -> None:
        """The messageNew content fields of the mail about to be announced."""
        ids = {m.uid: parse.message_id(self.folder.account, self.folder.path, batch.uidvalidity, m.uid)
               for m in batch.new}
        try:
            batch.details = await details.fetch(self.connection, self.folder.db, ids)
        except ImapError as exc:
            if self.connection.lost:
                raise
            # A refused FETCH must not hold the announcement back: it goes out with the index's facts.
            log.warning("%s %s: no details for new mail: %s", self.folder.account, self.folder.path, exc)
        self.progress()

    async def _apply(self, batch: Batch, announce: bool, finished: FolderState | None = None) -> None:
        if announce and batch.new and self.folder.path == "INBOX":
            # Before the index commit: a crash in between re-checks the same mail
            # on the next sync, and the bounces table drops the repeat.
            await bounces.check_new(self.connection, self.folder.db, self.relay, self.folder.account,
                                    self.folder.path, batch.uidvalidity, batch.new)
            await unsubscribes.check_new(self.folder.db, self.relay, self.folder.account, batch.new)
            self.progress()
        if announce and batch.new:
            await self._details(batch)
        if not batch and finished is None:
            return
        staged = await self.folder.apply(batch, announce, finished)
        self.progress()
        await self.relay.publish_committed(staged)
