// The error log: spdlog's default logger, writing to stderr or a file, in nginx's line format.
#pragma once

#include <string>
#include <system_error>

#include "conf/config.h"

namespace ferry::master {

// Before the configuration is read: stderr at info.
void init_early_logging();
// Switches the default logger to the configured level and path. On failure (the file cannot be
// opened) the previous logger stays and the reason is returned.
std::error_code apply_log_settings(const conf::LogSettings& settings, std::string& why);

}  // namespace ferry::master
