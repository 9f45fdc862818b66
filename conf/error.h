// ConfigError: one problem found in the configuration, printed as
// "FILE:LINE: SETTING: what is wrong" (the parts that are unknown are left out).
#pragma once

#include <string>

namespace ferry::conf {

struct ConfigError {
  std::string file;
  int line = 0;         // 0: the file as a whole
  std::string setting;  // libconfig path, e.g. "proxies.[0].connect_timeout"; may be empty
  std::string message;

  [[nodiscard]] std::string to_string() const {
    std::string out = file;
    if (line > 0) out += ':' + std::to_string(line);
    out += ": ";
    if (!setting.empty()) out += setting + ": ";
    out += message;
    return out;
  }
};

}  // namespace ferry::conf
