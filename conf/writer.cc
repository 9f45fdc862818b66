// Writer's out-of-line parts: libconfig string escapes and lists of strings.
#include "conf/writer.h"

#include <cstdio>

namespace ferry::conf {

std::string quote(std::string_view s) {
  std::string out = "\"";
  for (const unsigned char ch : s) {
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\f': out += "\\f"; break;
      default:
        if (ch < 0x20 || ch >= 0x7f) {
          char hex[5];
          std::snprintf(hex, sizeof hex, "\\x%02x", ch);
          out += hex;
        } else {
          out += static_cast<char>(ch);
        }
    }
  }
  return out + '"';
}

void Writer::strings(std::string_view name, const std::vector<std::string>& values) {
  std::string list;
  for (const auto& v : values) list += (list.empty() ? "" : ", ") + quote(v);
  set(name, "[ " + list + (list.empty() ? "]" : " ]"));
}

void Writer::rules(std::string_view name, const std::vector<AccessRule>& rules) {
  std::vector<std::string> texts;
  for (const auto& rule : rules) texts.push_back(rule.text);
  strings(name, texts);
}

}  // namespace ferry::conf
