"""Times an operator types: ``-10m`` or ``10m`` (ago), ``now``, ISO 8601, or ms since the epoch.

Journal timestamps are milliseconds since the epoch, and so is every time the CLI takes.  The
common mistake is ``$(date +%s)``: seconds, which as milliseconds mean January 1970 and so
select everything.  A plain number between ``SECONDS_FROM`` and ``SECONDS_UNTIL`` is plainly
seconds (as seconds: 2001 to 5138; as milliseconds: the first three years of the epoch, long
before any journal) and is refused with the millisecond value to use instead.  Smaller numbers
(0, test data) are taken as milliseconds.
"""

from __future__ import annotations

import datetime
import re

_RELATIVE = re.compile(r"-?(\d+)([smhd])")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)

SECONDS_FROM = 10**9  # 2001-09-09 in seconds; 1970-01-12 in milliseconds
SECONDS_UNTIL = 10**11  # 5138 in seconds; 1973-03-03 in milliseconds

ACCEPTED = (
    "-10m, -2h, 30s, 1d (ago), now, ISO 8601 (UTC unless an offset is given) or ms since the epoch"
)


def iso(time_ms: int) -> str:
    """``time_ms`` as ISO 8601 in UTC, to the millisecond."""
    moment = _EPOCH + datetime.timedelta(milliseconds=time_ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str, now_ms: int) -> int:
    """Milliseconds since the epoch from ``text`` (see the module docstring).

    Raises ValueError saying what it accepts, or that a number is plainly seconds.
    """
    text = text.strip()
    relative = _RELATIVE.fullmatch(text)
    if relative:
        return now_ms - int(relative.group(1)) * _UNIT_MS[relative.group(2)]
    if text == "now":
        return now_ms
    if text.isdigit():
        number = int(text)
        if SECONDS_FROM <= number < SECONDS_UNTIL:
            raise ValueError(
                f"{text} looks like seconds since the epoch ({iso(number * 1000)}); times are "
                f"in milliseconds: use {number * 1000}"
            )
        return number
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a time: use {ACCEPTED}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return (moment - _EPOCH) // datetime.timedelta(milliseconds=1)
