"""API tokens on every /v1 route: who may call what, and the token admin routes."""

from mailgate_api.auth.plugin import AuthPlugin

__all__ = ["AuthPlugin"]
