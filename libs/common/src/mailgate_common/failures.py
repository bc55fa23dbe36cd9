"""Will this failure pass by itself?  Outages are waited out; everything else is a defect.

An event whose handler fails because PostgreSQL is restarting, the broker is
blocked or a mail server is unreachable must be retried for as long as the
outage lasts: dead-lettering it after a few minutes loses a webhook or a Sent
copy for good.  A handler that fails on the event itself (bad data, a bug)
fails the same way every time and belongs in the dead-letter queue after a
few tries, where an operator can read it and re-drive it once fixed.
"""

from __future__ import annotations

import asyncpg
import sqlalchemy.exc

from mailgate_common.db.session import CONNECTION_ERRORS


class TransientError(Exception):
    """Raised (or inherited) by code that knows its failure is an outage of a peer."""


# Besides the connection errors (which include a server starting or shutting
# down): the pool waited in vain for a connection, too many clients are
# connected, a concurrent transaction won (a retry succeeds), the server is a
# standby during a failover, or a connection broke mid-operation as the server
# went away (asyncpg's "another operation is in progress").
_TRANSIENT: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    TransientError,
    sqlalchemy.exc.TimeoutError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.ReadOnlySQLTransactionError,
    asyncpg.InternalClientError,
)


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) is an outage, not a property of the work."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _TRANSIENT):
            return True
        if isinstance(current, sqlalchemy.exc.DBAPIError) and current.connection_invalidated:
            return True
        current = current.__cause__ or current.__context__
    return _is_broker_error(exc)


def _is_broker_error(exc: BaseException) -> bool:
    # Imported here: aiormq is only needed by processes that talk to the broker.
    import aiormq.exceptions

    return isinstance(exc, aiormq.exceptions.AMQPConnectionError | aiormq.exceptions.ChannelInvalidStateError)
