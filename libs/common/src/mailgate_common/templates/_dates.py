"""formatDate(timestamp, format, tzOffset) with moment.js tokens (English locale, server in UTC).

Timestamps: a number is milliseconds since the epoch; a string is ISO 8601 (date, date and time,
basic or extended, with Z or an offset); a missing value is now. Anything else formats as
"Invalid date" like moment. tzOffset: a string with an offset (+05:30, -0500, +05, Z) or a number
(minutes; -15..15 are hours); anything else leaves UTC.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

_ISO = re.compile(
    r"^\s*(?P<y>\d{4})(?:-(?P<m>\d\d)(?:-(?P<d>\d\d))?|(?P<bm>\d\d)(?P<bd>\d\d))?"
    r"(?:[T ](?P<H>\d\d)(?::?(?P<M>\d\d)(?::?(?P<S>\d\d)(?:[.,](?P<f>\d+))?)?)?)?"
    r"\s*(?P<tz>Z|[+-]\d\d(?::?\d\d)?)?\s*$",
    re.IGNORECASE,
)
_OFFSET = re.compile(r"Z|[+-]\d\d(?::?\d\d)?", re.IGNORECASE)
_TOKENS = re.compile(
    r"(\[[^\[]*\])|(\\)?(Mo|MM?M?M?|Do|DDDo|DD?D?D?|ddd?d?|do?|w[o|w]?|W[o|W]?|Qo?|YYYY|YY|gggg|GGGG"
    r"|e|E|a|A|hh?|HH?|kk?|mm?|ss?|S{1,9}|x|X|ZZ?|.)",
    re.DOTALL,
)
_LOCALIZED = re.compile(r"(\[[^\[]*\])|(\\)?(LTS|LT|LL?L?L?|l{1,4})")
_LONG = {
    "LTS": "h:mm:ss A",
    "LT": "h:mm A",
    "L": "MM/DD/YYYY",
    "LL": "MMMM D, YYYY",
    "LLL": "MMMM D, YYYY h:mm A",
    "LLLL": "dddd, MMMM D, YYYY h:mm A",
    "l": "M/D/YYYY",
    "ll": "MMM D, YYYY",
    "lll": "MMM D, YYYY h:mm A",
    "llll": "ddd, MMM D, YYYY h:mm A",
}
_MONTHS = "January February March April May June July August September October November December".split()
_DAYS = "Sunday Monday Tuesday Wednesday Thursday Friday Saturday".split()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_MS = 8.64e15


def _ordinal(n: int) -> str:
    if (n % 100) // 10 == 1:
        return f"{n}th"
    return f"{n}" + {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def _parse(value: Any) -> tuple[datetime, int] | None:
    """(instant as UTC datetime, milliseconds since the epoch) or None when invalid."""
    if value is None:
        now = datetime.now(UTC)
        return now, int(now.timestamp() * 1000)
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        if math.isnan(value) or abs(value) > _MAX_MS:
            return None
        ms = math.trunc(value)
        return _EPOCH + timedelta(milliseconds=ms), ms
    if not isinstance(value, str):
        return None
    match = _ISO.match(value)
    if not match:
        return None
    g = match.groupdict()
    try:
        month = int(g["m"] or g["bm"] or 1)
        day = int(g["d"] or g["bd"] or 1)
        frac = (g["f"] or "0")[:3].ljust(3, "0")
        hour = int(g["H"] or 0)
        if hour == 24:
            return None
        local = datetime(
            int(g["y"]), month, day, hour, int(g["M"] or 0), int(g["S"] or 0), int(frac) * 1000, tzinfo=UTC
        )
    except ValueError:
        return None
    if g["tz"]:
        local -= timedelta(minutes=_offset_minutes(g["tz"]) or 0)
    delta = local - _EPOCH
    ms = delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000
    return local, ms


def _offset_minutes(text: str) -> int | None:
    found = _OFFSET.findall(text)
    if not found:
        return None
    chunk = found[-1]
    if chunk.upper() == "Z":
        return 0
    digits = chunk[1:].replace(":", "")
    minutes = int(digits[:2]) * 60 + int(digits[2:4] or 0)
    return -minutes if chunk[0] == "-" else minutes


def _tz_minutes(offset: Any) -> int:
    if isinstance(offset, str):
        return _offset_minutes(offset) or 0
    if isinstance(offset, (int, float)) and not isinstance(offset, bool):
        if math.isnan(offset):
            return 0
        if abs(offset) < 16:
            offset = offset * 60
        return int(offset)
    return 0


def _zone(minutes: int, sep: str) -> str:
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}{sep}{minutes % 60:02d}"


def _week(dt: datetime, dow: int, doy: int) -> tuple[int, int]:
    """moment's weekOfYear: (week, week-year) for first day of week dow, doy."""
    fwd = 7 + dow - doy

    def first_week_offset(year: int) -> int:
        fwdlw = (7 + datetime(year, 1, fwd, tzinfo=UTC).weekday() + 1 - dow) % 7
        return -fwdlw + fwd - 1

    def weeks_in_year(year: int) -> int:
        days = 366 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 365
        return (days - first_week_offset(year) + first_week_offset(year + 1)) // 7

    day_of_year = dt.timetuple().tm_yday
    offset = first_week_offset(dt.year)
    week = (day_of_year - offset - 1) // 7 + 1
    if week < 1:
        return week + weeks_in_year(dt.year - 1), dt.year - 1
    if week > weeks_in_year(dt.year):
        return week - weeks_in_year(dt.year), dt.year + 1
    return week, dt.year


