// Reader: the walk over libconfig's tree that reads each setting's value with its type and
// range checked, recording every problem against the setting, in the order of the text.
#pragma once

#include <climits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <libconfig.h++>

#include "conf/config.h"
#include "conf/error.h"
#include "conf/loader.h"
#include "conf/names.h"
#include "conf/source.h"
#include "conf/values.h"

namespace ferry::conf {

using libconfig::Setting;

// "an integer", "a string"...: what a setting holds, for messages.
const char* type_name(const Setting& s);

// Takes a value that was read; leaves the field (its default) when there was none.
template <typename T>
void assign(T& field, std::optional<T>&& value) {
  if (value) field = std::move(*value);
}

// "; did you mean \"NAME\"?" for the candidate closest to `name` when it is near enough (within
// 2 edits, or a quarter of the name's length), else "".
std::string did_you_mean(std::string_view name, std::span<const std::string_view> candidates);

// Reads settings out of the libconfig tree, recording each problem against its setting.
class Reader {
 public:
  Reader(const Source& src, std::vector<ConfigError>& errors, std::vector<ConfigError>& warnings,
         HostNames names)
      : src_(src), errors_(errors), warnings_(warnings), names_(names) {}

  ~Reader() {
    flush(pending_errors_, errors_);
    flush(pending_warnings_, warnings_);
  }
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  void error(const Setting& s, const std::string& message) {
    report(pending_errors_, s, s.getPath(), message);
  }
  void warn(const Setting& s, const std::string& message) {
    report(pending_warnings_, s, s.getPath(), message);
  }
  // For a member that is missing: reported at its group's line under the member's path.
  void missing(const Setting& group, const std::string& name, const std::string& why) {
    report(pending_errors_, group, join(group, name), "missing: " + why);
  }
  std::string where(const Setting& s) const {
    const auto [file, line] = src_.origin(static_cast<int>(s.getSourceLine()));
    return file + ':' + std::to_string(line);
  }

  // Every named member of `group` must be one of `known`; the others are reported with the
  // closest known name when it is near.
  void only(const Setting& group, std::span<const std::string_view> known);

  static const Setting* member(const Setting& group, const char* name) {
    return group.exists(name) ? &group[name] : nullptr;
  }

  bool expect(const Setting& s, Setting::Type type, const char* what) {
    if (s.getType() == type) return true;
    error(s, std::string("expected ") + what + ", found " + type_name(s));
    return false;
  }
  bool is_group(const Setting& s) { return expect(s, Setting::TypeGroup, "a group { ... }"); }

  std::optional<long long> integer(const Setting& s, long long min, long long max) {
    if (s.getType() != Setting::TypeInt && s.getType() != Setting::TypeInt64) {
      error(s, std::string("expected an integer, found ") + type_name(s));
      return std::nullopt;
    }
    const long long v =
        s.getType() == Setting::TypeInt64 ? static_cast<long long>(s) : static_cast<int>(s);
    if (v < min || v > max) {
      error(s, std::to_string(v) + " is out of range (" + std::to_string(min) + "-" +
                   std::to_string(max) + ")");
      return std::nullopt;
    }
    return v;
  }
  std::optional<int> int32(const Setting& s, int min, int max) {
    auto v = integer(s, min, max);
    if (!v) return std::nullopt;
    return static_cast<int>(*v);
  }

  std::optional<bool> boolean(const Setting& s) {
    if (!expect(s, Setting::TypeBoolean, "true or false")) return std::nullopt;
    return static_cast<bool>(s);
  }

  std::optional<std::string> string(const Setting& s, bool allow_empty = true) {
    if (!expect(s, Setting::TypeString, "a string")) return std::nullopt;
    std::string v = s.c_str();
    if (!allow_empty && v.empty()) {
      error(s, "must not be empty");
      return std::nullopt;
    }
    return v;
  }

  std::optional<Msec> duration(const Setting& s, Msec min = Msec{0}) {
    auto text = string(s);
    if (!text) return std::nullopt;
    auto parsed = parse_duration(*text);
    if (auto* why = std::get_if<std::string>(&parsed)) {
      error(s, *why);
      return std::nullopt;
    }
    const Msec v = std::get<Msec>(parsed);
    if (v < min) {
      error(s, "\"" + *text + "\" is too short (at least " + format_duration(min) + ")");
      return std::nullopt;
    }
    return v;
  }

