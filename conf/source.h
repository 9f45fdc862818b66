// Source: the configuration text with every @include expanded in place, and the map from each
// line of that text back to its file and line — libconfig 1.5 resolves includes against one
// fixed folder, while ferry takes them from the including file's folder.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "conf/error.h"

namespace ferry::conf {

class Source {
 public:
  static constexpr int kMaxIncludeDepth = 10;
  // Each file, and the whole text with its includes: libconfig takes seconds over tens of MiB.
  static constexpr std::size_t kMaxBytes = 8U << 20;

  // Reads `path` and what it includes. Unreadable files, include loops and too deep nesting
  // are appended to `errors` (the rest of the text is still assembled).
  static Source read_file(const std::string& path, std::vector<ConfigError>& errors);
  // The same for text already in memory; includes are taken from `folder`.
  static Source from_text(std::string_view text, const std::string& name, const std::string& folder,
                          std::vector<ConfigError>& errors);

  [[nodiscard]] const std::string& text() const noexcept { return text_; }
  // Where line `line` (1-based) of text() came from.
  [[nodiscard]] std::pair<std::string, int> origin(int line) const;
  [[nodiscard]] const std::string& main_file() const noexcept { return main_file_; }

 private:
  void expand(std::string_view content, const std::string& name, const std::string& folder,
              std::vector<std::string>& stack, std::vector<ConfigError>& errors);

  std::string main_file_;
  std::string text_;
  std::vector<std::string> files_;
  std::vector<std::pair<std::uint32_t, std::uint32_t>> lines_;  // (file index, line)
};

}  // namespace ferry::conf
