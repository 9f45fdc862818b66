// The pid file: written after the listeners are open, removed at exit, renamed to ".oldbin"
// while a new binary takes over. Root writes it, often in a folder others can write to (/tmp).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <system_error>

namespace ferry::master {

// Writes "PID\n" atomically and without following links: a temporary file of an unpredictable
// name created with O_EXCL beside the path (mkostemp), renamed over the path. Creates the folder
// when it is missing.
std::error_code write_pid_file(const std::string& path, pid_t pid);
void remove_pid_file(const std::string& path);
// A pid file's pid and the user who owns the file.
struct PidFileEntry {
  pid_t pid;
  uid_t owner;
};
// What `path` holds, or nothing with `why` set. Only a regular file with one name (not a link)
// counts. It is not trusted alone: `-s` acts on the pid only when the process listening on the
// control socket beside it is that pid (see control.cc).
std::optional<PidFileEntry> read_pid_file(const std::string& path, std::string& why);

}  // namespace ferry::master
