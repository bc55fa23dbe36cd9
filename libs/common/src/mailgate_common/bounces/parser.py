"""parse_bounce(): decide what a message is and pull out the failed recipients."""

from __future__ import annotations

import re
from collections.abc import Sequence
from email.message import Message

from . import arf, autoreply, codes, dsn, lhost, mlm, reasons, ses, text
from . import lhost as lhost_mod
from . import text as text_mod
from .mime import Parts, header_text, load, split_parts
from .model import BouncedRecipient, BounceReport

_SYSTEM_FROM = re.compile(
    r"(?i)\b(?:mailer-daemon|mail-daemon|maildaemon|postmaster|mdaemon|mail delivery|"
    r"mail administrator|mailer_daemon|mail system|delivery subsystem|mailadmin)\b"
)
_BOUNCE_SUBJECT = re.compile(
    r"(?i)undeliver|delivery (?:status|notification|failure|failed|problem|report|"
    r"incomplete|delayed)|returned mail|failure notice|mail delivery fail|non-?delivery|"
    r"could not be delivered|not (?:be )?delivered|delivery failure|mail system error|"
    r"nondeliverable|\brejected\b|\bbounce|could not send|delayed mail|failed delivery|"
    r"error sending|returned to sender|mail failure|failed mail|\bndn\b|message blocked|"
    r"unzustellbar|nicht zustellbar|non remis|\u4e0d\u9054|\u914d\u4fe1|"
    r"\u30a8\u30e9\u30fc|warning: message|mail could not|delivery error|delivery warning|"
    r"permanent error|failure delivery|notice of|message you sent|mail returned"
)
_BOUNCE_BODY = re.compile(
    r"(?i)could ?n[o']t be delivered|undeliverable|delivery to the following|"
    r"delivery (?:has )?failed|following address(?:\(es\)|es)? failed|permanent (?:error|failure)|"
    r"(?:was|wasn't|were) not (?:able to )?(?:be )?deliver|wasn't able to deliver|"
    r"unable to deliver|not be delivered|could not be sent|delivery problem|failed to deliver|"
    r"user unknown|unknown user|was rejected|has been rejected|did not reach|"
    r"mail delivery failed|message (?:was )?(?:not|could not be) delivered|"
    r"delivery attempts|not yet been delivered|delayed|error from remote|"
    r"remote (?:host|server) said|returned to (?:you|sender)|the following recipient|"
    r"transcript of session|delivery failure|failed recipient|smtp error|"
    r"could not deliver|couldn't deliver|no such user|\b5\d\d[ -][45]\.\d|"
    r"\u9001\u4fe1|\u5b9b\u5148|\u914d\u9054|\u5c4a\u304b"
)
_DELAYED = re.compile(
    r"(?i)has not yet been delivered|not been delivered yet|delivery (?:is|has been) delayed|"
    r"will (?:continue to )?(?:try|retry|be retried)|still trying|delay(?:ed)? (?:mail|message)|"
    r"^warning:|delivery status notification \(delay\)|temporarily deferred|"
    r"no action is required on your part"
)
_MSGID = re.compile(r"(?im)^Message-I[Dd][ \t]*:[ \t]*\n?[ \t]*<?([^\s<>]+@[^\s<>]+?)>?[ \t]*$")
_REMOTE_HOST = re.compile(
    r"(?i)(?:remote host|host|server|by|from)\s+\[?([A-Za-z0-9][A-Za-z0-9.-]*\.[A-Za-z]{2,}"
    r"|\d{1,3}(?:\.\d{1,3}){3})\]?"
)


_NO_ORIGIN = lhost.Origin()
# RFC 5322 violations of the returned message, as MTAs and filters word them.
_MALFORMED_MESSAGE = re.compile(
    r"(?i)duplicate header|not rfc ?5322 compliant|rfcmessagenoncompliant|"
    r"multiple (?:from|to|cc|subject|date|sender|message-id) header"
)


def parse_bounce(raw: bytes) -> BounceReport:
    # What a bounce says comes first: the notice, the report, the returned headers.
    # Past this a message holds only the rest of a returned original.
    return _parse(load(raw[: text.MAX_MESSAGE]), depth=0)


