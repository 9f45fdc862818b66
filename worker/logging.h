// The error log: spdlog's default logger, writing to stderr or a file, in nginx's line format.
#pragma once

#include <string>
#include <system_error>

#include "conf/config.h"

namespace ferry::worker {

// Whether stderr is systemd's journal stream (JOURNAL_STREAM names it): lines written to it
// then start with their priority ("<3>").
bool stderr_is_journal();
// The "<N>" priority digit of an spdlog level (spdlog::level::level_enum as int).
char journal_priority(int level);
// Before the configuration is read: stderr at info.
void init_early_logging();
// Switches the default logger to the configured level and path (reopening the file: USR1).
// On failure (the file cannot be opened) the previous logger stays and the reason is returned.
std::error_code apply_log_settings(const conf::LogSettings& settings, std::string& why);
// Names the process's role in every line from now on ("master", "worker").
void set_log_role(const std::string& role);

}  // namespace ferry::worker
