"""One-click unsubscribe (RFC 8058) and the unsubscribe page (/unsubscribe)."""
