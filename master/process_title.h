// Process titles that `ps` shows ("ferry: master process ...", "ferry: worker process"), written
// over the argv area as nginx's ngx_setproctitle does; the environment is moved out of the way
// first so a long title cannot clobber it.
#pragma once

#include <string>
#include <vector>

namespace ferry::master {

// Call once at start, before anything reads environ through pointers kept from before.
void init_process_title(int argc, char** argv);
void set_process_title(const std::string& title);
// The command line as started ("/usr/sbin/ferry -c /etc/ferry/ferry.conf").
const std::string& original_command_line();
// The arguments as started, and the binary's path made absolute, its links not resolved (what
// a binary upgrade executes).
const std::vector<std::string>& original_arguments();
const std::string& binary_path();

}  // namespace ferry::master
