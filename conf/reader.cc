// Reader's out-of-line parts: type names for messages, unknown settings and the one "did you
// mean" rule every suggestion follows.
#include "conf/reader.h"

#include <algorithm>
#include <cstdint>

namespace ferry::conf {

const char* type_name(const Setting& s) {
  switch (s.getType()) {
    case Setting::TypeInt:
    case Setting::TypeInt64: return "an integer";
    case Setting::TypeFloat: return "a float";
    case Setting::TypeString: return "a string";
    case Setting::TypeBoolean: return "a boolean";
    case Setting::TypeGroup: return "a group { ... }";
    case Setting::TypeArray: return "an array [ ... ]";
    case Setting::TypeList: return "a list ( ... )";
    default: return "nothing";
  }
}

std::string did_you_mean(std::string_view name, std::span<const std::string_view> candidates) {
  std::string_view best;
  std::size_t best_distance = SIZE_MAX;
  for (std::string_view k : candidates) {
    const std::size_t d = edit_distance(name, k);
    if (d < best_distance) {
      best_distance = d;
      best = k;
    }
  }
  if (best_distance > std::max<std::size_t>(2, name.size() / 4)) return "";
  return "; did you mean \"" + std::string(best) + "\"?";
}

void Reader::only(const Setting& group, std::span<const std::string_view> known) {
  for (const Setting& m : group) {
    const char* name = m.getName();
    if (name == nullptr) continue;
    if (std::find(known.begin(), known.end(), std::string_view(name)) != known.end()) continue;
    error(m, "unknown setting" + did_you_mean(name, known));
  }
}

void Reader::flush(std::vector<std::pair<int, ConfigError>>& from, std::vector<ConfigError>& to) {
  std::stable_sort(from.begin(), from.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [line, e] : from) to.push_back(std::move(e));
  from.clear();
}

}  // namespace ferry::conf