def _parse(msg: Message, depth: int) -> BounceReport:
    parts = split_parts(msg)
    notice = text.bounded("\n".join(parts.notice))
    explanation, returned = text.split_notice(notice)
    message_id = _original_message_id(msg, parts, returned)

    if not parts.reports and not parts.feedback:
        event = ses.parse(notice)
        if event is not None:
            return event

    if arf.is_feedback(msg, parts):
        return arf.parse(msg, parts, message_id)

    origin = lhost.identify(msg)
    exclude = _sender_addresses(msg, parts)
    pairs: list[tuple[str, str]] = []
    for part in parts.reports:
        pairs.extend(dsn.fields_of_part(part))
    if not pairs:
        pairs = dsn.fields_of_text(explanation)
    report = dsn.build(pairs)

    if report.recipients:
        blocks = _Blocks(explanation, report.recipients)
        recipients = [_from_dsn(r, report, blocks, origin) for r in report.recipients]
        if all(_succeeded(r) for r in recipients):
            return BounceReport(kind="delivered", message_id=message_id, recipients=recipients)
        recipients = [r for r in recipients if not _succeeded(r)]
        return BounceReport(kind="bounce", message_id=message_id, recipients=recipients)

    listed = mlm.parse(msg, explanation, message_id)
    if listed is not None:
        return listed

    subject = header_text(msg, "Subject")
    sender = header_text(msg, "From")
    signals = sum(
        (
            bool(_SYSTEM_FROM.search(sender)),
            bool(_BOUNCE_SUBJECT.search(subject)),
            bool(_BOUNCE_BODY.search(explanation)),
            msg.get("X-Failed-Recipients") is not None,
        )
    )
    is_auto = autoreply.looks_like_autoreply(msg, explanation)
    if signals >= 1 and not (is_auto and signals < 2):
        recipients = _from_text(msg, explanation, subject, exclude, [], origin)
        if recipients:
            return BounceReport(kind="bounce", message_id=message_id, recipients=recipients)
        # Some gateways wrap the real bounce, unchanged, inside their own notice.
        for inner in parts.attached if depth == 0 else []:
            nested = _parse(inner, depth + 1)
            if nested.kind == "bounce" and nested.recipients:
                return nested
        # ... or paste it, headers and all, as text below their own explanation.
        pasted = _pasted_message(returned) if depth == 0 else None
        if pasted is not None:
            nested = _parse(pasted, depth + 1)
            if nested.kind == "bounce" and nested.recipients:
                return nested
        recipients = _from_text(
            msg, explanation, subject, exclude, _original_to(parts, returned), origin
        )
        if recipients:
            return BounceReport(kind="bounce", message_id=message_id, recipients=recipients)
    if is_auto:
        # The person who is away is the recipient the auto-reply is about.
        # (A mail system writing "auto-replied" is not a person on holiday.)
        away = "" if _SYSTEM_FROM.search(sender) else dsn.address_in(sender)
        found = [BouncedRecipient(address=away, action="", reason="vacation")] if away else []
        return BounceReport(kind="autoreply", message_id=message_id, recipients=found)
    return BounceReport(kind="none", message_id=message_id)


def _pasted_message(returned: str) -> Message | None:
    """A whole message (a bounce forwarded inline) quoted as text after the notice."""
    m = re.search(r"(?m)^(?:From \S+ .*\n)?(?=(?:Return-Path|Received|Date|From|X-[\w-]+):)", returned)
    if m is None or not re.search(r"(?im)^content-type:\s*multipart/report", returned):
        return None
    return load(returned[m.start() :].encode("utf-8", "surrogateescape"))


def _succeeded(r: BouncedRecipient) -> bool:
    return r.action in ("delivered", "relayed", "expanded", "deliverable") or bool(
        r.status and r.status.startswith("2.")
    )


def _sender_addresses(msg: Message, parts: Parts) -> set[str]:
    """Addresses of whoever sent the original message: never a failed recipient."""
    out: set[str] = set()
    for name in ("To", "Return-Path", "From", "Reply-To", "Sender"):
        for m in text.ADDR_RE.finditer(header_text(msg, name)):
            out.add(m.group(0).lower())
    for original in parts.originals:
        for name in ("From", "Return-Path", "Sender", "Reply-To"):
            for m in text.ADDR_RE.finditer(header_text(original, name)):
                out.add(m.group(0).lower())
    return out


