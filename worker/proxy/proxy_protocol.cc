// PROXY protocol: the v1 line and the v2 block are checked byte by byte as they arrive, so a
// client that sends anything else is refused on its first wrong byte; and the encoder.
#include "worker/proxy/proxy_protocol.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <optional>

namespace ferry::worker::proxy_protocol {
namespace {

constexpr std::string_view kV1Prefix = "PROXY ";
constexpr std::array<unsigned char, 12> kV2Signature = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                        0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
constexpr std::size_t kV2Fixed = 16;  // signature, version/command, family, length
constexpr unsigned kV2Version = 0x2;
constexpr unsigned kLocal = 0x0, kProxy = 0x1;
// Byte 13: address family in the high nibble, transport (1 stream, 2 datagram) in the low.
constexpr unsigned kUnspec = 0x00, kTcp4 = 0x11, kUdp4 = 0x12, kTcp6 = 0x21, kUdp6 = 0x22,
                   kUnixStream = 0x31, kUnixDgram = 0x32;
// Address block sizes: two addresses and two ports (AF_UNIX: two 108-byte paths).
constexpr std::size_t kTcp4Block = 12, kTcp6Block = 36, kUnixBlock = 216;
constexpr std::size_t kTlvHeader = 3;  // type, 16-bit length

// An inet address in the form both versions carry it: raw network-order bytes and a port.
struct Endpoint {
  bool v6 = false;
  std::array<unsigned char, 16> addr{};  // the first 4 bytes when !v6
  std::uint16_t port = 0;

  [[nodiscard]] std::size_t addr_size() const noexcept { return v6 ? 16 : 4; }
  [[nodiscard]] int family() const noexcept { return v6 ? AF_INET6 : AF_INET; }

  [[nodiscard]] event::SocketAddress to_socket_address() const noexcept {
    if (v6) {
      sockaddr_in6 sin6{};
      sin6.sin6_family = AF_INET6;
      sin6.sin6_port = htons(port);
      std::memcpy(&sin6.sin6_addr, addr.data(), 16);
      return {reinterpret_cast<const sockaddr*>(&sin6), sizeof sin6};
    }
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    std::memcpy(&sin.sin_addr, addr.data(), 4);
    return {reinterpret_cast<const sockaddr*>(&sin), sizeof sin};
  }

  // A v4 client on a [::] listener shows as ::ffff:a.b.c.d; the upstream should see a.b.c.d.
  static std::optional<Endpoint> of(const event::SocketAddress& a) noexcept {
    Endpoint e;
    if (a.family() == AF_INET) {
      const auto* sin = reinterpret_cast<const sockaddr_in*>(a.get());
      std::memcpy(e.addr.data(), &sin->sin_addr, 4);
      e.port = ntohs(sin->sin_port);
      return e;
    }
    if (a.family() != AF_INET6) return std::nullopt;
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(a.get());
    e.port = ntohs(sin6->sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
      std::memcpy(e.addr.data(), &sin6->sin6_addr.s6_addr[12], 4);
    } else {
      e.v6 = true;
      std::memcpy(e.addr.data(), &sin6->sin6_addr, 16);
    }
    return e;
  }

  void map_to_v6() noexcept {
    if (v6) return;
    std::array<unsigned char, 16> mapped{};
    mapped[10] = mapped[11] = 0xFF;
    std::copy_n(addr.begin(), 4, mapped.begin() + 12);
    addr = mapped;
    v6 = true;
  }
};

ParseResult fail(std::string_view why) noexcept {
  ParseResult r;
  r.status = Status::error;
  r.error = why;
  return r;
}

ParseResult need_more() noexcept { return {}; }

ParseResult done(int version, std::size_t length, const Endpoint* source,
                 const Endpoint* destination) noexcept {
  ParseResult r;
  r.status = Status::done;
  r.length = length;
  r.header.version = version;
  r.header.local = source == nullptr;
  if (source != nullptr) {
    r.header.source = source->to_socket_address();
    r.header.destination = destination->to_socket_address();
  }
  return r;
}

// The v1 line after "PROXY ": family, source, destination, source port, destination port, each
// checked while it grows (so "PROXY TCP4 x" fails at the x) and again once its space or CR ends
// it. After UNKNOWN the rest of the line is ignored, as the specification asks.
class V1Line {
 public:
  static constexpr int kFields = 5;

  [[nodiscard]] bool unknown() const noexcept { return unknown_; }
  [[nodiscard]] bool complete() const noexcept { return field_ == kFields; }

  // Empty while `text`, the current field so far, can still grow into a valid one; else the error.
  [[nodiscard]] std::string_view check_prefix(std::string_view text) const noexcept {
    switch (field_) {
      case 0:
        for (std::string_view word : {"TCP4", "TCP6", "UNKNOWN"}) {
          if (word.starts_with(text)) return {};
        }
        return kBad[0];
      case 1:
      case 2: {
        // Longest inet_ntop forms (INET_ADDRSTRLEN, INET6_ADDRSTRLEN less the NUL).
        const bool v4 = family_ == AF_INET;
        const std::string_view chars = v4 ? "0123456789." : "0123456789abcdefABCDEF:.";
        if (text.size() > (v4 ? 15u : 45u) || text.find_first_not_of(chars) != text.npos) {
          return kBad[field_];
        }
        return {};
      }
      default: return port(text) ? std::string_view{} : kBad[field_];
    }
  }

