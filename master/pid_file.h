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
// The pid in `path`, or nothing with `why` set. Only a regular file (not a link) owned by root or
// by the calling user counts: a pid planted by someone else must not choose what `-s stop` kills.
std::optional<pid_t> read_pid_file(const std::string& path, std::string& why);
// Whether two paths name the same file, whether or not it exists: the same name in the same
// folder (however the folder is spelled: "./x", "a//x", a link to it), or the same inode.
bool same_file(const std::string& a, const std::string& b);

}  // namespace ferry::master