def _original_message_id(msg: Message, parts: Parts, returned: str) -> str | None:
    for original in parts.originals:
        value = header_text(original, "Message-ID")
        if value:
            return value.strip().strip("<>").strip() or None
    m = _MSGID.search(returned)
    if m:
        return str(m.group(1))
    for name in ("In-Reply-To", "References"):
        ids: list[str] = re.findall(r"<([^<>\s]+)>", header_text(msg, name))
        if ids:
            return ids[-1]
    return None


def _finish(
    address: str,
    action: str,
    status_field: str | None,
    diagnostic: str,
    context: str,
    *,
    diagnostic_type: str = "",
    mta: str | None = None,
    notice: str = "",
    rhost: str = "",
    lhost: str = "",
    origin: lhost_mod.Origin = _NO_ORIGIN,
    preset: str = "",
    lead: str = "",
) -> BouncedRecipient:
    """Status, reply code and reason for one recipient from everything we know about it."""
    # Read from at most this much (the corpus's longest evidence is 1,650 characters): a
    # notice naming fifty addresses must not be read in full fifty times.
    diagnostic, context = diagnostic[: text_mod.MAX_EVIDENCE], context[: text_mod.MAX_EVIDENCE]
    reply = codes.find_reply_code(diagnostic) or codes.find_reply_code(context)
    text_status = codes.find_status(diagnostic) or codes.find_status(context)
    status = codes.prefer(codes.clean_status(status_field), text_status, reply)
    evidence = codes.join_multiline_reply(diagnostic)
    remark = re.search(r"\(([^()]*[A-Za-z][^()]*)\)", status_field or "")
    if remark:
        # "Status: 5.2.1 (mailbox disabled, not accepting messages)": the reporting MTA's
        # own words for the status are evidence as good as the remote server's.
        evidence = f"{evidence} {remark.group(1)}".strip()
    truncated = re.match(r"\s*[245]\d\d-", diagnostic) is not None and "\n" not in diagnostic
    if truncated:
        # A one-line "550-..." is the first line of a multi-line reply (Sendmail keeps only
        # that in Diagnostic-Code); the whole reply is in the session transcript.
        evidence = _whole_reply(diagnostic, notice) or evidence
    if lead and _MALFORMED_MESSAGE.search(lead):
        # A content filter reports a malformed message (amavisd-new: 'Duplicate header
        # field: "From"') in its own explanation: it is about the message, which every
        # recipient shares, not in any one recipient's Diagnostic-Code.
        evidence = f"{text_mod.collapse(lead)} {evidence}"
    # A block that only repeats the address ("* user@example.com") says nothing itself:
    # the answer is elsewhere in the notice (below a "Technical details" heading, ...).
    wordless = len(_bare(evidence)) <= 12
    if wordless or "(in reply to" in context.lower() or truncated:
        # Postfix puts "(in reply to MAIL FROM command)" only in the human-readable part.
        evidence = f"{evidence} {context}".strip()
    facts = reasons.Facts(
        diagnostic=evidence[: text_mod.MAX_EVIDENCE],
        status=status or "",
        reply_code=str(reply or ""),
        action=action,
        # The command belongs to this recipient's own answer; the whole notice may quote
        # other recipients' sessions.
        command=_transcript_command(diagnostic, notice)
        or reasons.find_command(diagnostic)
        or reasons.find_command(context),
        diagnostic_type=diagnostic_type,
        destination=address.rsplit("@", 1)[-1].lower(),
        rhost=rhost or _remote_host(diagnostic) or _remote_host(context),
        lhost=lhost,
        notice=notice,
        own_diagnostic=diagnostic,
        reason=preset,
    )
    verdict = lhost_mod.decide(origin, evidence, notice, status or "")
    facts.reason = verdict.reason or facts.reason
    facts.command = verdict.command or facts.command
    if not status and address.lower().endswith("@googlegroups.com"):
        facts.reason = "rejected"  # Google Groups refuses posts from non-members
    reason = verdict.reason if verdict.final else reasons.classify(facts)
    at = context.lower().rfind(address.lower())
    if (
        reason == "onhold"
        and wordless
        and at >= 0
        and not _bare(context[at + len(address) :])
        and not _bare(_paragraph_of(address, notice))
    ):
        # Nothing follows the address nor shares its paragraph, where a server's answer
        # would be: only the notice's boilerplate precedes it. Nothing to hold on to.
        reason = "undefined"
    return BouncedRecipient(
        address=address,
        action=action or "failed",
        status=status,
        reply_code=reply,
        diagnostic=diagnostic or None,
        reason=reason,
        hard=reasons.is_hard(reason, status, reply),
        mta=mta,
    )


