"""Secrets never reach an account's protocol log."""

from __future__ import annotations

from mailgate_common.account_log import MASK, Masker


def test_imap_login_password_is_masked() -> None:
    masker = Masker()
    assert masker.client('A1 LOGIN "user1" "s3cret pass"') == f'A1 LOGIN "user1" {MASK}'
    assert masker.client("A2 LOGIN user1 s3cret") == f"A2 LOGIN user1 {MASK}"
    assert masker.server("A2 OK Logged in") == "A2 OK Logged in"
    assert masker.client("A3 SELECT INBOX") == "A3 SELECT INBOX"


def test_imap_authenticate_and_its_continuations_are_masked() -> None:
    masker = Masker()
    assert masker.client("A1 AUTHENTICATE PLAIN AHVzZXIxAHNlY3JldA==") == f"A1 AUTHENTICATE PLAIN {MASK}"
    masker = Masker()
    assert masker.client("A1 AUTHENTICATE XOAUTH2") == "A1 AUTHENTICATE XOAUTH2"
    assert masker.server("+ ") == "+ "
    assert masker.client("dXNlcj11c2VyAWF1dGg9QmVhcmVyIHRva2VuAQE=") == MASK
    assert masker.server("A1 OK done") == "A1 OK done"
    assert masker.client("A2 NOOP") == "A2 NOOP"


def test_smtp_auth_login_exchange_is_masked() -> None:
    masker = Masker()
    assert masker.client("AUTH LOGIN") == "AUTH LOGIN"
    assert masker.server("334 VXNlcm5hbWU6") == f"334 {MASK}"
    assert masker.client("dXNlcg==") == MASK
    assert masker.server("334 UGFzc3dvcmQ6") == f"334 {MASK}"
    assert masker.client("cGFzcw==") == MASK
    assert masker.server("235 2.7.0 Authentication successful") == "235 2.7.0 Authentication successful"
    assert masker.client("MAIL FROM:<a@example.com>") == "MAIL FROM:<a@example.com>"


def test_smtp_auth_plain_initial_response_is_masked() -> None:
    masker = Masker()
    assert masker.client("AUTH PLAIN AGFwaWtleQBzZWNyZXQ=") == f"AUTH PLAIN {MASK}"
    assert masker.server("535 5.7.8 Authentication failed") == "535 5.7.8 Authentication failed"
    assert masker.client("QUIT") == "QUIT"
