"""The SMTP server password is kept as a salted scrypt hash (pure logic)."""

from __future__ import annotations

import hashlib

from mailgate_common.passwords import hash_password, verify_password


def test_a_stored_password_is_salted_and_checks_only_against_itself() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first != second and first.startswith("scrypt:")
    assert "correct horse" not in first
    assert verify_password(first, "correct horse")
    assert not verify_password(first, "correct horse!")
    assert verify_password(first, "correct horse")  # remembered, same answer


def test_hashes_from_before_and_values_set_by_hand_still_work() -> None:
    legacy = "sha256:" + hashlib.sha256(b"old secret").hexdigest()
    assert verify_password(legacy, "old secret") and not verify_password(legacy, "other")
    assert verify_password("plain-by-hand", "plain-by-hand")
    assert not verify_password("scrypt:zz:broken", "anything")
