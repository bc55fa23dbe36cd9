"""PostgreSQL access: engine/session factory and the ORM models."""

from mailgate_common.db.session import Database

__all__ = ["Database"]
