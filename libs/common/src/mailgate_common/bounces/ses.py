"""Amazon SES notifications (Bounce / Complaint / Delivery) e-mailed as JSON via SNS."""

from __future__ import annotations

import json
import re
from typing import Any

from . import codes, reasons
from .model import BouncedRecipient, BounceReport

_START = re.compile(r'\{\s*"(?:notificationType|eventType|Type)"')


def _load(text: str) -> dict[str, Any] | None:
    m = _START.search(text)
    if not m:
        return None
    # Mail relays break lines longer than 998 octets with "!" + newline + space.
    body = re.sub(r"!\n ", "", text[m.start() :]).replace("\n", "")
    try:
        obj, _ = json.JSONDecoder().raw_decode(body)
    except ValueError:
        return None
    if isinstance(obj, dict) and isinstance(obj.get("Message"), str):
        try:
            inner = json.loads(obj["Message"])  # an SNS envelope around the SES event
        except ValueError:
            return None
        obj = inner
    return obj if isinstance(obj, dict) else None


def parse(text: str) -> BounceReport | None:
    """A report if text carries an SES event, else None."""
    obj = _load(text)
    if obj is None:
        return None
    kind = str(obj.get("notificationType") or obj.get("eventType") or "")
    raw_mail = obj.get("mail")
    mail: dict[str, Any] = raw_mail if isinstance(raw_mail, dict) else {}
    common = mail.get("commonHeaders")
    headers: dict[str, Any] = common if isinstance(common, dict) else {}
    message_id = str(headers.get("messageId") or "").strip("<>") or None
    if kind == "Bounce":
        bounce = obj.get("bounce") or {}
        soft = bounce.get("bounceType") == "Transient"
        mta = str(bounce.get("reportingMTA") or "").partition(";")[2].strip() or None
        out: list[BouncedRecipient] = []
        for r in bounce.get("bouncedRecipients") or []:
            diagnostic = str(r.get("diagnosticCode") or "")
            diagnostic = (
                diagnostic.partition(";")[2].strip() if ";" in diagnostic[:10] else diagnostic
            )
            status = codes.clean_status(r.get("status")) or codes.find_status(diagnostic)
            reply = codes.find_reply_code(diagnostic)
            action = str(r.get("action") or ("delayed" if soft else "failed"))
            reason = reasons.classify(
                reasons.Facts(
                    diagnostic=diagnostic,
                    status=status or "",
                    reply_code=str(reply or ""),
                    action=action,
                    command=reasons.find_command(diagnostic),
                    diagnostic_type="SMTP",
                )
            )
            out.append(
                BouncedRecipient(
                    address=str(r.get("emailAddress") or ""),
                    action=action,
                    status=status,
                    reply_code=reply,
                    diagnostic=diagnostic or None,
                    reason=reason,
                    hard=reasons.is_hard(reason, status, reply) and not soft,
                    mta=mta,
                )
            )
        return BounceReport(
            kind="bounce", message_id=message_id, recipients=[r for r in out if r.address]
        )
    if kind == "Complaint":
        complaint = obj.get("complaint") or {}
        ftype = str(complaint.get("complaintFeedbackType") or "abuse")
        found = [
            BouncedRecipient(
                address=str(r.get("emailAddress")),
                action="",
                reason="feedback",
                feedback_type=ftype,
            )
            for r in complaint.get("complainedRecipients") or []
            if r.get("emailAddress")
        ]
        return BounceReport(
            kind="complaint", message_id=message_id, recipients=found, feedback_type=ftype
        )
    if kind == "Delivery":
        delivery = obj.get("delivery") or {}
        response = str(delivery.get("smtpResponse") or "")
        found = [
            BouncedRecipient(
                address=str(a),
                action="delivered",
                status=codes.find_status(response) or "2.0.0",
                reply_code=codes.find_reply_code(response),
                diagnostic=response or None,
                reason="delivered",
                mta=str(delivery.get("reportingMTA") or "") or None,
            )
            for a in delivery.get("recipients") or []
        ]
        return BounceReport(kind="delivered", message_id=message_id, recipients=found)
    return None
