// read_pid_file_setting(): the pid_file of a configuration that may not load as a whole, for
// `ferry -s` (which must still find the running master when the file has a syntax error).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <libconfig.h++>

#include "conf/lexical.h"
#include "conf/loader.h"
#include "conf/source.h"

namespace ferry::conf {
namespace {

// `text` with its comments (#, //, /* */) blanked out, line breaks and strings kept: a pid_file
// line inside a block comment is not one.
std::string without_comments(std::string_view text) {
  std::string out(text);
  enum class In : std::uint8_t { code, string, line_comment, block_comment } in = In::code;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const char c = out[i];
    const char next = i + 1 < out.size() ? out[i + 1] : '\0';
    switch (in) {
      case In::code:
        if (c == '"') {
          in = In::string;
        } else if (c == '#' || (c == '/' && next == '/')) {
          in = In::line_comment;
          out[i] = ' ';
        } else if (c == '/' && next == '*') {
          in = In::block_comment;
          out[i] = out[i + 1] = ' ';
          ++i;
        }
        break;
      case In::string:
        if (c == '\\') {
          ++i;  // the escaped character stays
        } else if (c == '"' || c == '\n') {
          in = In::code;
        }
        break;
      case In::line_comment:
        if (c == '\n') {
          in = In::code;
        } else {
          out[i] = ' ';
        }
        break;
      case In::block_comment:
        if (c == '*' && next == '/') {
          in = In::code;
          out[i] = out[i + 1] = ' ';
          ++i;
        } else if (c != '\n') {
          out[i] = ' ';
        }
        break;
    }
  }
  return out;
}

// A line `pid_file = "VALUE";` (":" for "=", the ";" and a trailing comment optional), for a
// file that libconfig cannot parse: the line may still be whole.
std::optional<std::string> pid_file_line(std::string_view whole) {
  const std::string code = without_comments(whole);
  std::string_view text = code;
  const auto skip_blanks = [](std::string_view& s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  };
  constexpr std::string_view kName = "pid_file";
  while (!text.empty()) {
    const std::size_t eol = std::min(text.find('\n'), text.size());
    std::string_view line = text.substr(0, eol);
    text.remove_prefix(std::min(eol + 1, text.size()));
    skip_blanks(line);
    if (line.substr(0, kName.size()) != kName) continue;
    line.remove_prefix(kName.size());
    skip_blanks(line);
    if (line.empty() || (line.front() != '=' && line.front() != ':')) continue;
    line.remove_prefix(1);
    skip_blanks(line);
    if (line.empty() || line.front() != '"') continue;
    const std::size_t close = line.find('"', 1);
    const std::string_view value = line.substr(1, close == std::string_view::npos ? 0 : close - 1);
    if (close == std::string_view::npos || value.empty() ||
        value.find('\\') != std::string_view::npos) {
      continue;
    }
    std::string_view rest = line.substr(close + 1);
    skip_blanks(rest);
    if (!rest.empty() && (rest.front() == ';' || rest.front() == ',')) rest.remove_prefix(1);
    skip_blanks(rest);
    if (rest.empty()) return std::string(value);  // (a trailing comment is blanked out)
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> read_pid_file_setting(const std::string& path) {
  std::vector<ConfigError> errors;
  const Source src = Source::read_file(path, errors);
  if (check_lexical(src, errors)) {
    libconfig::Config lc;
    try {
      lc.readString(src.text());
      std::string value;
      if (lc.getRoot().lookupValue("pid_file", value) && !value.empty()) return value;
      return std::nullopt;  // parsed: the setting is absent or not a string
    } catch (const libconfig::ConfigException&) {
      // Unparsable: the line itself may still be readable.
    }
  }
  return pid_file_line(src.text());
}

}  // namespace ferry::conf
