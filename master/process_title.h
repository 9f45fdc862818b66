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
// What binary_path() is made of: `arg0` made absolute (PATH searched for a bare name), links not
// resolved, when it names this running binary; else /proc/self/exe's target.
std::string upgrade_binary_for(const std::string& arg0);

}  // namespace ferry::master
