// Fuzz target: the status endpoint's HTTP request-head parser (worker/status/http_request.h), fed
// the whole input at once and again in pieces, which must decide the same way.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "tests/fuzz/fuzz_check.h"
#include "worker/status/http_request.h"

namespace {

using ferry::worker::http::kMaxRequest;
using ferry::worker::http::ParseResult;
using ferry::worker::http::ParseStatus;
using ferry::worker::http::RequestParser;

// A view's place in `data`, so that results over different calls can be compared.
std::size_t offset_in(std::string_view data, std::string_view part) {
  if (part.empty()) return 0;
  FUZZ_CHECK(part.data() >= data.data() && part.data() + part.size() <= data.data() + data.size());
  return static_cast<std::size_t>(part.data() - data.data());
}

void check_consistent(std::string_view data, const ParseResult& r) {
  switch (r.status) {
    case ParseStatus::done: {
      const auto& q = r.request;
      FUZZ_CHECK(q.length >= 4 && q.length <= data.size() && q.length <= kMaxRequest);
      FUZZ_CHECK(data.substr(q.length - 4, 4) == "\r\n\r\n");
      FUZZ_CHECK(q.minor == 0 || q.minor == 1);
      FUZZ_CHECK(!q.method.empty() && offset_in(data, q.method) == 0);
      FUZZ_CHECK(!q.target.empty() && q.target.front() == '/');
      FUZZ_CHECK(offset_in(data, q.target) + q.target.size() < q.length);
      FUZZ_CHECK(q.path.size() <= q.target.size() && q.target.starts_with(q.path));
      FUZZ_CHECK(q.target.ends_with(q.query));
      FUZZ_CHECK(r.reason.empty());
      break;
    }
    case ParseStatus::error: FUZZ_CHECK(!r.reason.empty()); break;
    case ParseStatus::too_large: FUZZ_CHECK(!r.reason.empty() && data.size() >= kMaxRequest); break;
    case ParseStatus::need_more: FUZZ_CHECK(r.reason.empty() && data.size() < kMaxRequest); break;
  }
}

bool same(std::string_view a_data, const ParseResult& a, std::string_view b_data,
          const ParseResult& b) {
  if (a.status != b.status || a.reason != b.reason) return false;
  if (a.status != ParseStatus::done) return true;
  const auto& x = a.request;
  const auto& y = b.request;
  return x.method == y.method && x.target == y.target && x.path == y.path && x.query == y.query &&
         offset_in(a_data, x.target) == offset_in(b_data, y.target) && x.minor == y.minor &&
         x.keep_alive == y.keep_alive && x.headers == y.headers && x.length == y.length;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  const std::string_view data(reinterpret_cast<const char*>(bytes), size);
  RequestParser whole_parser;
  const ParseResult whole = whole_parser.parse(data);
  check_consistent(data, whole);
  // Asked again with the same bytes, a parser says the same (a pipelining caller does so).
  FUZZ_CHECK(same(data, whole, data, whole_parser.parse(data)));

  // In pieces whose sizes come from the input itself: every answer before the last piece is
  // need_more or already the final one, and once decided the answer does not change.
  RequestParser pieces;
  std::size_t end = 0;
  std::size_t step_seed = size;
  ParseResult last;
  bool decided = false;
  while (end < size) {
    step_seed = step_seed * 31 + static_cast<unsigned char>(data[end]);
    end = std::min(size, end + 1 + step_seed % 17);
    const std::string_view prefix = data.substr(0, end);
    const ParseResult r = pieces.parse(prefix);
    check_consistent(prefix, r);
    if (decided) FUZZ_CHECK(same(prefix, r, prefix, last));
    if (r.status != ParseStatus::need_more) decided = true;
    last = r;
  }
  if (size > 0) FUZZ_CHECK(same(data, whole, data, last));

  // A fresh parser on a copy of the bytes (the caller's buffer may move): the same answer.
  if (whole.status == ParseStatus::done) {
    const std::string copy(data);
    const ParseResult again = ferry::worker::http::parse_request(copy);
    FUZZ_CHECK(same(data, whole, copy, again));
  }
  return 0;
}
