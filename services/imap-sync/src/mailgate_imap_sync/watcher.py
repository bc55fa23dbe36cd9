"""One account's IMAP life: connect, index INBOX, IDLE, react, reconnect with backoff.

    connecting ──login ok──► connected ──(sync, IDLE, sync, …)
        │                          │ connection lost / error
        │ rejected login           ▼
        ├──► authenticationError   backoff, then connecting again
        │     (retry only after imap_auth_retry: a wrong password must not
        │      hammer the server or get the mailbox locked)
        └──► connectError (backoff imap_retry_base … imap_retry_max; a host
              the account may not use waits imap_auth_retry)

Any IDLE push (EXISTS, EXPUNGE, FETCH) triggers a sync of the folder, which
costs what changed, not what the folder holds (see ``sync.py``).

The other folders the account asks for (``path``, every folder by default,
see ``folders.py``) share the same connection: every ``imap_folder_poll``
seconds IDLE is ended, the folders are listed again (a folder that appeared
is announced as ``mailboxNew``, one that disappeared loses its index and is
announced as ``mailboxDeleted``), each watched folder gets a cheap STATUS, and
only a changed one is synced the same way; then INBOX is selected again and
IDLE resumes.  No task or connection per folder: a folder costs one row.

``sync_now`` (the ``sync`` account command) ends IDLE early and runs such a
round at once.

``busy_since`` tells the replica's watchdog (``watchdog.py``) when the watcher
last made progress while working; it is 0.0 while it waits (IDLE, backoff,
its turn for the ``opening`` semaphore).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert

from mailgate_common import events
from mailgate_common.backoff import backoff_delay
from mailgate_common.crypto import CredentialError, Sealer
from mailgate_common.db import Database
from mailgate_common.db.models import IndexedMessage, Mailbox
from mailgate_common.event_relay import EventRelay, stage
from mailgate_common.settings import Settings
from mailgate_imap_sync import accounts, folders, mailboxes, notify, parse
from mailgate_imap_sync.accounts import ImapAccount
from mailgate_imap_sync.client import AuthError, ConnectError, Connection, ImapError, RefusedHost, ResponseTooLarge
from mailgate_imap_sync.index import FolderIndex, stored_mailboxes
from mailgate_imap_sync.state import set_state
from mailgate_imap_sync.sync import ANY_CHANGE, FolderSync

log = logging.getLogger(__name__)

# Coalesce a burst of IDLE pushes into one sync.
PUSH_SETTLE = 0.1


class Watcher:
    # Thousands live in one process: no per-instance __dict__.
    __slots__ = ("account", "busy_since", "connection", "db", "failures", "fingerprint", "forced", "listed",
                 "notified", "opening", "relay", "sealer", "settings")

    def __init__(self, settings: Settings, db: Database, relay: EventRelay, sealer: Sealer,
                 account: str, opening: asyncio.Semaphore) -> None:
        self.settings = settings
        self.db = db
        self.relay = relay
        self.sealer = sealer
        self.account = account
        # Shared by all watchers of the replica: bounds how many connect or sync at
        # once (see ``_session`` and ``_watch``).
        self.opening = opening
        self.failures = 0
        self.busy_since = 0.0
        # Of the settings this watcher last read ("" before): the heartbeat restarts
        # the watcher when the stored ones differ.
        self.fingerprint = ""
        # The folders the server listed last (LIST is repeated on each folder poll).
        self.listed: tuple[parse.Folder, ...] = ()
        # The open connection (None between connections) and whether a sync of
        # everything was asked for (``sync_now``).
        self.connection: Connection | None = None
        self.forced = False
        # The server pushes news of the other folders (NOTIFY) on this connection.
        self.notified = False

    def progress(self) -> None:
        self.busy_since = time.monotonic()

    def rest(self) -> None:
        self.busy_since = 0.0

    def sync_now(self) -> None:
        """Sync every watched folder as soon as possible (ends a running IDLE)."""
        self.forced = True
        if self.connection is not None:
            self.connection.end_idle()

    async def run(self) -> None:
        while True:
            self.progress()
            try:
                delay = await self._attempt()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Typically the database (pool timeout, restart) while storing the
                # state: the watcher must go on, or the account stays unwatched until
                # the next heartbeat notices.
                log.warning("%s: watcher error, retrying: %r", self.account, exc)
                delay = self._backoff()
            self.rest()
            if delay is None:
                return
            await asyncio.sleep(delay)

    async def _attempt(self) -> float | None:
        """One connection attempt; how long to wait before the next (None: stop)."""
        try:
            imap = await accounts.load(self.db, self.sealer, self.account)
        except CredentialError as exc:
            await set_state(self.db, self.relay, self.account, "connectError", str(exc))
            return self.settings.imap_auth_retry
        if imap is None:
            return None
        self.fingerprint = imap.fingerprint
        return await self._session(imap)

    async def _session(self, imap: ImapAccount) -> float:
        """One connection's life; returns how long to wait before the next.

        Connecting, logging in and the first sync run under ``opening``: when a
        replica takes over (or reconnects) a thousand accounts at once, unbounded
        they would all queue for the few pooled database connections until the
        pool times out, and hammer the server with logins; bounded they come up
        at the rate the database and the server sustain.  IDLE runs outside it.
        """
        connection: Connection | None = None
        try:
            self.rest()
            async with self.opening:
                self.progress()
                await set_state(self.db, self.relay, self.account, "connecting")
                connection = await imap.connect(self.settings.imap_timeout, self.settings.imap_max_response_bytes)
                self.connection = connection
                spec = folders.for_server(folders.watch_spec(imap.settings), connection.capabilities)
                # Logged in: the settings (with the password) are not needed any more, and
                # would otherwise stay referenced by this frame for the connection's life.
                imap.settings.clear()
                inbox = await self._open(connection, spec)
            await self._watch(connection, spec, inbox)
            return 0.0
        except AuthError as exc:
            log.warning("%s: login rejected: %s", self.account, exc)
            await set_state(self.db, self.relay, self.account, "authenticationError", str(exc))
            return self.settings.imap_auth_retry
        except RefusedHost as exc:
            # A setting, not an outage: retried as rarely as a wrong password.
            log.warning("%s: %s", self.account, exc)
            await set_state(self.db, self.relay, self.account, "connectError", str(exc))
            return self.settings.imap_auth_retry
        except ResponseTooLarge as exc:
            # The server will send it again: each try costs the replica the bound's worth
            # of reading, so it is made as rarely as after a wrong password.
            log.warning("%s: connection dropped: %s", self.account, exc)
            await set_state(self.db, self.relay, self.account, "disconnected", str(exc))
            return self.settings.imap_auth_retry
        except (ImapError, OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            if connection is None:
                log.warning("%s: cannot connect: %s", self.account, exc)
                await set_state(self.db, self.relay, self.account, "connectError", str(exc))
            else:
                log.warning("%s: connection failed: %r", self.account, exc)
                await set_state(self.db, self.relay, self.account, "disconnected", str(exc) or repr(exc))
            return self._backoff()
        except Exception as exc:
            if connection is None:
                # Not connected yet: the database (see ``run``).
                raise
            log.exception("%s: sync crashed", self.account)
            await set_state(self.db, self.relay, self.account, "disconnected", repr(exc))
            return self._backoff()
        finally:
            self.connection = None
            if connection is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(connection.close())

    def _backoff(self) -> float:
        self.failures += 1
        return backoff_delay(self.failures, self.settings.imap_retry_base, self.settings.imap_retry_max)

    async def _open(self, connection: Connection, spec: list[str]) -> FolderIndex:
        """Everything up to ``connected``: folders listed, INBOX (and ``spec``) indexed."""
        if "CONDSTORE" in connection.capabilities and "ENABLE" in connection.capabilities:
            # SELECT then reports HIGHESTMODSEQ and FETCH reports MODSEQ.
            await connection.enable("CONDSTORE")
        self.listed = folders.shared(await connection.list_folders())
        await self._store_folders(connection, list(self.listed))
        await self._forget_unwatched(spec)
        if spec:
            # Before "connected" too, so the same promise holds for these folders.
            await self._poll_folders(connection, spec, relist=False)
        else:
            # Only needed to poll other folders: not kept for the connection's life.
            self.listed = ()
        inbox = FolderIndex(self.db, self.account, "INBOX")
        await self._sync(connection, inbox)
        self.notified = bool(spec) and "NOTIFY" in connection.capabilities and await self._notify(connection)
        # Only now: mail arriving after "connected" is guaranteed to be announced.
        await set_state(self.db, self.relay, self.account, "connected")
        self.failures = 0
        return inbox

    async def _watch(self, connection: Connection, spec: list[str], inbox: FolderIndex) -> None:
        idle = "IDLE" in connection.capabilities
        # With NOTIFY the round only has to catch what is not pushed (flag changes in
        # other folders): a thousand accounts polling every minute cost a core.
        interval = self.settings.imap_folder_poll_notified if self.notified else self.settings.imap_folder_poll
        next_poll = time.monotonic() + interval
        while True:
            if connection.lost:
                raise ConnectError("connection lost")
            until_poll = max(0.0, next_poll - time.monotonic()) if spec else None
            self.rest()
            if self.forced:
                pushed = 0
            elif idle:
                pushed = await self._idle(connection, until_poll)
            else:
                await asyncio.sleep(self.settings.imap_poll_interval if until_poll is None
                                    else min(self.settings.imap_poll_interval, until_poll))
                self.progress()
                # NOOP reports what changed; new mail and expunges are also seen in the
                # counts, so a quiet answer still gets the cheap check for them.
                pushed = await connection.noop() or int(parse.Change.EXISTS)
            forced, self.forced = self.forced, False
            if forced:
                pushed |= ANY_CHANGE
            # NOTIFY told that another folder changed: its poll round now, not later.
            poll = bool(spec) and (forced or bool(pushed & parse.Change.FOLDERS) or time.monotonic() >= next_poll)
            pushed &= ANY_CHANGE
            if not (pushed or poll):
                continue
            statuses: list[tuple[parse.Folder, dict[str, int]]] = []
            if poll:
                # The STATUS round is IMAP only and happens outside ``opening``: mail
                # arriving for another account does not wait behind a thousand rounds.
                statuses = await self._statuses(connection, spec)
                next_poll = time.monotonic() + interval
            if not (pushed or statuses):
                continue
            # Bounded like the first sync: mail reaching every account at once must
            # queue here, not time out waiting for a pooled database connection.
            async with self.opening:
                self.progress()
                changed = await self._changed(statuses)
                for index in changed:
                    await self._sync(connection, index)
                if pushed or changed:
                    # Also re-selects INBOX (left when another folder was synced), which the next IDLE watches.
                    await self._sync(connection, inbox, pushed or ANY_CHANGE)

    async def _notify(self, connection: Connection) -> bool:
        """News of every folder pushed, where the server can (see ``notify.py``)."""
        accepted = await notify.enable(connection)
        self.progress()
        if not accepted:
            log.info("%s: NOTIFY refused, polling the other folders", self.account)
        return accepted

    async def _sync(self, connection: Connection, folder: FolderIndex, pushed: int = ANY_CHANGE) -> None:
        await FolderSync(connection, folder, self.relay, self.progress).run(pushed)

    async def _poll_folders(self, connection: Connection, spec: list[str], relist: bool = True) -> bool:
        """Sync every watched folder whose STATUS changed; True if any was selected."""
        changed = await self._changed(await self._statuses(connection, spec, relist))
        for index in changed:
            await self._sync(connection, index)
        return bool(changed)

    async def _statuses(self, connection: Connection, spec: list[str],
                        relist: bool = True) -> list[tuple[parse.Folder, dict[str, int]]]:
        """STATUS of every watched folder (listed again first, unless ``relist`` is False)."""
        if relist:
            # Listed again each round: a folder created (or renamed) since is found.
            listed = await connection.list_folders()
            if tuple(listed) != self.listed:
                await self._store_folders(connection, listed)
                self.listed = folders.shared(listed)
                await self._forget_unwatched(spec)
        condstore = "CONDSTORE" in connection.capabilities
        statuses: list[tuple[parse.Folder, dict[str, int]]] = []
        for folder in folders.watched(spec, self.listed):
            response = await connection.status(
                folder.path, folders.STATUS_ITEMS if condstore else folders.STATUS_ITEMS_PLAIN
            )
            self.progress()
            if response.result != "OK":
                # Deleted between LIST and STATUS: not worth dropping the connection.
                log.info("%s: STATUS %s failed: %s", self.account, folder.path, response.result)
                continue
            statuses.append((folder, folders.parse_status(response.lines, folder.path)))
        return statuses

    async def _changed(self, statuses: list[tuple[parse.Folder, dict[str, int]]]) -> list[FolderIndex]:
        """The folders whose STATUS differs from the index (one database read)."""
        if not statuses:
            return []
        stored = await stored_mailboxes(self.db, self.account, [folder.path for folder, _ in statuses])
        return [FolderIndex(self.db, self.account, folder.path, folder.special_use)
                for folder, status in statuses if not folders.unchanged(stored.get(folder.path), status)]

    async def _forget_unwatched(self, spec: list[str]) -> None:
        """Drop the index of folders not (or no longer) watched.

        Left in place it would be listed stale, and once the folder is watched
        again everything that arrived meanwhile would be announced as new at
        once; forgotten, the next first sync indexes it silently.
        """
        keep = ["INBOX", *(f.path for f in folders.watched(spec, self.listed))]
        async with self.db.transaction() as session:
            await session.execute(
                delete(IndexedMessage).where(IndexedMessage.account_id == self.account,
                                             IndexedMessage.path.not_in(keep))
            )
            await session.execute(
                update(Mailbox)
                .where(Mailbox.account_id == self.account, Mailbox.path.not_in(keep),
                       Mailbox.synced_at.is_not(None))
                .values(uidvalidity=None, uidnext=None, highestmodseq=None, messages=0, synced_at=None)
            )

    async def _idle(self, connection: Connection, until: float | None = None) -> int:
        """IDLE until the server reports a change, the connection drops, it is time to
        renew or ``until`` seconds passed; the kinds of change reported (0: none)."""
        if until is not None and until <= 0:
            return 0
        restart = self.settings.imap_idle_restart
        return await connection.idle(restart if until is None else min(until, restart), PUSH_SETTLE)

    async def _store_folders(self, connection: Connection, listed: list[parse.Folder]) -> None:
        """Store the listing; announce the folders that appeared or disappeared since
        the last one (the account's first listing announces nothing) and drop the
        index of those that disappeared."""
        if not listed:
            return  # an empty answer is a server hiccup, not every folder gone
        unique = {f.path: f for f in listed}
        async with self.db.sessions() as session:
            rows = await session.execute(
                select(Mailbox.path, Mailbox.special_use).where(Mailbox.account_id == self.account))
            # Not dict(rows): a Result has keys() (its column names), so dict() would index it.
            stored = {path: special_use for path, special_use in rows.tuples()}
        change = mailboxes.changes(stored, list(unique.values()))
        appeared = [await self._announce_new(connection, f) for f in change.appeared]
        statement = insert(Mailbox).values([
            {"account_id": self.account, "path": f.path, "special_use": f.special_use, "delimiter": f.delimiter}
            for f in unique.values()
        ])
        async with self.db.transaction() as session:
            await session.execute(statement.on_conflict_do_update(
                index_elements=["account_id", "path"],
                set_={"special_use": statement.excluded.special_use, "delimiter": statement.excluded.delimiter},
            ))
            if change.gone:
                paths = list(change.gone)
                await session.execute(delete(IndexedMessage).where(IndexedMessage.account_id == self.account,
                                                                   IndexedMessage.path.in_(paths)))
                await session.execute(delete(Mailbox).where(Mailbox.account_id == self.account,
                                                            Mailbox.path.in_(paths)))
            staged: list[events.Event] = [
                *appeared,
                *(events.MailboxDeleted(account=self.account, path=path, name=mailboxes.name_of(path, delimiter),
                                        special_use=special_use)
                  for path, (special_use, delimiter) in change.gone.items()),
            ]
            stage(session, *staged)
        if staged:
            await self.relay.publish_committed(staged)

    async def _announce_new(self, connection: Connection, folder: parse.Folder) -> events.Event:
        uidvalidity = None
        response = await connection.status(folder.path, "(UIDVALIDITY)")
        self.progress()
        if response.result == "OK":
            uidvalidity = folders.parse_status(response.lines, folder.path).get("uidvalidity")
        return events.MailboxNew(account=self.account, path=folder.path,
                                 name=mailboxes.name_of(folder.path, folder.delimiter),
                                 special_use=folder.special_use, uid_validity=uidvalidity)
