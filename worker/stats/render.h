// The three renderings of a stats Snapshot: JSON for GET /status, Prometheus text for
// GET /metrics, and a table for `ferry -s status`. Pure functions: no clock, no I/O.
#pragma once

#include <string>

#include "worker/stats/stats_table.h"

namespace ferry::worker {

// JSON, schema 1 (keys are only ever added). Times are Unix seconds; counters are totals since
// the master started, across every worker of every generation, dead ones included. Strings are
// escaped per RFC 8259; bytes that are not UTF-8 become U+FFFD.
//
// {
//   "version": "0.1.0",                 // ferry's, as `ferry -v` prints it
//   "pid": 1234,                        // the master's
//   "started": 1700000000,
//   "uptime_seconds": 3600,
//   "generation": 2,                    // the newest generation of workers
//   "reloads": {
//     "ok": 1, "failed": 1,
//     "last": "ok",                     // "none" | "ok" | "failed"
//     "last_at": 1700003000,            // null with "none"
//     "last_error": "..."               // the last failed reload's first error ("" if none)
//   },
//   "workers": [                        // alive now, older generations still draining included
//     {"pid": 1240, "generation": 2, "started": 1700003000, "connections": 4}
//   ],
//   "proxies": {                        // every proxy configured since the start
//     "web": {"accepted": 12, "handled": 10, "active": 2, "denied": 0, "limited": 0,
//             "bytes_from_clients": 1024, "bytes_to_clients": 4096}
//   },
//   "upstreams": {                      // a proxy's `upstream = "host:port"` is named so
//     "app": {"servers": [
//       {"address": "127.0.0.1:9001",
//        "state": "up",                 // "up" | "down" | "backup" | "draining" | "removed"
//                                       // | "failed"
//        "sessions": 12, "active": 2, "connect_failures": 0,
//        "bytes_sent": 1024, "bytes_received": 4096,
//        "health": {"last": "ok", "at": 1700003005}}   // "none" (and null) without checks
//     ]}
//   }
// }
//
// accepted counts refused connections too, and handled every ending: accepted = handled +
// active. denied: refused by `access`, or a PROXY sender not in accept_proxy_protocol_from;
// limited: by max_conns_per_client or worker_connections.
// "draining": removed by a reload, sessions still open; "removed": nothing open any more;
// "failed": a worker's passive checks (max_fails within fail_timeout) keep it out of rotation.
std::string render_json(const Snapshot& s);

// Prometheus text exposition format 0.0.4 (Content-Type: text/plain; version=0.0.4). Families:
//   ferry_build_info{version} 1, ferry_uptime_seconds, ferry_generation,
//   ferry_reloads_total{result="ok"|"failed"}, ferry_last_reload_successful,
//   ferry_worker_connections{worker,generation},
//   ferry_worker_start_time_seconds{worker,generation},
//   ferry_proxy_{accepted,handled,denied,limited,no_connections}_total{proxy},
//   ferry_proxy_active_sessions{proxy}, ferry_proxy_{received,sent}_bytes_total{proxy} (from / to
//   clients), ferry_upstream_server_{sessions,connect_failures}_total{upstream,server},
//   ferry_upstream_server_active_sessions, ferry_upstream_server_{sent,received}_bytes_total,
//   ferry_upstream_server_up (1: up or backup), ferry_upstream_server_state{...,state} (1 for the
//   current of the six states, 0 for the others), ferry_upstream_server_health_check_ok and
//   ferry_upstream_server_health_check_timestamp_seconds (servers with a check result only).
// `worker` is the worker's pid. A family without samples is left out.
std::string render_prometheus(const Snapshot& s);

// A table for people: the master line, reloads, proxies, servers, workers.
std::string render_table(const Snapshot& s);

// The last rendering of each kind, reused while the snapshot is equal (counts, names, workers,
// reloads, and the clock in whole seconds): a snapshot of a full registry costs a tenth of its
// rendering, and scrapers and dashboards ask in bursts, every worker answering exact totals.
class RenderCache {
 public:
  using Render = std::string (*)(const Snapshot&);
  const std::string& get(Render render, Snapshot snapshot);

 private:
  struct Entry {
    Render render = nullptr;
    Snapshot snapshot;
    std::string body;
  };
  Entry entries_[2];
  std::size_t next_ = 0;  // the entry replaced next when neither renders with `render`
};

}  // namespace ferry::worker
