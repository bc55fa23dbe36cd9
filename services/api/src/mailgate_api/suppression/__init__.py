"""Suppression list API: addresses that are never mailed, per account and global."""