  // Ends the current field at a space or CR: an error text, or empty.
  std::string_view close(std::string_view text) noexcept {
    if (text.empty()) return "v1: empty field (a double space or a missing field)";
    if (const auto why = check_prefix(text); !why.empty()) return why;
    switch (field_) {
      case 0:
        if (text == "TCP4") {
          family_ = AF_INET;
        } else if (text == "TCP6") {
          family_ = AF_INET6;
        } else if (text == "UNKNOWN") {
          unknown_ = true;
        } else {
          return kBad[0];
        }
        source_.v6 = destination_.v6 = family_ == AF_INET6;
        break;
      case 1:
      case 2: {
        char copy[INET6_ADDRSTRLEN] = {};
        text.copy(copy, sizeof copy - 1);
        Endpoint& e = field_ == 1 ? source_ : destination_;
        if (inet_pton(family_, copy, e.addr.data()) != 1) return kBad[field_];
        break;
      }
      default: (field_ == 3 ? source_ : destination_).port = *port(text); break;
    }
    ++field_;
    return {};
  }

  [[nodiscard]] ParseResult result(std::size_t length) const noexcept {
    return unknown_ ? done(1, length, nullptr, nullptr) : done(1, length, &source_, &destination_);
  }

 private:
  static constexpr std::array<std::string_view, kFields> kBad = {
      "v1: bad protocol family", "v1: bad source address", "v1: bad destination address",
      "v1: bad source port", "v1: bad destination port"};

  // Decimal without sign or leading zero, at most 65535; a prefix of one qualifies too.
  static std::optional<std::uint16_t> port(std::string_view text) noexcept {
    if (text.size() > 5 || (text.size() > 1 && text[0] == '0')) return std::nullopt;
    if (text.find_first_not_of("0123456789") != text.npos) return std::nullopt;
    unsigned value = 0;
    std::from_chars(text.data(), text.data() + text.size(), value);
    if (value > 65535) return std::nullopt;
    return static_cast<std::uint16_t>(value);
  }

