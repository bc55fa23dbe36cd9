"""EmailEngine's per-list blocklists (/v1/blocklists, /v1/blocklist/{listId})."""
