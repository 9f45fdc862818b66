// RequestParser: a byte screen over new input, then the request line and each header line once
// its CRLF is in, checked against RFC 9112's grammar.
#include "worker/status/http_request.h"

#include <algorithm>
#include <array>
#include <cstdint>

namespace ferry::worker::http {
namespace {

enum : std::uint8_t { kToken = 1, kTarget = 2, kHex = 4 };

// RFC 9110's tchar; RFC 3986's pchar, '/' and '?' (what an origin-form target may hold, '%'
// checked apart); hex digits.
constexpr std::array<std::uint8_t, 256> make_classes() {
  std::array<std::uint8_t, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] |= kToken | kTarget | kHex;
  for (int c = 'a'; c <= 'z'; ++c) t[c] |= kToken | kTarget;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] |= kToken | kTarget;
  for (int c = 'a'; c <= 'f'; ++c) t[c] |= kHex;
  for (int c = 'A'; c <= 'F'; ++c) t[c] |= kHex;
  for (unsigned char c : std::string_view("!#$%&'*+-.^_`|~")) t[c] |= kToken;
  for (unsigned char c : std::string_view("-._~!$&'()*+,;=:@/?")) t[c] |= kTarget;
  return t;
}
constexpr std::array<std::uint8_t, 256> kClasses = make_classes();

bool is(char c, std::uint8_t cls) { return (kClasses[static_cast<unsigned char>(c)] & cls) != 0; }

bool all_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return is(c, kToken); });
}

bool equals_nocase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           const auto lower = [](char c) {
             return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
           };
           return lower(x) == lower(y);
         });
}

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// A byte that may stand in a request head outside of CRLF: HTAB, visible ASCII, obs-text.
bool allowed_byte(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

}  // namespace

ParseResult RequestParser::fail(std::string_view reason, ParseStatus status) noexcept {
  failed_ = status;
  error_ = reason;
  return {status, {}, reason};
}

ParseResult RequestParser::parse(std::string_view data) noexcept {
  if (!error_.empty()) return {failed_, {}, error_};
  if (length_ != 0) return finish(data);
  // Bytes past the limit are never looked at: the head must end within it.
  const std::size_t limit = std::min(data.size(), kMaxRequest);
  std::size_t i = scanned_;
  for (; i < limit; ++i) {
    const auto c = static_cast<unsigned char>(data[i]);
    if (c == '\r') {
      if (i + 1 >= limit) break;  // its LF is not in yet: look again next time
      if (data[i + 1] != '\n') return fail("CR not followed by LF");
      continue;
    }
    if (c == '\n') {
      if (i == line_start_ || data[i - 1] != '\r') return fail("bare LF");
      const std::size_t begin = line_start_;
      const std::size_t end = i - 1;
      line_start_ = i + 1;
      if (!have_request_line_) {
        if (begin == end) return fail("empty line before the request line");
        if (auto why = request_line(data, begin, end); !why.empty()) return fail(why);
        have_request_line_ = true;
        continue;
      }
      if (begin == end) {
        length_ = i + 1;
        scanned_ = length_;
        if (minor_ == 1 && hosts_ == 0) return fail("HTTP/1.1 request without Host");
        if (hosts_ > 1) return fail("more than one Host");
        return finish(data);
      }
      if (auto why = header(data.substr(begin, end - begin)); !why.empty()) return fail(why);
      ++headers_;
      continue;
    }
    if (!allowed_byte(c)) return fail(c == 0 ? "NUL byte" : "control byte");
  }
  scanned_ = i;
  if (data.size() >= kMaxRequest) return fail("request head too large", ParseStatus::too_large);
  return {ParseStatus::need_more, {}, {}};
}

std::string_view RequestParser::request_line(std::string_view data, std::size_t begin,
                                             std::size_t end) noexcept {
  const std::string_view line = data.substr(begin, end - begin);
  const std::size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos) return "request line without spaces";
  if (!all_token(line.substr(0, sp1))) return "bad method";
  const std::size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) return "request line without a version";
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  if (target.empty() || target.front() != '/') return "target not in origin-form";
  for (std::size_t k = 0; k < target.size(); ++k) {
    if (target[k] == '%') {
      if (k + 2 >= target.size() || !is(target[k + 1], kHex) || !is(target[k + 2], kHex)) {
        return "bad percent-encoding in the target";
      }
      k += 2;
      continue;
    }
    if (!is(target[k], kTarget)) return "bad character in the target";
  }
  const std::string_view version = line.substr(sp2 + 1);
  constexpr std::string_view kPrefix = "HTTP/1.";
  if (version.size() != kPrefix.size() + 1 || !version.starts_with(kPrefix)) {
    return "bad version";
  }
  const char minor = version.back();
  if (minor != '0' && minor != '1') return "unsupported version";
  method_end_ = begin + sp1;
  target_begin_ = begin + sp1 + 1;
  target_end_ = begin + sp2;
  minor_ = minor - '0';
  return {};
}

std::string_view RequestParser::header(std::string_view line) noexcept {
  if (line.front() == ' ' || line.front() == '\t') return "obs-fold (a line starting with space)";
  const std::size_t colon = line.find(':');
  if (colon == std::string_view::npos) return "header line without a colon";
  const std::string_view name = line.substr(0, colon);
  if (!all_token(name)) return "bad header name";
  const std::string_view value = trim_ows(line.substr(colon + 1));
  if (equals_nocase(name, "host")) {
    ++hosts_;
  } else if (equals_nocase(name, "connection")) {
    std::string_view rest = value;
    while (!rest.empty()) {
      const std::size_t comma = std::min(rest.find(','), rest.size());
      const std::string_view option = trim_ows(rest.substr(0, comma));
      if (equals_nocase(option, "close")) close_ = true;
      if (equals_nocase(option, "keep-alive")) keep_alive_ = true;
      rest.remove_prefix(std::min(comma + 1, rest.size()));
    }
  } else if (equals_nocase(name, "content-length")) {
    if (value.empty() ||
        !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return "bad Content-Length";
    }
    if (value.find_first_not_of('0') != std::string_view::npos) {
      return "request bodies are not supported";
    }
  } else if (equals_nocase(name, "transfer-encoding")) {
    return "request bodies are not supported";
  }
  return {};
}

ParseResult RequestParser::finish(std::string_view data) noexcept {
  ParseResult r;
  r.status = ParseStatus::done;
  Request& q = r.request;
  q.method = data.substr(0, method_end_);
  q.target = data.substr(target_begin_, target_end_ - target_begin_);
  const std::size_t mark = std::min(q.target.find('?'), q.target.size());
  q.path = q.target.substr(0, mark);
  if (mark < q.target.size()) q.query = q.target.substr(mark + 1);
  q.minor = minor_;
  q.keep_alive = !close_ && (minor_ == 1 || keep_alive_);
  q.headers = headers_;
  q.length = length_;
  return r;
}

}  // namespace ferry::worker::http
