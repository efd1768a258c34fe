/*
 * fb303: the Facebook service-management interface that Scribe extends.
 *
 * Written for scribe-pipeline from the method list in docs/SCRIBE-COMPAT.md; the wire names,
 * field ids and types are what matter, and they match the public fb303 interface.
 */

namespace py fb303

enum fb_status {
  DEAD = 0,
  STARTING = 1,
  ALIVE = 2,
  STOPPING = 3,
  STOPPED = 4,
  WARNING = 5,
}

service FacebookService {
  string getName(),
  string getVersion(),
  fb_status getStatus(),
  string getStatusDetails(),
  map<string, i64> getCounters(),
  i64 getCounter(1: string key),
  map<string, i64> getSelectedCounters(1: list<string> keys),
  void setOption(1: string key, 2: string value),
  string getOption(1: string key),
  map<string, string> getOptions(),
  string getCpuProfile(1: i32 profileDurationInSec),
  i64 aliveSince(),
  oneway void reinitialize(),
  oneway void shutdown(),
}