  std::optional<std::size_t> size(const Setting& s, std::size_t min, std::size_t max) {
    std::size_t v = 0;
    if (s.getType() == Setting::TypeString) {
      auto parsed = parse_size(s.c_str());
      if (auto* why = std::get_if<std::string>(&parsed)) {
        error(s, *why);
        return std::nullopt;
      }
      v = std::get<std::size_t>(parsed);
    } else if (s.getType() == Setting::TypeInt || s.getType() == Setting::TypeInt64) {
      auto n = integer(s, 0, LLONG_MAX);
      if (!n) return std::nullopt;
      v = static_cast<std::size_t>(*n);
    } else {
      error(s, std::string("expected a size (16384 or \"16k\"), found ") + type_name(s));
      return std::nullopt;
    }
    if (v < min || v > max) {
      error(s, format_size(v) + " is out of range (" + format_size(min) + "-" + format_size(max) +
                   ")");
      return std::nullopt;
    }
    return v;
  }

  // One of the names in `values` (conf/names.h), as its value.
  template <typename E>
  std::optional<E> choice(const Setting& s, std::span<const Named<E>> values) {
    auto text = string(s);
    if (!text) return std::nullopt;
    std::string names;
    for (const auto& [name, value] : values) {
      if (name == *text) return value;
      names += (names.empty() ? "\"" : ", \"") + std::string(name) + "\"";
    }
    error(s, "\"" + *text + "\" is not one of " + names);
    return std::nullopt;
  }

  std::optional<Address> address(const Setting& s, bool resolve = true) {
    auto text = string(s);
    if (!text) return std::nullopt;
    auto parsed = parse_address(*text, resolve && resolves());
    if (auto* why = std::get_if<std::string>(&parsed)) {
      error(s, *why);
      return std::nullopt;
    }
    return std::get<Address>(std::move(parsed));
  }

  // An array or list of strings; a single string is taken as a list of one.
  template <typename Each>
  void strings(const Setting& s, Each&& each) {
    if (s.getType() == Setting::TypeString) {
      each(s);
      return;
    }
    if (s.getType() != Setting::TypeArray && s.getType() != Setting::TypeList) {
      error(s, std::string("expected an array of strings [ \"...\", ... ], found ") + type_name(s));
      return;
    }
    for (const Setting& e : s) {
      if (e.getType() != Setting::TypeString) {
        error(e, std::string("expected a string, found ") + type_name(e));
        continue;
      }
      each(e);
    }
  }

  // Access rules, or with parse_network a list of trusted senders.
  std::vector<AccessRule> access(
      const Setting& s, Parsed<AccessRule> (*parse)(std::string_view) = parse_access_rule) {
    std::vector<AccessRule> rules;
    strings(s, [&](const Setting& e) {
      auto parsed = parse(e.c_str());
      if (auto* why = std::get_if<std::string>(&parsed)) {
        error(e, *why);
        return;
      }
      rules.push_back(std::get<AccessRule>(std::move(parsed)));
    });
    return rules;
  }

  // A list ( {...}, ... ) of groups, each handed to `each`.
  template <typename Each>
  void groups(const Setting& s, Each&& each) {
    if (s.getType() != Setting::TypeList) {
      error(s, std::string("expected a list of groups ( { ... }, ... ), found ") + type_name(s));
      return;
    }
    for (int i = 0; i < s.getLength(); ++i) {
      const Setting& e = s[i];
      if (!is_group(e)) continue;
      each(e);
    }
  }

  [[nodiscard]] bool resolves() const noexcept { return names_ == HostNames::resolve; }

  // The upstreams read so far (the whole list once `upstreams` is read), for the proxies that
  // name one or write their own "host:port".
  std::vector<Upstream>* upstreams = nullptr;

 private:
  static std::string join(const Setting& group, const std::string& name) {
    const std::string path = group.getPath();
    return path.empty() ? name : path + '.' + name;
  }
  void report(std::vector<std::pair<int, ConfigError>>& into, const Setting& s, std::string path,
              const std::string& message) {
    const int global = static_cast<int>(s.getSourceLine());
    const auto [file, line] = src_.origin(global);
    into.push_back({global, {file, line, std::move(path), message}});
  }

  static void flush(std::vector<std::pair<int, ConfigError>>& from, std::vector<ConfigError>& to);

  const Source& src_;
  std::vector<ConfigError>& errors_;
  std::vector<ConfigError>& warnings_;
  HostNames names_;
  // Problems in the order of the text they are about, whatever order the walk found them in.
  std::vector<std::pair<int, ConfigError>> pending_errors_;
  std::vector<std::pair<int, ConfigError>> pending_warnings_;
};

}  // namespace ferry::conf
