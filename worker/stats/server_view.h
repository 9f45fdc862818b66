// The operator's view of upstream servers: the statistics snapshot annotated with the runtime
// settings (admin state, weights, slow start, servers added at run time), and `ctl show
// servers`'s renderings of it (a table, or JSON for scripts).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "conf/config.h"
#include "worker/stats/stats_table.h"
#include "worker/upstream/server_admin.h"

namespace ferry::worker {

// Fills each server's admin state, weight, effective weight and slow start from `cfg` and
// `records` (as of `now_ms` on the steady clock); servers added at run time get rows of their
// own (no counts yet when the statistics do not know them).
void annotate_servers(Snapshot& s, const conf::Config& cfg, const std::vector<AdminRecord>& records,
                      std::int64_t now_ms);

// The steady clock in milliseconds, alike in every process (CLOCK_MONOTONIC): the time base of
// AdminRecord::ready_since_ms.
std::int64_t steady_ms() noexcept;

// The ramp of a slow start `period_ms` long begun at `since_ms`: its progress in percent, or -1
// when none is under way.
int slow_start_percent(std::int64_t since_ms, std::int64_t period_ms, std::int64_t now_ms);

// `text` as a JSON string, quotes included (control bytes escaped).
std::string json_string(std::string_view text);

// `show servers` (of `upstream` only, unless empty).
std::string render_servers_text(const Snapshot& s, std::string_view upstream);
std::string render_servers_json(const Snapshot& s, std::string_view upstream);

}  // namespace ferry::worker