_TALKING_TO = re.compile(r"(?i)^\s*(?:\.\.\.\s*)?while talking to |^\s*-+ transcript of session")


def _transcript_command(diagnostic: str, notice: str) -> str:
    """The command the server was answering, read from the session transcript.

    Sendmail quotes the session: ">>> DATA" then "<<< 550 ...". A reply with no command
    before it since "... while talking to host:" answered the greeting (CONN).
    """
    key = " ".join(diagnostic.split())[:40]
    if len(key) < 8 or "<<<" not in notice:
        return ""
    lines = notice.split("\n")
    for i, line in enumerate(lines):
        if "<<<" not in line or key not in " ".join(line.split()):
            continue
        for prev in reversed(lines[:i]):
            sent = prev.strip()
            if sent.startswith(">>>"):
                return reasons.find_command(sent[3:])
            if _TALKING_TO.match(prev):
                return "CONN"
            if not sent:
                return ""
        return ""
    return ""


def _paragraph_of(address: str, notice: str) -> str:
    """The blank-line delimited paragraph naming the address, without the address."""
    low = address.lower()
    for paragraph in re.split(r"\n[ \t]*\n", notice):
        if low in paragraph.lower():
            return re.sub(re.escape(address), " ", paragraph, flags=re.I)
    return ""


def _bare(text: str) -> str:
    """Text without addresses and ASCII punctuation: what is left is the server's words.

    Anything else counts as words, even characters of a charset we failed to decode.
    """
    return re.sub(r"[\s!-/:-@\[-`{-~]+", " ", text_mod.ADDR_RE.sub(" ", text)).strip()


_HOST_SAID = re.compile(
    r"(?i)\bhost\s+\[?([A-Za-z0-9][A-Za-z0-9-]*(?:\.[A-Za-z0-9-]+)+)\]?\s*[\[(]?[\d.:a-f]*[\])]?\s*(?:said|:)"
)


def _remote_host(text: str) -> str:
    """The server named in "host mx.example.net[192.0.2.1] said:" (Postfix, Exim, qmail)."""
    m = _HOST_SAID.search(text)
    return m.group(1).rstrip(".") if m else ""


def _host_of(value: str) -> str:
    """'mx.example.jp [192.0.2.1]' -> 'mx.example.jp' (a Remote-MTA or Reporting-MTA value)."""
    for token in value.replace("[", " ").replace("]", " ").split():
        if not re.fullmatch(r"[\d.:]+", token):
            return token.strip("().").lower()
    return ""


def _whole_reply(first_line: str, notice: str) -> str:
    """The multi-line SMTP reply whose first line is first_line, as quoted in a transcript.

    Transcript lines carry a prefix ("<<< ") and every line of the reply repeats the code
    ("550-5.7.1 ..."); the last line has a space after the code instead of the dash.
    """
    key = first_line.strip()
    lines = notice.split("\n")
    best = ""
    for i, line in enumerate(lines):
        at = line.find(key) if key else -1
        if at < 0:
            continue
        prefix = line[:at]
        out = [line[at:]]
        for nxt in lines[i + 1 :]:
            body = nxt[len(prefix) :]
            if not nxt.startswith(prefix) or not re.match(r"[245]\d\d[- ]", body):
                break
            out.append(body)
            if re.match(r"[245]\d\d ", body):
                break
        # The notice may quote the first line alone elsewhere ("(reason: 550-...)").
        whole = codes.join_multiline_reply(" ".join(out))
        best = whole if len(whole) > len(best) else best
    return best


class _Blocks:
    """Finds each recipient's answer in a notice naming several of them.

    Which recipients each line names is worked out once per notice: per recipient
    it cost a pass over every line for every other recipient (cubic in recipients).
    """

    def __init__(self, explanation: str, recipients: Sequence[dsn.DsnRecipient]) -> None:
        self.explanation = explanation
        self.lines = explanation.lower().split("\n")
        addresses = {r.address.lower() for r in recipients}
        self.named = [{a for a in addresses if a in line} for line in self.lines]

    def block_for(self, address: str, others: set[str]) -> str:
        low = address.lower()
        # A line that names another recipient starts that recipient's own answer.
        stops = {n for n, line in enumerate(self.lines) if self.named[n] & others and low not in line}
        for i, line in enumerate(self.lines):
            if low in line:
                return text.block_after(self.explanation, i, stops)
        return ""


