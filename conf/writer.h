// Writer: the effective configuration as libconfig text (ferry -T), a setting per line, nested
// groups indented, strings escaped so that the text loads back to the same values.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "conf/config.h"
#include "conf/values.h"

namespace ferry::conf {

// `s` as a libconfig string literal.
std::string quote(std::string_view s);

class Writer {
 public:
  // `config`: what the whole file says, for a setting whose text depends on another part.
  explicit Writer(const Config& config) : config_(config) {}

  void line(const std::string& text) { out_ += std::string(indent_ * 2, ' ') + text + '\n'; }
  void set(std::string_view name, const std::string& value) {
    line(std::string(name) + " = " + value + ";");
  }
  void set(std::string_view name, int value) { set(name, std::to_string(value)); }
  void set(std::string_view name, bool value) { set(name, std::string(value ? "true" : "false")); }
  void set_string(std::string_view name, std::string_view v) { set(name, quote(v)); }
  void set_duration(std::string_view name, Msec v) { set(name, quote(format_duration(v))); }
  void strings(std::string_view name, const std::vector<std::string>& values);
  // Access rules, or trusted senders, as the texts they were read from.
  void rules(std::string_view name, const std::vector<AccessRule>& rules);
  void open(const std::string& text) {
    line(text);
    ++indent_;
  }
  void close(const std::string& text) {
    --indent_;
    line(text);
  }
  [[nodiscard]] const Config& config() const noexcept { return config_; }
  std::string take() { return std::move(out_); }

 private:
  const Config& config_;
  std::string out_;
  int indent_ = 0;
};

}  // namespace ferry::conf
