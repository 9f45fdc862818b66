// Fuzz target: the TLS ClientHello parser (worker/tls/client_hello.h). Checks that its answer on
// a prefix agrees with the answer on the whole input (it is fed as bytes arrive), that a server
// name it returns is one it may return, and that it never waits on kMaxClientHello bytes.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "tests/fuzz/fuzz_check.h"
#include "worker/tls/client_hello.h"

namespace {

namespace tls = ferry::worker::tls;
using tls::HelloStatus;

void check_result(std::span<const std::byte> data, const tls::HelloResult& r) {
  switch (r.status) {
    case HelloStatus::done:
      FUZZ_CHECK(r.error.empty());
      FUZZ_CHECK(r.hello.server_name.size() <= 255);
      for (const char c : r.hello.server_name) {
        FUZZ_CHECK((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
                   c == '_');
      }
      for (const auto& name : r.hello.alpn) FUZZ_CHECK(!name.empty() && name.size() <= 255);
      break;
    case HelloStatus::not_tls:
      FUZZ_CHECK(!data.empty() &&
                 (data[0] != std::byte{22} || (data.size() > 1 && data[1] != std::byte{3})));
      FUZZ_CHECK(!r.error.empty());
      break;
    case HelloStatus::malformed:
    case HelloStatus::too_large: FUZZ_CHECK(!r.error.empty()); break;
    case HelloStatus::need_more:
      // A full buffer that still needs more would wait for the timeout: never.
      FUZZ_CHECK(data.size() < tls::kMaxClientHello);
      break;
  }
  if (r.status != HelloStatus::done) {
    FUZZ_CHECK(r.hello.server_name.empty() && r.hello.alpn.empty());
  }
}

bool same(const tls::HelloResult& a, const tls::HelloResult& b) {
  if (a.status != b.status) return false;
  if (a.status != HelloStatus::done) return true;
  return a.hello.server_name == b.hello.server_name && a.hello.alpn == b.hello.alpn;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  const std::span<const std::byte> data(reinterpret_cast<const std::byte*>(bytes), size);
  const tls::HelloResult whole = tls::parse_client_hello(data);
  check_result(data, whole);

  // A prefix is need_more or already the whole's answer: once decided, more bytes change nothing.
  const auto check_prefix = [&](std::size_t k) {
    const tls::HelloResult r = tls::parse_client_hello(data.first(k));
    check_result(data.first(k), r);
    if (r.status != HelloStatus::need_more) FUZZ_CHECK(same(r, whole));
    return r.status == HelloStatus::need_more;
  };
  // The first 64 lengths, a few the input picks, and the two around the point of decision
  // (prefixes wait up to it and agree from it on, so a bisection finds it).
  for (std::size_t k = 0; k <= std::min<std::size_t>(size, 64); ++k) check_prefix(k);
  std::array<std::size_t, 8> picked{};
  for (std::size_t i = 0; i < picked.size(); ++i) {
    picked[i] = size == 0 ? 0 : (static_cast<std::size_t>(bytes[i % size]) * 131 + i * 977) % size;
  }
  for (const std::size_t k : picked) check_prefix(k);
  if (whole.status != HelloStatus::need_more) {
    std::size_t waits = 0, decides = size;  // parse(first(waits)) waits, parse(first(decides)) not
    while (decides - waits > 1) {
      const std::size_t mid = waits + (decides - waits) / 2;
      (check_prefix(mid) ? waits : decides) = mid;
    }
    FUZZ_CHECK(decides == 0 || check_prefix(decides - 1));
    FUZZ_CHECK(!check_prefix(decides));
  }

  // The input and zeros past kMaxClientHello (zeros, as a padding extension holds): the limit is
  // reached, and an input already decided keeps its answer whatever follows.
  if (size <= tls::kMaxClientHello) {
    std::vector<std::uint8_t> longer(bytes, bytes + size);
    longer.resize(tls::kMaxClientHello + 1);
    const std::span<const std::byte> more(reinterpret_cast<const std::byte*>(longer.data()),
                                          longer.size());
    const tls::HelloResult r = tls::parse_client_hello(more);
    check_result(more, r);
    if (whole.status != HelloStatus::need_more) FUZZ_CHECK(same(r, whole));
  }
  return 0;
}