  int field_ = 0;
  int family_ = AF_INET;
  bool unknown_ = false;
  Endpoint source_;
  Endpoint destination_;
};

ParseResult parse_v1(std::string_view data) noexcept {
  const std::size_t n = std::min(data.size(), kV1Prefix.size());
  if (data.substr(0, n) != kV1Prefix.substr(0, n)) return fail("v1: does not start \"PROXY \"");
  constexpr std::string_view kTooLong = "v1: no CRLF within 107 bytes";
  const std::string_view line = data.substr(0, kV1MaxLength);
  V1Line v1;
  std::size_t field_start = kV1Prefix.size();
  for (std::size_t i = kV1Prefix.size(); i < line.size(); ++i) {
    const char c = line[i];
    if (c == '\n') return fail("v1: LF without CR");
    if (c == '\r') {
      if (!v1.unknown()) {
        if (const auto why = v1.close(line.substr(field_start, i - field_start)); !why.empty()) {
          return fail(why);
        }
        if (!v1.unknown() && !v1.complete()) return fail("v1: missing field");
      }
      if (i + 1 == line.size()) return line.size() == kV1MaxLength ? fail(kTooLong) : need_more();
      if (line[i + 1] != '\n') return fail("v1: CR without LF");
      return v1.result(i + 2);
    }
    if (v1.unknown()) continue;
    if (c == ' ') {
      if (const auto why = v1.close(line.substr(field_start, i - field_start)); !why.empty()) {
        return fail(why);
      }
      if (v1.complete()) return fail("v1: extra field");
      field_start = i + 1;
      continue;
    }
    if (const auto why = v1.check_prefix(line.substr(field_start, i + 1 - field_start));
        !why.empty()) {
      return fail(why);
    }
  }
  return line.size() == kV1MaxLength ? fail(kTooLong) : need_more();
}

ParseResult parse_v2(std::span<const unsigned char> data) noexcept {
  const std::size_t n = std::min(data.size(), kV2Signature.size());
  if (!std::equal(data.begin(), data.begin() + static_cast<std::ptrdiff_t>(n),
                  kV2Signature.begin())) {
    return fail("v2: bad signature");
  }
  if (data.size() <= 12) return need_more();
  if (data[12] >> 4 != kV2Version) return fail("v2: bad version");
  const unsigned command = data[12] & 0xFu;
  if (command != kLocal && command != kProxy) return fail("v2: bad command");
  if (data.size() <= 13) return need_more();

  // LOCAL (a health check from the balancer itself) carries nothing we use, whatever the family.
  const unsigned family = data[13];
  std::size_t block = 0;
  if (command == kProxy) {
    switch (family) {
      case kUnspec: break;
      case kTcp4: block = kTcp4Block; break;
      case kTcp6: block = kTcp6Block; break;
      case kUnixStream: block = kUnixBlock; break;
      case kUdp4:
      case kUdp6:
      case kUnixDgram: return fail("v2: datagram transport (only TCP is proxied)");
      default: return fail("v2: bad address family");
    }
  }
  if (data.size() < kV2Fixed) return need_more();
  const std::size_t total = kV2Fixed + (std::size_t{data[14]} << 8 | data[15]);
  if (total > kV2MaxLength) return fail("v2: declared length over 2048");
  if (total < kV2Fixed + block) return fail("v2: address block shorter than its family needs");

  // UNSPEC has no defined address block, so its body cannot be told from TLVs: skipped whole.
  if (command == kProxy && family != kUnspec) {
    for (std::size_t tlv = kV2Fixed + block; tlv < total;) {
      if (total - tlv < kTlvHeader) return fail("v2: TLV header past the declared length");
      if (data.size() < tlv + kTlvHeader) return need_more();
      const std::size_t length = std::size_t{data[tlv + 1]} << 8 | data[tlv + 2];
      if (length > total - tlv - kTlvHeader) return fail("v2: TLV past the declared length");
      tlv += kTlvHeader + length;
    }
  }
  if (data.size() < total) return need_more();
  if (command == kLocal || (family != kTcp4 && family != kTcp6)) {
    return done(2, total, nullptr, nullptr);
  }

  Endpoint source, destination;
  source.v6 = destination.v6 = family == kTcp6;
  const std::size_t size = source.addr_size();
  const unsigned char* p = data.data() + kV2Fixed;
  std::memcpy(source.addr.data(), p, size);
  std::memcpy(destination.addr.data(), p + size, size);
  p += 2 * size;
  source.port = static_cast<std::uint16_t>(p[0] << 8 | p[1]);
  destination.port = static_cast<std::uint16_t>(p[2] << 8 | p[3]);
  return done(2, total, &source, &destination);
}

std::size_t encode_v1(const Endpoint* source, const Endpoint* destination,
                      std::span<std::byte> out) noexcept {
  char* const begin = reinterpret_cast<char*>(out.data());
  char* const end = begin + out.size();
  char* p = begin;
  const auto put = [&p](std::string_view text) { p = std::copy(text.begin(), text.end(), p); };
  if (source == nullptr) {
    put("PROXY UNKNOWN\r\n");
    return static_cast<std::size_t>(p - begin);
  }
  put(source->v6 ? "PROXY TCP6 " : "PROXY TCP4 ");
  for (const Endpoint* e : {source, destination}) {
    inet_ntop(e->family(), e->addr.data(), p, static_cast<socklen_t>(end - p));
    p += std::strlen(p);
    put(" ");
  }
  p = std::to_chars(p, end, source->port).ptr;
  put(" ");
  p = std::to_chars(p, end, destination->port).ptr;
  put("\r\n");
  return static_cast<std::size_t>(p - begin);
}

std::size_t encode_v2(const Endpoint* source, const Endpoint* destination,
                      std::span<std::byte> out) noexcept {
  auto* const begin = reinterpret_cast<unsigned char*>(out.data());
  unsigned char* p = std::copy(kV2Signature.begin(), kV2Signature.end(), begin);
  const auto put16 = [&p](std::size_t value) {
    *p++ = static_cast<unsigned char>(value >> 8);
    *p++ = static_cast<unsigned char>(value);
  };
  *p++ = kV2Version << 4 | kProxy;
  if (source == nullptr) {
    *p++ = kUnspec;
    put16(0);
    return static_cast<std::size_t>(p - begin);
  }
  *p++ = static_cast<unsigned char>(source->v6 ? kTcp6 : kTcp4);
  put16(source->v6 ? kTcp6Block : kTcp4Block);
  p = std::copy_n(source->addr.begin(), source->addr_size(), p);
  p = std::copy_n(destination->addr.begin(), destination->addr_size(), p);
  put16(source->port);
  put16(destination->port);
  return static_cast<std::size_t>(p - begin);
}

}  // namespace

ParseResult parse(std::span<const std::byte> data) noexcept {
  if (data.empty()) return need_more();
  const auto* bytes = reinterpret_cast<const unsigned char*>(data.data());
  if (bytes[0] == kV1Prefix[0]) {
    return parse_v1({reinterpret_cast<const char*>(bytes), data.size()});
  }
  if (bytes[0] == kV2Signature[0]) return parse_v2({bytes, data.size()});
  return fail("not a PROXY protocol header");
}

std::size_t encode(conf::ProxyProtocol version, const event::SocketAddress& source,
                   const event::SocketAddress& destination, std::span<std::byte> out) noexcept {
  if (version == conf::ProxyProtocol::off || out.size() < kMaxEncoded) return 0;
  auto from = Endpoint::of(source);
  auto to = Endpoint::of(destination);
  const Endpoint* s = nullptr;
  const Endpoint* d = nullptr;
  if (from && to) {
    if (from->v6 != to->v6) {
      from->map_to_v6();
      to->map_to_v6();
    }
    s = &*from;
    d = &*to;
  }
  return version == conf::ProxyProtocol::v1 ? encode_v1(s, d, out) : encode_v2(s, d, out);
}

}  // namespace ferry::worker::proxy_protocol
