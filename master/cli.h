// The command line of ../shared/spec/ferry.md: ferry [-c FILE] [-t | -T] [-q] [-s SIGNAL]
// [-v | -V] [-h], and `ferry [-c FILE] ctl COMMAND...`, parsed into what to do. Bad command lines
// are reported, never guessed at.
#pragma once

#include <span>
#include <string>
#include <variant>
#include <vector>

namespace ferry::master {

enum class Action { run, test, dump, signal, ctl, version, version_verbose, help };

struct CommandLine {
  Action action = Action::run;
  std::string conf_file;
  bool quiet = false;            // -q: with -t/-T, errors only
  std::string signal;            // -s: reload | reopen | quit | stop
  std::vector<std::string> ctl;  // `ctl WORDS...`: a command for the running master
};

// The parsed command line, or a one-line reason why it is not valid (exit 2).
std::variant<CommandLine, std::string> parse_command_line(std::span<const char* const> args,
                                                          const std::string& default_conf);

std::string usage();

}  // namespace ferry::master
