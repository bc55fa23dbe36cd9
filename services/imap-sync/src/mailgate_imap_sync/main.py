"""mailgate-imap-sync: watches the mailboxes of the accounts this replica leases.

Three loops:
* scan - every ``imap_scan_interval`` (and at once on ``account.changed``),
  record this replica as alive and, up to its fair share (IMAP accounts /
  live replicas; any excess is handed back),
  take leases of accounts nobody holds and start their watchers;
* heartbeat - every ``imap_heartbeat``, renew our leases; stop watchers whose
  lease is gone (taken over, account deleted) and restart those whose IMAP
  settings changed (so an update on any replica reaches the holder);
* the event relay, for events left behind by a crash.

The heartbeat also runs the watchdog (``watchdog.py``): a watcher that made
no progress for far longer than any step may take, outside IDLE, is
cancelled and started again; while one will not end, the replica is not ready.

Commands (``imap.append_sent``, ``imap.set_flags``) and requests
(``rpc.imap.fetch``: the api reading a message) are handled by whichever
replica receives them, over a command connection per account that is reused
and closed after a minute unused (see ``commands.py``).
On SIGTERM the watchers stop and the leases are released, so other replicas
take the accounts over at their next scan instead of waiting for expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from prometheus_client import Gauge

from mailgate_common import events, retention, topology
from mailgate_common.account_log import AccountLogs
from mailgate_common.bus import Bus, RpcReply
from mailgate_common.crypto import Sealer
from mailgate_common.db import Database
from mailgate_common.event_relay import EventRelay
from mailgate_common.local_addresses import LocalAddresses
from mailgate_common.malloc import fix_mmap_threshold
from mailgate_common.runtime import run
from mailgate_common.settings import Settings, load_settings_or_exit
from mailgate_common.tasks import cancel_and_wait
from mailgate_imap_sync import accounts, control, operations, state
from mailgate_imap_sync.commands import Commands
from mailgate_imap_sync.leases import Held, Leases
from mailgate_imap_sync.watchdog import Watchdog
from mailgate_imap_sync.watcher import Watcher

log = logging.getLogger("mailgate.imap-sync")

WATCHED = Gauge("mailgate_imap_accounts_watched", "Accounts this replica holds and watches")
# Watchers connecting and doing their first sync at once, per pooled database
# connection: enough to keep the pool busy while others wait on the IMAP server.
OPENING_PER_DB_CONNECTION = 2
# SIGTERM: watchers get this long to log out, then their sockets are just closed.
STOP_DEADLINE = 5.0
# No step of a watcher (one IMAP command: the timeout plus time for a large
# fetch; one database call: pool wait plus statement timeout) takes this long.
STALL_TIMEOUTS = 4
STALL_MARGIN = 60.0


class Watched(NamedTuple):
    task: asyncio.Task[None]
    watcher: Watcher


class ImapSyncService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url, pool_size=settings.db_pool_size)
        self.bus = Bus.from_settings(settings)
        self.relay = EventRelay(self.db, self.bus)
        # The previous secret too: during a rotation some credentials are still sealed with it.
        self.sealer = Sealer.from_settings(settings.secret, settings.secret_previous)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.leases = Leases(self.db, self.holder, settings.imap_lease_ttl, settings.imap_lease_batch)
        self.commands = Commands(settings, self.db, self.sealer)
        accounts.use_local_addresses(LocalAddresses.from_spec(settings.local_addresses))
        self.account_logs = AccountLogs(self.db)
        accounts.use_account_logs(self.account_logs)
        self.watchers: dict[str, Watched] = {}
        self.opening = asyncio.Semaphore(max(4, OPENING_PER_DB_CONNECTION * settings.db_pool_size))
        self.watchdog = Watchdog(STALL_TIMEOUTS * settings.imap_timeout + STALL_MARGIN, STOP_DEADLINE)
        self.scan_now = asyncio.Event()
        self.loops: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.bus.connect()
        await self.bus.consume(topology.IMAP_SYNC, self.on_event, self.settings.bus_prefetch)
        await self.bus.serve(topology.IMAP_RPC, self.on_request, self.settings.bus_prefetch)
        self.loops = [
            asyncio.create_task(self.scan_loop()),
            asyncio.create_task(self.heartbeat_loop()),
            asyncio.create_task(self.relay.run()),
            asyncio.create_task(self.commands.connections.run()),
            asyncio.create_task(self.account_logs.run()),
            asyncio.create_task(retention.run_periodically(lambda: retention.prune_bounces(self.db, self.settings))),
        ]
        log.info("imap-sync replica %s", self.holder)

    async def ready(self) -> bool:
        return self.bus.connected and self.watchdog.healthy and await self.db.ping()

    async def on_event(self, event: events.AnyEvent) -> None:
        if isinstance(event, events.AccountChanged):
            self.scan_now.set()
        elif isinstance(event, events.ImapAppendSent):
            await self.commands.append_sent(event)
        elif isinstance(event, events.ImapSetFlags):
            await self.commands.set_flags(event)
        elif isinstance(event, events.AccountCommand) and event.account:
            if event.account in self.watchers:
                await self._account_command(event.account, event.command)
            else:
                # Another replica watches it (or nobody yet): its heartbeat finds the mark.
                await control.mark(self.db, event.account, event.command, event.id)

    async def _account_command(self, account: str, command: str) -> None:
        entry = self.watchers.get(account)
        if entry is None:
            return
        log.info("%s: %s", account, command)

        async def restart(between: Callable[[], Awaitable[None]] | None) -> None:
            await self._stop_watchers([account])
            if between is not None:
                await between()
                # The heartbeat may have started a watcher meanwhile, on an index being wiped.
                await self._stop_watchers([account])
            if account not in self.watchers:
                self._start_watcher(account)

        await control.run(command, account, sync_now=entry.watcher.sync_now, restart=restart, db=self.db)

    async def on_request(self, event: events.AnyEvent) -> RpcReply:
        if isinstance(event, events.ImapFetch):
            return await self.commands.fetch(event)
        if isinstance(event, events.ImapCommand):
            return await operations.run(self.commands, event)
        return RpcReply(f"unknown request {event.routing_key}".encode(), 400, "text/plain")

    # --- leases -----------------------------------------------------------

    async def scan_loop(self) -> None:
        while True:
            full = False
            try:
                taken, excess = await self.leases.acquire()
                if taken:
                    log.info("took the leases of %d accounts", len(taken))
                for account in taken:
                    if account not in self.watchers:
                        self._start_watcher(account)
                # A full batch: more accounts are probably free.  Take the next batch
                # soon rather than a whole interval later (1,000 accounts would need
                # 100 intervals); the pause still lets replicas started together see
                # each other's heartbeat before one has taken everything.
                full = len(taken) >= self.leases.batch
                if excess > 0:
                    # A replica joined: hand some accounts over to it.
                    surplus = list(self.watchers)[:excess]
                    log.info("releasing %d accounts to other replicas", len(surplus))
                    await self._stop_watchers(surplus)
                    await self.leases.release(surplus)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("lease scan failed: %r", exc)
            pause = self.settings.imap_scan_interval / (10 if full else 1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.scan_now.wait(), pause)
            self.scan_now.clear()

    async def heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.imap_heartbeat)
            # Only watchers started before the renewal can be judged by it: a lease
            # the scan commits while the renewal runs is missing from its snapshot,
            # and the watcher just started for it must not be stopped as "lost".
            started = set(self.watchers)
            try:
                renewed = await self.leases.renew()
                held = {h.account: h.fingerprint for h in renewed}
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Cannot renew: the leases may lapse, so stop watching before another
                # replica starts (it waits for expiry, we stop now).
                log.warning("lease renewal failed, stopping watchers: %r", exc)
                held = {}
            await self._restart_hung()
            lost = [a for a in self.watchers if a in started and a not in held]
            if lost:
                log.info("leases of %d accounts lost, stopping their watchers: %s",
                         len(lost), ", ".join(lost[:10]))
                await self._stop_watchers(lost)
            # Against the settings each watcher runs with (it read them itself: no race
            # with a change made just after it started).
            changed = [a for a, fingerprint in held.items()
                       if a in self.watchers and self.watchers[a].watcher.fingerprint not in ("", fingerprint)]
            if changed:
                log.info("settings of %s changed, reconnecting", ", ".join(changed))
                await self._stop_watchers(changed)
            for account in held:
                if account not in self.watchers:
                    self._start_watcher(account)
            await self._pending_commands(renewed)

    async def _pending_commands(self, renewed: list[Held]) -> None:
        """Commands other replicas left for accounts we watch (see control.py)."""
        for held in renewed:
            command = control.strongest(held.commands)
            if command is None or held.account not in self.watchers or held.commands is None:
                continue
            try:
                await control.clear(self.db, held.account, held.commands)
                await self._account_command(held.account, command)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s: %s failed: %r", held.account, command, exc)

    async def _restart_hung(self) -> None:
        for account in self.watchdog.hung((a, w.watcher) for a, w in self.watchers.items()):
            entry = self.watchers.pop(account, None)
            if entry is None:
                continue
            state.forget(account)
            await self.watchdog.stop(account, entry.task)
            # The lease is still ours: watch the account afresh.
            if account not in self.watchers:
                self._start_watcher(account)

    def _start_watcher(self, account: str) -> None:
        watcher = Watcher(self.settings, self.db, self.relay, self.sealer, account, self.opening)
        task = asyncio.create_task(watcher.run(), name=f"watch:{account}")
        self.watchers[account] = Watched(task, watcher)
        WATCHED.set(len(self.watchers))

        def done(t: asyncio.Task[None]) -> None:
            if not t.cancelled() and t.exception() is not None:
                log.error("watcher of %s crashed: %r", account, t.exception())
            current = self.watchers.get(account)
            if current is not None and current.task is t:
                del self.watchers[account]
                WATCHED.set(len(self.watchers))

        task.add_done_callback(done)

    async def _stop_watchers(self, accounts: list[str], deadline: float | None = None) -> None:
        """Stop these watchers all at once (each closes its connection as it ends).

        Concurrently: one by one, a thousand polite LOGOUTs took minutes.  With a
        ``deadline``, watchers still closing after it are left behind (shutdown:
        the process exit closes their sockets).  Without one this returns only
        once every watcher has ended: the caller may then hand the lease over.
        """
        tasks = []
        for account in accounts:
            entry = self.watchers.pop(account, None)
            if entry is not None:
                tasks.append(entry.task)
            state.forget(account)
        WATCHED.set(len(self.watchers))
        pending = await cancel_and_wait(tasks, deadline)
        if pending:
            log.warning("%d watchers still closing after %.0f s, leaving them", len(pending), deadline)

    # --- shutdown ---------------------------------------------------------

    async def stop(self) -> None:
        started = time.monotonic()
        await self.bus.stop_consuming(grace=20)
        await cancel_and_wait(self.loops)
        log.info("stop: loops done after %.1f s", time.monotonic() - started)
        accounts = list(self.watchers)
        await self._stop_watchers(accounts, STOP_DEADLINE)
        log.info("stop: %d watchers done after %.1f s", len(accounts), time.monotonic() - started)
        try:
            await self.leases.release(accounts, leaving=True)
        except Exception as exc:
            log.warning("could not release leases (they expire on their own): %r", exc)
        log.info("stop: leases released after %.1f s", time.monotonic() - started)
        await self.commands.connections.close()
        await self.bus.close()
        await self.db.dispose()
        log.info("stop: done after %.1f s", time.monotonic() - started)


def main() -> None:
    settings = load_settings_or_exit()
    fix_mmap_threshold()
    # Python's default young generation: memory per watched account is what counts here.
    run("imap-sync", settings, ImapSyncService(settings), young_generation=None)
