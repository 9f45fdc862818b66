// Fuzz target: the PROXY protocol v1/v2 parser (worker/proxy/proxy_protocol.h). Checks that its
// answer on a prefix agrees with the answer on the whole input (the parser is fed as bytes
// arrive), and that a parsed header survives a round trip through the encoder.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "tests/fuzz/fuzz_check.h"
#include "worker/proxy/proxy_protocol.h"

namespace {

namespace pp = ferry::worker::proxy_protocol;
using ferry::conf::ProxyProtocol;

void check_result(std::span<const std::byte> data, const pp::ParseResult& r) {
  const bool v1 = !data.empty() && data[0] == std::byte{'P'};
  switch (r.status) {
    case pp::Status::done:
      FUZZ_CHECK(r.length > 0 && r.length <= data.size());
      FUZZ_CHECK(r.header.version == (v1 ? 1 : 2));
      FUZZ_CHECK(r.length <= (v1 ? pp::kV1MaxLength : pp::kV2MaxLength));
      if (v1) {
        FUZZ_CHECK(data[r.length - 2] == std::byte{'\r'} && data[r.length - 1] == std::byte{'\n'});
      } else {
        FUZZ_CHECK(r.length >= 16);
      }
      if (!r.header.local) {
        FUZZ_CHECK(r.header.source.family() == r.header.destination.family());
      }
      break;
    case pp::Status::error: FUZZ_CHECK(!r.error.empty()); break;
    case pp::Status::need_more:
      // A full buffer that still needs more would wait for the timeout: never.
      FUZZ_CHECK(data.size() < (v1 ? pp::kV1MaxLength : pp::kV2MaxLength));
      break;
  }
}

bool same(const pp::ParseResult& a, const pp::ParseResult& b) {
  if (a.status != b.status) return false;
  if (a.status != pp::Status::done) return true;
  return a.length == b.length && a.header.version == b.header.version &&
         a.header.local == b.header.local && a.header.source == b.header.source &&
         a.header.destination == b.header.destination;
}

// "[::ffff:1.2.3.4]:80" and "1.2.3.4:80" name the same peer: the encoder sends a v4-mapped
// address as IPv4.
std::string normalized(const ferry::event::SocketAddress& a) {
  std::string text = a.to_string();
  constexpr std::string_view kMapped = "[::ffff:";
  const auto close = text.find(']');
  if (text.starts_with(kMapped) && close != std::string::npos && text.find('.') < close) {
    text = text.substr(kMapped.size(), close - kMapped.size()) + text.substr(close + 1);
  }
  return text;
}

void check_round_trip(const pp::Header& header) {
  for (const ProxyProtocol version : {ProxyProtocol::v1, ProxyProtocol::v2}) {
    std::array<std::byte, pp::kMaxEncoded> out{};
    const std::size_t n = pp::encode(version, header.source, header.destination, out);
    FUZZ_CHECK(n > 0 && n <= out.size());
    const pp::ParseResult back = pp::parse(std::span<const std::byte>(out.data(), n));
    FUZZ_CHECK(back.status == pp::Status::done && back.length == n && !back.header.local);
    FUZZ_CHECK(back.header.version == (version == ProxyProtocol::v1 ? 1 : 2));
    FUZZ_CHECK(normalized(back.header.source) == normalized(header.source));
    FUZZ_CHECK(normalized(back.header.destination) == normalized(header.destination));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  const std::span<const std::byte> data(reinterpret_cast<const std::byte*>(bytes), size);
  const pp::ParseResult whole = pp::parse(data);
  check_result(data, whole);

  // Prefixes: the first 64 lengths, a few the input picks, and the two around the header's end.
  // Before a decision every prefix needs more; once decided, longer prefixes decide the same.
  std::array<std::size_t, 8> picked{};
  for (std::size_t i = 0; i < picked.size(); ++i) {
    picked[i] = size == 0 ? 0 : (static_cast<std::size_t>(bytes[i % size]) * 131 + i * 977) % size;
  }
  const auto check_prefix = [&](std::size_t k) {
    if (k > size) return;
    const pp::ParseResult r = pp::parse(data.first(k));
    check_result(data.first(k), r);
    if (r.status == pp::Status::need_more) {
      FUZZ_CHECK(whole.status != pp::Status::done || k < whole.length);
    } else {
      FUZZ_CHECK(same(r, whole));
    }
  };
  for (std::size_t k = 0; k <= std::min<std::size_t>(size, 64); ++k) check_prefix(k);
  for (const std::size_t k : picked) check_prefix(k);
  if (whole.status == pp::Status::done) {
    check_prefix(whole.length - 1);
    check_prefix(whole.length);
    if (!whole.header.local) check_round_trip(whole.header);
  }
  return 0;
}
