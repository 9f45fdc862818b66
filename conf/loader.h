// Loading the configuration: the file (with its includes) → a validated Config, or every error
// found, each naming file, line and setting. libconfig++'s exceptions never leave conf/.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "conf/config.h"
#include "conf/error.h"

namespace ferry::conf {

struct LoadResult {
  std::optional<Config> config;  // set only when there are no errors
  std::vector<ConfigError> errors;
  std::vector<ConfigError> warnings;  // accepted, but worth a line in the log
};

// Whether host names (of servers, listen addresses) are resolved while loading: `unresolved`
// only for a reader that needs no address (`ferry -s` looking for the pid file), which must not
// wait for a DNS server.
enum class HostNames { resolve, unresolved };

LoadResult load_file(const std::string& path, HostNames names = HostNames::resolve);
// The same for text in memory (tests, fuzzing); includes are taken from `folder`.
LoadResult load_text(std::string_view text, const std::string& name, const std::string& folder);

// The pid_file setting of a file that may not load as a whole (for `ferry -s`): the value when
// the text parses and the setting is a string; when it does not parse, the value of a line
// `pid_file = "VALUE";` if there is one; else nothing.
std::optional<std::string> read_pid_file_setting(const std::string& path);

}  // namespace ferry::conf