def _token(tok: str, dt: datetime, ms: int, tz: int) -> str:
    js_day = (dt.weekday() + 1) % 7
    hour12 = dt.hour % 12 or 12
    simple: dict[str, Any] = {
        "M": dt.month,
        "MM": f"{dt.month:02d}",
        "Mo": _ordinal(dt.month),
        "MMM": _MONTHS[dt.month - 1][:3],
        "MMMM": _MONTHS[dt.month - 1],
        "D": dt.day,
        "DD": f"{dt.day:02d}",
        "Do": _ordinal(dt.day),
        "DDD": dt.timetuple().tm_yday,
        "DDDD": f"{dt.timetuple().tm_yday:03d}",
        "DDDo": _ordinal(dt.timetuple().tm_yday),
        "d": js_day,
        "do": _ordinal(js_day),
        "dd": _DAYS[js_day][:2],
        "ddd": _DAYS[js_day][:3],
        "dddd": _DAYS[js_day],
        "e": js_day,
        "E": dt.isoweekday(),
        "Q": (dt.month - 1) // 3 + 1,
        "Qo": _ordinal((dt.month - 1) // 3 + 1),
        "YYYY": f"{dt.year:04d}",
        "YY": f"{dt.year % 100:02d}",
        "H": dt.hour,
        "HH": f"{dt.hour:02d}",
        "h": hour12,
        "hh": f"{hour12:02d}",
        "k": dt.hour or 24,
        "kk": f"{dt.hour or 24:02d}",
        "m": dt.minute,
        "mm": f"{dt.minute:02d}",
        "s": dt.second,
        "ss": f"{dt.second:02d}",
        "a": "am" if dt.hour < 12 else "pm",
        "A": "AM" if dt.hour < 12 else "PM",
        "Z": _zone(tz, ":"),
        "ZZ": _zone(tz, ""),
        "X": math.floor(ms / 1000),
        "x": ms,
    }
    if tok in simple:
        return str(simple[tok])
    if tok.startswith("S"):
        return f"{dt.microsecond // 1000:03d}".ljust(len(tok), "0")[: len(tok)]
    if tok[0] in "wg":
        week, year = _week(dt, 0, 6)
    elif tok[0] in "WG":
        week, year = _week(dt, 1, 4)
    else:
        return tok
    if tok in ("gggg", "GGGG"):
        return f"{year:04d}"
    if tok.endswith("o"):
        return _ordinal(week)
    return f"{week:02d}" if len(tok) == 2 else str(week)


def format_date(timestamp: Any, fmt: Any, tz_offset: Any) -> str:
    parsed = _parse(timestamp)
    if parsed is None:
        return "Invalid date"
    instant, ms = parsed
    tz = _tz_minutes(tz_offset) if tz_offset else 0
    try:
        dt = instant + timedelta(minutes=tz)
    except OverflowError:
        return "Invalid date"
    pattern = fmt if isinstance(fmt, str) else "YYYY-MM-DDTHH:mm:ssZ"

    def expand(match: re.Match[str]) -> str:
        if match.group(1) or match.group(2):
            return match.group(0)
        return _LONG[match.group(3)]

    for _ in range(5):
        expanded = _LOCALIZED.sub(expand, pattern)
        if expanded == pattern:
            break
        pattern = expanded
    out: list[str] = []
    for match in _TOKENS.finditer(pattern):
        literal, escaped, tok = match.group(1), match.group(2), match.group(3)
        if literal:
            out.append(literal[1:-1])
        elif escaped:
            out.append(tok)
        else:
            out.append(_token(tok, dt, ms, tz))
    return "".join(out)
