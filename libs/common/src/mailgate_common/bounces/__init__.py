"""Bounce parsing: DSNs, text bounces, ARF complaints and auto-replies, without I/O.

>>> report = parse_bounce(raw_bytes)
>>> report.kind, [r.address for r in report.recipients]
"""

from .model import BouncedRecipient, BounceReport
from .parser import parse_bounce

__all__ = ["BounceReport", "BouncedRecipient", "parse_bounce"]
