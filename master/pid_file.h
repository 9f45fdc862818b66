// The pid file: written after the listeners are open, removed at exit, renamed to ".oldbin"
// while a new binary takes over.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <system_error>

namespace ferry::master {

// Writes "PID\n" atomically (a temporary file renamed over the path); creates the folder when
// it is missing.
std::error_code write_pid_file(const std::string& path, pid_t pid);
void remove_pid_file(const std::string& path);
// The pid in `path`, or nothing with `why` set.
std::optional<pid_t> read_pid_file(const std::string& path, std::string& why);

}  // namespace ferry::master
