"""An example materializer plugin: web server access logs into a table of requests.

Lines in the Common Log Format (what Apache and nginx write by default), for example::

    203.0.113.9 - ann [01/Dec/2026:21:00:07 +0000] "GET /index.html HTTP/1.1" 200 5120

become rows of ``http_requests``, partitioned by status and hour so that "every 500 in the
last hour" is one partition read.  The pipeline creates the table, binds, batches and retries;
this module only declares the table and turns events into rows, as every materializer does.

Use it with::

    [consumers.cassandra]
    materializer = "access_log:AccessLogMaterializer"
    plugin_path = "conf/plugins"
    table = "http_requests"      # optional
    bucket_s = 3600              # optional
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Any

from consumers.sinks.cassandra import (
    BaseMaterializer,
    Event,
    Materialized,
    Rejected,
    Row,
    TableSpec,
)

_LINE = re.compile(
    rb"^(?P<client>\S+) \S+ (?P<user>\S+) \[(?P<time>[^\]]+)\] "
    rb'"(?P<method>[A-Z]+) (?P<path>\S+)[^"]*" (?P<status>\d{3}) (?P<bytes>\d+|-)\s*$'
)
_TIME_FORMAT = "%d/%b/%Y:%H:%M:%S %z"


class AccessLogMaterializer(BaseMaterializer):
    """Common Log Format lines into ``http_requests`` (or the table named in the options)."""

    name = "access_log"

    def __init__(self, options: Mapping[str, Any]) -> None:
        unknown = set(options) - {"table", "bucket_s"}
        if unknown:
            raise ValueError(f"unknown option {sorted(unknown)[0]!r} (known: table, bucket_s)")
        self.table = str(options.get("table", "http_requests"))
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,47}", self.table):
            raise ValueError(f"table must be a lower-case CQL name, got {self.table!r}")
        bucket_s = options.get("bucket_s", 3600)
        if not isinstance(bucket_s, int) or isinstance(bucket_s, bool) or bucket_s < 1:
            raise ValueError(f"bucket_s must be a positive integer, got {bucket_s!r}")
        self.bucket_ms = bucket_s * 1000

    def tables(self) -> Sequence[TableSpec]:
        return (
            TableSpec(
                name=self.table,
                columns=(
                    ("status", "int"),
                    ("bucket", "timestamp"),
                    ("request_time", "timestamp"),
                    ("journal_id", "uuid"),
                    ("partition", "int"),
                    ("offset", "bigint"),
                    ("client", "text"),
                    ("user_name", "text"),
                    ("method", "text"),
                    ("path", "text"),
                    ("bytes", "bigint"),
                ),
                partition_key=("status", "bucket"),
                clustering=(
                    ("request_time", "ASC"),
                    ("journal_id", "ASC"),
                    ("partition", "ASC"),
                    ("offset", "ASC"),
                ),
                comment="access_log plugin: one row per request",
            ),
        )

    def materialize(self, events: Sequence[Event]) -> Materialized:
        out = Materialized()
        for event in events:
            match = _LINE.match(event.message)
            if match is None:
                out.rejected.append(Rejected(event, "not a Common Log Format line"))
                continue
            try:
                when = datetime.datetime.strptime(match["time"].decode("ascii"), _TIME_FORMAT)
            except ValueError:
                out.rejected.append(Rejected(event, f"bad time {match['time']!r}"))
                continue
            time_ms = int(when.timestamp() * 1000)
            user = match["user"].decode("utf-8", "replace")
            values: dict[str, Any] = {
                "status": int(match["status"]),
                "bucket": time_ms - time_ms % self.bucket_ms,
                "request_time": time_ms,
                "journal_id": event.journal_id,
                "partition": event.partition,
                "offset": event.offset,
                "client": match["client"].decode("utf-8", "replace"),
                "method": match["method"].decode("ascii"),
                "path": match["path"].decode("utf-8", "replace"),
            }
            if user != "-":
                values["user_name"] = user
            if match["bytes"] != b"-":
                values["bytes"] = int(match["bytes"])
            # The write time is the event's, never the clock's: a replay rewrites the same cells.
            out.rows.append(Row(self.table, values, event.time_us, event))
        return out
