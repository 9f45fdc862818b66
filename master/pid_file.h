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
// Removes the pid file at `path` only while it names `owner`: another master (a new one of an
// upgrade, one started since) may have written its own there, which is not ours to remove.
void remove_pid_file(const std::string& path, pid_t owner);
// Creates the folder of the pid file and control socket when missing, mode 0755 whatever the
// umask (its parents as create_directories does); warns when an existing one lets other users
// replace what is in it (writable by group or others without the sticky bit, or owned by
// another user than root and this one).
std::error_code make_run_folder(const std::string& folder);
// A pid file's pid and the user who owns the file.
struct PidFileEntry {
  pid_t pid;
  uid_t owner;
};
// What `path` holds, or nothing with `why` set. Only a regular file with one name (not a link)
// counts. It is not trusted alone: `-s` acts on the pid only when the process listening on the
// control socket beside it is that pid (see control.cc).
std::optional<PidFileEntry> read_pid_file(const std::string& path, std::string& why);
// Whether two paths name the same file, whether or not it exists: the same name in the same
// folder (however the folder is spelled: "./x", "a//x", a link to it), or the same inode.
bool same_file(const std::string& a, const std::string& b);

}  // namespace ferry::master
