/*
 * Scribe's logging interface.
 *
 * category and message are `binary` (identical to `string` on the wire) because real traffic
 * carries NUL bytes and data that is not UTF-8.  Field 3 comes from a later Scribe branch;
 * servers that predate it skip it, we keep it.
 */

include "fb303.thrift"

namespace py scribe

enum ResultCode {
  OK = 0,
  TRY_LATER = 1,
}

struct LogEntry {
  1: binary category,
  2: binary message,
  3: optional map<binary, binary> metadata,
}

service scribe extends fb303.FacebookService {
  ResultCode Log(1: list<LogEntry> messages),
}
