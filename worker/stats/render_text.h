// What the renderings of a stats Snapshot share (render.cc, render_table.cc): text as UTF-8
// with what is not replaced, numbers as text, the walk over every upstream server.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "worker/stats/stats_table.h"

namespace ferry::worker::render_text {

inline constexpr std::string_view kReplacement = "\xef\xbf\xbd";  // U+FFFD

// The length of the well-formed UTF-8 sequence at the start of `s` (RFC 3629: no overlong
// forms, no surrogates, nothing past U+10FFFF), or 0.
inline std::size_t utf8_length(std::string_view s) noexcept {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char b = byte(0);
  std::size_t n = 0;
  unsigned char lo = 0x80;
  unsigned char hi = 0xbf;
  if (b < 0x80) return 1;
  if (b >= 0xc2 && b <= 0xdf) {
    n = 2;
  } else if (b >= 0xe0 && b <= 0xef) {
    n = 3;
    if (b == 0xe0) lo = 0xa0;
    if (b == 0xed) hi = 0x9f;
  } else if (b >= 0xf0 && b <= 0xf4) {
    n = 4;
    if (b == 0xf0) lo = 0x90;
    if (b == 0xf4) hi = 0x8f;
  } else {
    return 0;
  }
  if (s.size() < n || byte(1) < lo || byte(1) > hi) return 0;
  for (std::size_t i = 2; i < n; ++i) {
    if (byte(i) < 0x80 || byte(i) > 0xbf) return 0;
  }
  return n;
}

// Appends `text` to `out` as UTF-8: ASCII through `ascii` (which escapes what it must), other
// characters as they are, bytes that are not UTF-8 as U+FFFD.
template <typename Ascii>
void append_text(std::string& out, std::string_view text, Ascii&& ascii) {
  while (!text.empty()) {
    const std::size_t n = utf8_length(text);
    if (n == 1) {
      ascii(out, text[0]);
    } else if (n == 0) {
      out += kReplacement;
    } else {
      out.append(text.data(), n);
    }
    text.remove_prefix(std::max<std::size_t>(n, 1));
  }
}

template <typename T>
std::string number(T v) {
  return fmt::format("{}", v);
}

template <typename Each>
void each_server(const Snapshot& s, Each&& each) {
  for (const auto& u : s.upstreams) {
    for (const auto& v : u.servers) each(u, v);
  }
}

}  // namespace ferry::worker::render_text
