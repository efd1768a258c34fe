/*
 * The fetch interface: consumers on any host read a log server's journal.
 *
 * It is our own interface (no Scribe client speaks it), served on its own port, framed and
 * strict binary only.  A partition is a (category, partition) pair; offsets are dense per
 * partition.  `records` holds whole journal batches exactly as they are on disk (their format:
 * journal/format.py), so the server never decodes them and the consumer verifies each one's
 * checksum.  Nothing a fetch returns lies at or past the durable high-water mark.
 */

namespace py scribe_fetch

enum FetchErrorCode {
  // The offset is below the earliest one kept (retention deleted it): `earliest` says where
  // data continues.
  OFFSET_BELOW_EARLIEST = 1,
  // The offset is past the high-water mark (`high_water_mark`): it was never durable here.
  OFFSET_BEYOND_HIGH_WATER_MARK = 2,
  // No such category or partition in this journal.
  UNKNOWN_PARTITION = 3,
  // The partition is damaged at `file` byte `position` (an operator repairs it), or its
  // writer failed.
  PARTITION_DAMAGED = 4,
  // The server is stopping: ask again elsewhere or later.
  UNAVAILABLE = 5,
}

exception FetchError {
  1: FetchErrorCode code,
  2: string message,
  3: i64 earliest,
  4: i64 high_water_mark,
  5: string file,
  6: i64 position,
}

struct PartitionState {
  1: binary category,
  2: i32 partition,
  3: i64 earliest,
  4: i64 high_water_mark,
  // Refused at recovery or its writer failed: fetches answer PARTITION_DAMAGED.
  5: bool damaged,
}

struct JournalDescription {
  // The journal's identity (journal/format.py's .journal-id, canonical UUID text).
  1: string journal_id,
  2: list<PartitionState> partitions,
}

struct FetchResult {
  // Whole batches from the one holding the requested offset on; the first may begin before
  // it (skip those messages).  Empty at the tail after the wait, or over a gap.
  1: binary records,
  // Where the next fetch starts: after the last batch in records, or where data continues
  // after a gap.
  2: i64 next_offset,
  3: i64 earliest,
  4: i64 high_water_mark,
  // Offsets from the requested one up to next_offset hold no data and never will: repair
  // cut them (documented) or they are missing (a lost unsynced tail, deleted segments).
  5: bool gap,
  6: bool gap_documented,
}

service ScribeFetch {
  JournalDescription describe() throws (1: FetchError error),
  // Up to max_bytes of records (at least one whole batch when any is there) and at most
  // max_messages messages; at the tail, waits up to wait_ms for data (the server caps it).
  FetchResult fetch(1: binary category, 2: i32 partition, 3: i64 offset, 4: i32 max_bytes,
                    5: i32 max_messages, 6: i32 wait_ms) throws (1: FetchError error),
  // The first offset whose message time is at or after timestamp_ms (the high-water mark when
  // none is).
  i64 offsetForTime(1: binary category, 2: i32 partition, 3: i64 timestamp_ms)
      throws (1: FetchError error),
}