def _from_dsn(
    r: dsn.DsnRecipient, report: dsn.Dsn, blocks: _Blocks, origin: lhost.Origin
) -> BouncedRecipient:
    explanation = blocks.explanation
    others = {o.address.lower() for o in report.recipients if o is not r} - {r.address.lower()}
    context = blocks.block_for(r.address, others) or (r.original and blocks.block_for(r.original, others)) or ""
    diagnostic = r.diagnostic
    mta = r.remote_mta or report.reporting_mta or None
    return _finish(
        r.address,
        r.action or "failed",
        r.status,
        diagnostic,
        context,
        diagnostic_type=r.diagnostic_type,
        mta=mta,
        notice=explanation,
        rhost=_host_of(r.remote_mta),
        lhost=_host_of(report.reporting_mta),
        origin=origin,
        preset=lhost.POWERMTA_CATEGORIES.get(r.fields.get("x-powermta-bouncecategory", "").lower(), ""),
        lead=explanation if len(report.recipients) == 1 else "",
    )


def _original_to(parts: Parts, returned: str) -> list[str]:
    """Recipients named in the To: of the returned original (attached or quoted as text)."""
    for original in parts.originals:
        found = [m.group(0) for m in text.ADDR_RE.finditer(header_text(original, "To"))]
        if found:
            return found
    m = re.search(r"(?im)^To:[ \t]*(.+)$", returned)
    return [a.group(0) for a in text.ADDR_RE.finditer(m.group(1))] if m else []


# "RCPT TO: addr" in a list of message details echoes the envelope: the server's
# answer is elsewhere in the notice, not next to it.
_ENVELOPE_ECHO = re.compile(r"(?i)^\s*rcpt to:\s*<?[^\s<>]+@[^\s<>]+>?\s*$")


def _from_text(
    msg: Message,
    explanation: str,
    subject: str,
    exclude: set[str],
    original_to: list[str],
    origin: lhost.Origin,
) -> list[BouncedRecipient]:
    # X-Failed-Recipients (Exim, Google) is the MTA's own list: better than any guess.
    failed = [m.group(0) for m in text.ADDR_RE.finditer(header_text(msg, "X-Failed-Recipients"))]
    found = text.pick_recipients(explanation, exclude)
    listed = explanation.lower()
    strangers = [a for a, _ in found if a.lower() not in exclude]
    if failed and (not strangers or any(a.lower() in listed for a in failed)):
        # ... unless the notice never names any of them while listing others: then the
        # header was written for another hop (an alias or a forward) than the notice.
        lines = {a.lower(): n for a, n in found}
        found = [(a, lines.get(a.lower(), -1)) for a in dict.fromkeys(failed)]
    if not found:
        # The notice names nobody (MMS gateways, terse MTAs): the message it returns was
        # addressed to the recipient that failed.
        found = [(a, -1) for a in dict.fromkeys(original_to) if a.lower() not in exclude]
        guessed = True
    else:
        guessed = False
    if not found:
        return []
    found = found[: text.MAX_RECIPIENTS]
    delayed = bool(_DELAYED.search(subject)) or bool(_DELAYED.search(explanation))
    stops = {line for _, line in found}
    out: list[BouncedRecipient] = []
    for address, line_no in found:
        echoed = line_no >= 0 and _ENVELOPE_ECHO.match(explanation.split("\n")[line_no]) is not None
        block = (
            text.block_after(explanation, line_no, stops - {line_no})
            if line_no >= 0 and not echoed
            else text.collapse(explanation)
        )
        host = _REMOTE_HOST.search(block)
        found_one = _finish(
            address,
            "delayed" if delayed else "failed",
            None,
            block,
            text.collapse(explanation),
            mta=host.group(1) if host else None,
            notice=explanation,
            rhost=host.group(1) if host else "",
            origin=origin,
        )
        if guessed and found_one.reason == "onhold":
            # No answer of any server is quoted for this recipient: nothing to hold on to.
            found_one.reason = "undefined"
        out.append(found_one)
    return out
