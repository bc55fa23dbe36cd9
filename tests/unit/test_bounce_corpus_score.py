"""The bounce parser must not regress on the Sisimai corpus (floors only ever rise)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate_common.bounces.score import CorpusScore, score_corpus

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bounces" / "sisimai"

# folder: (detection, recipient, status, reason) as fractions; measured, rounded down.
FLOORS: dict[str, tuple[float, float, float, float]] = {
    "maildir/bsd": (1.00, 0.99, 0.99, 0.99),
    "maildir/dos": (1.00, 0.97, 1.00, 0.97),
    "maildir/mac": (1.00, 0.97, 1.00, 0.97),
    "maildir/err": (1.00, 1.00, 0.97, 1.00),
    "maildir/tmp": (1.00, 1.00, 1.00, 1.00),
    "to-be-debugged-because/something-is-wrong": (1.00, 1.00, 1.00, 1.00),
}


@pytest.fixture(scope="module")
def result() -> CorpusScore:
    return score_corpus(CORPUS)


@pytest.mark.parametrize("folder", sorted(FLOORS))
def test_folder_floor(result: CorpusScore, folder: str) -> None:
    score = result.folders[folder]
    detection, recipient, status, reason = FLOORS[folder]
    assert score.detection.rate >= detection, score.detection
    assert score.recipient.rate >= recipient, score.recipient
    assert score.status.rate >= status, score.status
    assert score.reason.rate >= reason, score.reason


def test_non_bounces(result: CorpusScore) -> None:
    bsd = result.folders["maildir/bsd"]
    assert bsd.false_positives.hit == 0
    assert bsd.complaints.rate == 1.0
    assert bsd.autoreplies.rate == 1.0
    assert bsd.delivered.rate == 1.0
    # maildir/not holds one genuine-looking "email bounce notification" that upstream calls
    # a non-bounce (rb-issue-368); the other two must never be flagged.
    assert result.folders["maildir/not"].false_positives.hit <= 1


def test_all_folders_are_scored(result: CorpusScore) -> None:
    assert set(FLOORS) | {"maildir/not"} == set(result.folders)
