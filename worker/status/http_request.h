// RequestParser: a strict, incremental HTTP/1.0 and HTTP/1.1 request-head parser for the status
// endpoint (RFC 9112 without bodies). Pure: it reads bytes handed to it and does no I/O.
#pragma once

#include <cstddef>
#include <string_view>

namespace ferry::worker::http {

// The request line, the header lines and the empty line that ends them, together; a request
// whose head does not end within this many bytes is too_large.
inline constexpr std::size_t kMaxRequest = 8 * 1024;

enum class ParseStatus { need_more, done, error, too_large };

// A parsed request head. The views point into the bytes given to parse().
struct Request {
  std::string_view method;  // a token, case kept ("GET"; "get" is another method)
  std::string_view target;  // origin-form as sent: path and query
  std::string_view path;    // the target up to '?', not percent-decoded
  std::string_view query;   // after the first '?', without it; empty when there is none
  int minor = 1;            // HTTP/1.<minor>: 0 or 1
  // HTTP/1.1 unless "Connection: close"; HTTP/1.0 only with "Connection: keep-alive".
  bool keep_alive = true;
  std::size_t headers = 0;  // header lines
  std::size_t length = 0;   // bytes of the head, final CRLF included: the next request follows
};

struct ParseResult {
  ParseStatus status = ParseStatus::need_more;
  Request request;          // with done
  std::string_view reason;  // with error and too_large: what was wrong, for the log and a 400
};

// Parses one request head from every byte received so far for it. Each call is given the same
// bytes as the last one and maybe more (the caller's buffer may move between calls); lines
// already checked are not checked again, so a client sending one byte at a time costs O(n)
// over the whole head. Bytes after the head are left alone (a pipelined request).
//
// Strict: a bare LF, a CR not followed by LF, NUL and other control bytes (HTAB aside), DEL,
// leading empty lines, obs-fold, whitespace before a header's colon, a target that is not
// origin-form ('/' first, RFC 3986 characters, '%' followed by two hex digits), a version
// other than HTTP/1.0 and HTTP/1.1, an HTTP/1.1 request without exactly one Host, and any
// request body (Content-Length other than 0, or Transfer-Encoding) are errors. Bad bytes are
// refused as soon as they arrive, before their line ends.
class RequestParser {
 public:
  ParseResult parse(std::string_view data) noexcept;
  // Ready for the next request on the connection (its bytes start at offset 0 again).
  void reset() noexcept { *this = RequestParser(); }

 private:
  // Each returns an error reason, or an empty view when the line is good.
  std::string_view request_line(std::string_view data, std::size_t begin, std::size_t end) noexcept;
  std::string_view header(std::string_view line) noexcept;
  ParseResult finish(std::string_view data) noexcept;
  ParseResult fail(std::string_view reason, ParseStatus status = ParseStatus::error) noexcept;

  // Offsets rather than views, so that the caller's buffer may move between calls.
  std::size_t line_start_ = 0;  // the first byte of the line not complete yet
  std::size_t scanned_ = 0;     // bytes already checked one by one
  std::size_t method_end_ = 0;
  std::size_t target_begin_ = 0;
  std::size_t target_end_ = 0;
  std::size_t length_ = 0;  // set once the head is complete
  std::size_t headers_ = 0;
  // Set once the request is refused: later calls say so again.
  std::string_view error_;
  ParseStatus failed_ = ParseStatus::error;
  int minor_ = 1;
  int hosts_ = 0;
  bool have_request_line_ = false;
  bool close_ = false;       // "Connection: close" seen
  bool keep_alive_ = false;  // "Connection: keep-alive" seen
};

// One request from a fresh parser: what the tests and one-shot callers use.
inline ParseResult parse_request(std::string_view data) noexcept {
  RequestParser p;
  return p.parse(data);
}

}  // namespace ferry::worker::http
