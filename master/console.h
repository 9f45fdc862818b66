// What the short-lived commands (-t, -s) print to stderr. Under systemd (ExecStartPre=,
// ExecReload=) stderr is the journal: error lines then carry priority 3, so that
// `journalctl -p err` shows why a start or a reload failed.
#pragma once

#include <string_view>

namespace ferry::master {

// Writes `text` (one or more lines) to stderr as errors, or as warnings.
void print_error(std::string_view text);
void print_warning(std::string_view text);

}  // namespace ferry::master
