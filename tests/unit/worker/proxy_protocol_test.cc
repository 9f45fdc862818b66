// Tests of worker/proxy/proxy_protocol: byte-exact v1/v2 encoding against headers written out
// from the specification, parsing of valid headers, need_more on every prefix, early rejection of
// malformed input, and a randomized loop over mutated headers.
#include "worker/proxy/proxy_protocol.h"

#include <netinet/in.h>
#include <sys/un.h>

#include <array>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace ferry::worker::proxy_protocol {
namespace {

using conf::ProxyProtocol;
using event::SocketAddress;
using Bytes = std::vector<unsigned char>;

SocketAddress addr(std::string_view text) {
  const auto a = SocketAddress::parse_numeric(text);
  EXPECT_TRUE(a) << text;
  return a.value_or(SocketAddress{});
}

SocketAddress unix_socket() {
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::strcpy(sun.sun_path, "/run/ferry.sock");
  return SocketAddress(reinterpret_cast<const sockaddr*>(&sun), sizeof sun);
}

Bytes text(std::string_view s) { return Bytes(s.begin(), s.end()); }

Bytes operator+(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// The v2 signature, from section 2.2 of the specification.
const Bytes kSignature = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

ParseResult parse_bytes(const Bytes& b, std::size_t size) {
  return parse(std::as_bytes(std::span(b.data(), size)));
}
ParseResult parse_bytes(const Bytes& b) { return parse_bytes(b, b.size()); }

Bytes encoded(ProxyProtocol version, const SocketAddress& source,
              const SocketAddress& destination) {
  std::array<std::byte, kMaxEncoded> out{};
  const std::size_t n = encode(version, source, destination, out);
  EXPECT_LE(n, out.size());
  const auto* p = reinterpret_cast<const unsigned char*>(out.data());
  return Bytes(p, p + n);
}

// ---- encode ----

TEST(Encode, V1Tcp4) {
  EXPECT_EQ(encoded(ProxyProtocol::v1, addr("192.168.0.1:56324"), addr("192.168.0.11:443")),
            text("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"));
}

TEST(Encode, V1Tcp6) {
  EXPECT_EQ(encoded(ProxyProtocol::v1, addr("[2001:db8::1]:56324"), addr("[2001:db8::2]:443")),
            text("PROXY TCP6 2001:db8::1 2001:db8::2 56324 443\r\n"));
}

TEST(Encode, V2Tcp4) {
  const Bytes expected = kSignature + Bytes{0x21, 0x11, 0x00, 0x0C,   // v2 PROXY, TCP4, 12 bytes
                                            0xC0, 0xA8, 0x00, 0x01,   // 192.168.0.1
                                            0xC0, 0xA8, 0x00, 0x0B,   // 192.168.0.11
                                            0xDC, 0x04, 0x01, 0xBB};  // 56324, 443
  EXPECT_EQ(encoded(ProxyProtocol::v2, addr("192.168.0.1:56324"), addr("192.168.0.11:443")),
            expected);
}

TEST(Encode, V2Tcp6) {
  const Bytes expected =
      kSignature + Bytes{0x21, 0x21, 0x00, 0x24,                          // v2 PROXY, TCP6, 36
                         0x20, 0x01, 0x0D, 0xB8, 0x00, 0x00, 0x00, 0x00,  // 2001:db8::1
                         0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,  //
                         0x20, 0x01, 0x0D, 0xB8, 0x00, 0x00, 0x00, 0x00,  // 2001:db8::2
                         0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,  //
                         0xDC, 0x04, 0x01, 0xBB};                         // 56324, 443
  EXPECT_EQ(encoded(ProxyProtocol::v2, addr("[2001:db8::1]:56324"), addr("[2001:db8::2]:443")),
            expected);
}

// An IPv4 client reaching an IPv6 address (or the reverse) can only be told in TCP6, the IPv4
// side v4-mapped.
TEST(Encode, MixedFamiliesAreSentAsTcp6) {
  EXPECT_EQ(encoded(ProxyProtocol::v1, addr("192.0.2.1:1234"), addr("[2001:db8::1]:443")),
            text("PROXY TCP6 ::ffff:192.0.2.1 2001:db8::1 1234 443\r\n"));
  EXPECT_EQ(encoded(ProxyProtocol::v1, addr("[2001:db8::1]:1234"), addr("192.0.2.1:443")),
            text("PROXY TCP6 2001:db8::1 ::ffff:192.0.2.1 1234 443\r\n"));
  const Bytes expected =
      kSignature + Bytes{0x21, 0x21, 0x00, 0x24,                          //
                         0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // ::ffff:192.0.2.1
                         0x00, 0x00, 0xFF, 0xFF, 0xC0, 0x00, 0x02, 0x01,  //
                         0x20, 0x01, 0x0D, 0xB8, 0x00, 0x00, 0x00, 0x00,  // 2001:db8::1
                         0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,  //
                         0x04, 0xD2, 0x01, 0xBB};                         // 1234, 443
  EXPECT_EQ(encoded(ProxyProtocol::v2, addr("192.0.2.1:1234"), addr("[2001:db8::1]:443")),
            expected);
}

// A v4 client accepted on a [::] listener: both ends show as ::ffff:a.b.c.d, sent as TCP4.
TEST(Encode, V4MappedClientIsSentAsTcp4) {
  const SocketAddress client = addr("[::ffff:192.0.2.1]:1234");
  const SocketAddress local = addr("[::ffff:198.51.100.7]:8080");
  EXPECT_EQ(encoded(ProxyProtocol::v1, client, local),
            text("PROXY TCP4 192.0.2.1 198.51.100.7 1234 8080\r\n"));
  const Bytes expected = kSignature + Bytes{0x21, 0x11, 0x00, 0x0C,   //
                                            0xC0, 0x00, 0x02, 0x01,   // 192.0.2.1
                                            0xC6, 0x33, 0x64, 0x07,   // 198.51.100.7
                                            0x04, 0xD2, 0x1F, 0x90};  // 1234, 8080
  EXPECT_EQ(encoded(ProxyProtocol::v2, client, local), expected);
  // Against a real IPv6 destination it stays mapped, in TCP6.
  EXPECT_EQ(encoded(ProxyProtocol::v1, client, addr("[2001:db8::1]:443")),
            text("PROXY TCP6 ::ffff:192.0.2.1 2001:db8::1 1234 443\r\n"));
}

TEST(Encode, NonInetFamilyIsUnknownOrUnspec) {
  EXPECT_EQ(encoded(ProxyProtocol::v1, unix_socket(), unix_socket()), text("PROXY UNKNOWN\r\n"));
  EXPECT_EQ(encoded(ProxyProtocol::v1, addr("192.0.2.1:1"), unix_socket()),
            text("PROXY UNKNOWN\r\n"));
  EXPECT_EQ(encoded(ProxyProtocol::v2, unix_socket(), addr("192.0.2.1:1")),
            (kSignature + Bytes{0x21, 0x00, 0x00, 0x00}));
  EXPECT_EQ(encoded(ProxyProtocol::v2, SocketAddress{}, SocketAddress{}),
            (kSignature + Bytes{0x21, 0x00, 0x00, 0x00}));
}

TEST(Encode, OffOrShortBufferWritesNothing) {
  std::array<std::byte, kMaxEncoded> out{};
  EXPECT_EQ(encode(ProxyProtocol::off, addr("192.0.2.1:1"), addr("192.0.2.2:2"), out), 0u);
  EXPECT_EQ(encode(ProxyProtocol::v1, addr("192.0.2.1:1"), addr("192.0.2.2:2"),
                   std::span(out).first(kMaxEncoded - 1)),
            0u);
}

TEST(Encode, LongestV1FitsWithinTheLimit) {
  const Bytes line =
      encoded(ProxyProtocol::v1, addr("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
              addr("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"));
  EXPECT_EQ(line.size(), 104u);  // the worst case the specification computes
  EXPECT_LE(line.size(), kV1MaxLength);
}

// ---- parse: valid headers ----

const std::string kClientData = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";

void expect_addresses(const ParseResult& r, std::string_view source, std::string_view destination) {
  ASSERT_EQ(r.status, Status::done) << r.error;
  EXPECT_FALSE(r.header.local);
  EXPECT_EQ(r.header.source.to_string(), source);
  EXPECT_EQ(r.header.destination.to_string(), destination);
  EXPECT_EQ(r.header.source, addr(source));
  EXPECT_EQ(r.header.destination, addr(destination));
}

TEST(ParseV1, Tcp4WithClientDataAfterIt) {
  const std::string header = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
  const ParseResult r = parse_bytes(text(header + kClientData));
  expect_addresses(r, "192.168.0.1:56324", "192.168.0.11:443");
  EXPECT_EQ(r.header.version, 1);
  EXPECT_EQ(r.length, header.size());
}

TEST(ParseV1, Tcp6) {
  const std::string header = "PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 1 65535\r\n";
  const ParseResult r = parse_bytes(text(header + kClientData));
  expect_addresses(r, "[2001:db8::1]:1", "[::ffff:10.0.0.1]:65535");
  EXPECT_EQ(r.length, header.size());
}

TEST(ParseV1, PortZero) {
  expect_addresses(parse_bytes(text("PROXY TCP4 0.0.0.0 255.255.255.255 0 0\r\n")), "0.0.0.0:0",
                   "255.255.255.255:0");
}

TEST(ParseV1, UnknownIsLocalWhateverFollows) {
  for (std::string header : {"PROXY UNKNOWN\r\n", "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
                             "PROXY UNKNOWN anything at all, even  two spaces\r\n"}) {
    const ParseResult r = parse_bytes(text(header + kClientData));
    ASSERT_EQ(r.status, Status::done) << header << r.error;
    EXPECT_TRUE(r.header.local);
    EXPECT_EQ(r.header.version, 1);
    EXPECT_EQ(r.length, header.size());
  }
}

TEST(ParseV1, LineOfExactly107BytesIsAccepted) {
  std::string header = "PROXY UNKNOWN ";
  header += std::string(kV1MaxLength - header.size() - 2, 'x') + "\r\n";
  ASSERT_EQ(header.size(), kV1MaxLength);
  const ParseResult r = parse_bytes(text(header + kClientData));
  ASSERT_EQ(r.status, Status::done) << r.error;
  EXPECT_EQ(r.length, kV1MaxLength);
}

TEST(ParseV2, Tcp4WithClientDataAfterIt) {
  const Bytes header = kSignature + Bytes{0x21, 0x11, 0x00, 0x0C, 0xC0, 0xA8, 0x00, 0x01,
                                          0xC0, 0xA8, 0x00, 0x0B, 0xDC, 0x04, 0x01, 0xBB};
  const ParseResult r = parse_bytes(header + text(kClientData));
  expect_addresses(r, "192.168.0.1:56324", "192.168.0.11:443");
  EXPECT_EQ(r.header.version, 2);
  EXPECT_EQ(r.length, 28u);
}

TEST(ParseV2, Tcp6) {
  const Bytes header =
      kSignature + Bytes{0x21, 0x21, 0x00, 0x24, 0x20, 0x01, 0x0D, 0xB8, 0,    0,   0, 0, 0, 0, 0,
                         0,    0,    0,    0,    1,    0xFE, 0x80, 0,    0,    0,   0, 0, 0, 0, 0,
                         0,    0,    0,    0,    0,    0x2A, 0x00, 0x50, 0x1F, 0x90};
  const ParseResult r = parse_bytes(header + text(kClientData));
  expect_addresses(r, "[2001:db8::1]:80", "[fe80::2a]:8080");
  EXPECT_EQ(r.length, 52u);
}

TEST(ParseV2, TlvsAreSkipped) {
  const Bytes header = kSignature + Bytes{0x21, 0x11, 0x00, 0x14,  // 12 + 5 + 3
                                          10,   0,    0,    1,    10,  0, 0, 2, 0x00, 0x01, 0x00,
                                          0x02,                         //
                                          0x01, 0x00, 0x02, 'h',  '2',  // PP2_TYPE_ALPN "h2"
                                          0x04, 0x00, 0x00};            // PP2_TYPE_NOOP
  const ParseResult r = parse_bytes(header + text(kClientData));
  expect_addresses(r, "10.0.0.1:1", "10.0.0.2:2");
  EXPECT_EQ(r.length, 36u);
}

TEST(ParseV2, LocalIsLocalWhateverTheFamilyAndBody) {
  for (const Bytes& header : {kSignature + Bytes{0x20, 0x00, 0x00, 0x00},
                              kSignature + Bytes{0x20, 0x11, 0x00, 0x03, 1, 2, 3},
                              kSignature + Bytes{0x20, 0x77, 0x00, 0x01, 0xFF}}) {
    const ParseResult r = parse_bytes(header + text(kClientData));
    ASSERT_EQ(r.status, Status::done) << r.error;
    EXPECT_TRUE(r.header.local);
    EXPECT_EQ(r.header.version, 2);
    EXPECT_EQ(r.length, header.size());
  }
}

TEST(ParseV2, UnspecAndUnixAreLocal) {
  const Bytes unix_stream = kSignature + Bytes{0x21, 0x31, 0x00, 0xD8} + Bytes(216, 0);
  for (const Bytes& header :
       {kSignature + Bytes{0x21, 0x00, 0x00, 0x00},
        kSignature + Bytes{0x21, 0x00, 0x00, 0x02, 0xAB, 0xCD}, unix_stream}) {
    const ParseResult r = parse_bytes(header + text(kClientData));
    ASSERT_EQ(r.status, Status::done) << r.error;
    EXPECT_TRUE(r.header.local);
    EXPECT_EQ(r.length, header.size());
  }
}

TEST(ParseV2, LargestDeclaredLengthIsAccepted) {
  // 12 address bytes, then one NOOP TLV filling the rest of the 2048.
  const Bytes header = kSignature + Bytes{0x21, 0x11, 0x08, 0x00} + Bytes(12, 1) +
                       Bytes{0x04, 0x07, 0xF1} + Bytes(2033, 0);
  ASSERT_EQ(header.size(), kV2MaxLength);
  const ParseResult r = parse_bytes(header);
  ASSERT_EQ(r.status, Status::done) << r.error;
  EXPECT_EQ(r.length, kV2MaxLength);
}

TEST(Parse, EncodeThenParseGivesTheAddressesBack) {
  std::mt19937 rng(20261122);
  for (int i = 0; i < 20000; ++i) {
    const bool v6 = (rng() & 1) != 0;
    SocketAddress ends[2];
    for (SocketAddress& end : ends) {
      const auto port = static_cast<std::uint16_t>(rng());
      if (v6) {
        sockaddr_in6 sin6{};
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons(port);
        for (auto& b : sin6.sin6_addr.s6_addr) b = static_cast<std::uint8_t>(rng());
        sin6.sin6_addr.s6_addr[0] = 0x20;  // never v4-mapped, which would come back as IPv4
        end = SocketAddress(reinterpret_cast<const sockaddr*>(&sin6), sizeof sin6);
      } else {
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_port = htons(port);
        sin.sin_addr.s_addr = static_cast<std::uint32_t>(rng());
        end = SocketAddress(reinterpret_cast<const sockaddr*>(&sin), sizeof sin);
      }
    }
    for (ProxyProtocol version : {ProxyProtocol::v1, ProxyProtocol::v2}) {
      const Bytes header = encoded(version, ends[0], ends[1]);
      const ParseResult r = parse_bytes(header + text(kClientData));
      ASSERT_EQ(r.status, Status::done) << r.error;
      EXPECT_EQ(r.length, header.size());
      EXPECT_EQ(r.header.version, version == ProxyProtocol::v1 ? 1 : 2);
      EXPECT_EQ(r.header.source, ends[0]) << r.header.source.to_string();
      EXPECT_EQ(r.header.destination, ends[1]) << r.header.destination.to_string();
    }
  }
}

TEST(Parse, EncodedUnknownAndUnspecParseAsLocal) {
  for (ProxyProtocol version : {ProxyProtocol::v1, ProxyProtocol::v2}) {
    const ParseResult r = parse_bytes(encoded(version, unix_socket(), unix_socket()));
    ASSERT_EQ(r.status, Status::done) << r.error;
    EXPECT_TRUE(r.header.local);
  }
}

// ---- parse: prefixes and malformed input ----

std::vector<Bytes> valid_headers() {
  std::vector<Bytes> all = {
      text("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"),
      text("PROXY TCP6 2001:db8::1 2001:db8::2 0 65535\r\n"),
      text("PROXY UNKNOWN\r\n"),
      text("PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n"),
      kSignature + Bytes{0x21, 0x11, 0x00, 0x0C, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2},
      kSignature + Bytes{0x21, 0x11, 0x00, 0x14, 1,    2,    3,    4,   5,   6,    7,    8,
                         0,    1,    0,    2,    0x01, 0x00, 0x02, 'h', '2', 0x04, 0x00, 0x00},
      kSignature + Bytes{0x20, 0x00, 0x00, 0x00},
      kSignature + Bytes{0x20, 0x11, 0x00, 0x03, 1, 2, 3},
      kSignature + Bytes{0x21, 0x00, 0x00, 0x00},
      kSignature + Bytes{0x21, 0x31, 0x00, 0xD8} + Bytes(216, 0),
  };
  all.push_back(encoded(ProxyProtocol::v2, addr("[2001:db8::1]:1"), addr("[2001:db8::2]:2")));
  return all;
}

TEST(Parse, EveryStrictPrefixOfAValidHeaderNeedsMore) {
  for (const Bytes& header : valid_headers()) {
    ASSERT_EQ(parse_bytes(header).status, Status::done);
    for (std::size_t n = 0; n < header.size(); ++n) {
      const ParseResult r = parse_bytes(header, n);
      EXPECT_EQ(r.status, Status::need_more)
          << std::string(header.begin(), header.end()) << " cut at " << n << ": " << r.error;
    }
  }
}

struct Malformed {
  std::string name;
  Bytes input;
  std::string_view error;  // a part of the expected error text
};

std::vector<Malformed> malformed_inputs() {
  const Bytes tcp4_tail = {1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2};
  std::vector<Malformed> all = {
      {"v2 version 1", kSignature + Bytes{0x11, 0x11, 0x00, 0x0C} + tcp4_tail, "v2: bad version"},
      {"v2 version 3", kSignature + Bytes{0x31, 0x11, 0x00, 0x0C} + tcp4_tail, "v2: bad version"},
      {"v2 command 2", kSignature + Bytes{0x22, 0x11, 0x00, 0x0C} + tcp4_tail, "v2: bad command"},
      {"v2 command F", kSignature + Bytes{0x2F, 0x11, 0x00, 0x0C} + tcp4_tail, "v2: bad command"},
      {"v2 UDP4", kSignature + Bytes{0x21, 0x12, 0x00, 0x0C} + tcp4_tail, "datagram"},
      {"v2 UDP6", kSignature + Bytes{0x21, 0x22, 0x00, 0x24} + Bytes(36, 0), "datagram"},
      {"v2 unix datagram", kSignature + Bytes{0x21, 0x32, 0x00, 0xD8} + Bytes(216, 0), "datagram"},
      {"v2 family 0x41", kSignature + Bytes{0x21, 0x41, 0x00, 0x0C} + tcp4_tail, "family"},
      {"v2 family 0x10", kSignature + Bytes{0x21, 0x10, 0x00, 0x0C} + tcp4_tail, "family"},
      {"v2 family 0x13", kSignature + Bytes{0x21, 0x13, 0x00, 0x0C} + tcp4_tail, "family"},
      {"v2 TCP4 in 11 bytes", kSignature + Bytes{0x21, 0x11, 0x00, 0x0B} + Bytes(11, 0), "shorter"},
      {"v2 TCP6 in 35 bytes", kSignature + Bytes{0x21, 0x21, 0x00, 0x23} + Bytes(35, 0), "shorter"},
      {"v2 unix in 215 bytes", kSignature + Bytes{0x21, 0x31, 0x00, 0xD7} + Bytes(215, 0),
       "shorter"},
      {"v2 length 2049", kSignature + Bytes{0x21, 0x11, 0x08, 0x01} + tcp4_tail, "over 2048"},
      {"v2 LOCAL length 65535", kSignature + Bytes{0x20, 0x00, 0xFF, 0xFF}, "over 2048"},
      {"v2 TLV overruns",
       kSignature + Bytes{0x21, 0x11, 0x00, 0x11} + tcp4_tail + Bytes{0x01, 0x00, 0x03, 'h', '2'},
       "TLV past"},
      {"v2 TLV header cut", kSignature + Bytes{0x21, 0x11, 0x00, 0x0E} + tcp4_tail + Bytes{1, 0},
       "TLV header past"},
      {"v1 LF without CR", text("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), "LF without CR"},
      {"v1 UNKNOWN LF only", text("PROXY UNKNOWN\n"), "LF without CR"},
      {"v1 CR without LF", text("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rGET"), "CR without LF"},
      {"v1 108 bytes without CRLF", text("PROXY UNKNOWN " + std::string(94, 'x')), "no CRLF"},
      {"v1 CRLF ending at byte 108", text("PROXY UNKNOWN " + std::string(92, 'x') + "\r\n"),
       "no CRLF"},
      {"v1 source 1.2.3.256", text("PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n"), "bad source address"},
      {"v1 IPv6 in TCP4", text("PROXY TCP4 ::1 5.6.7.8 1 2\r\n"), "bad source address"},
      {"v1 IPv4 in TCP6", text("PROXY TCP6 1.2.3.4 ::1 1 2\r\n"), "bad source address"},
      {"v1 source hostname", text("PROXY TCP4 localhost 5.6.7.8 1 2\r\n"), "bad source address"},
      {"v1 destination 5.6.7", text("PROXY TCP4 1.2.3.4 5.6.7 1 2\r\n"), "bad destination address"},
      {"v1 destination :::", text("PROXY TCP6 ::1 ::: 1 2\r\n"), "bad destination address"},
      {"v1 source port 65536", text("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"), "bad source port"},
      {"v1 destination port 65536", text("PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n"),
       "bad destination port"},
      {"v1 port 6 digits", text("PROXY TCP4 1.2.3.4 5.6.7.8 1 000001\r\n"), "bad destination port"},
      {"v1 leading zero port", text("PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n"), "bad source port"},
      {"v1 signed port", text("PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n"), "bad source port"},
      {"v1 hex port", text("PROXY TCP4 1.2.3.4 5.6.7.8 1 0x50\r\n"), "bad destination port"},
      {"v1 double space after PROXY", text("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), "empty field"},
      {"v1 double space between ports", text("PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n"), "empty field"},
      {"v1 missing port", text("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), "missing field"},
      {"v1 family alone", text("PROXY TCP4\r\n"), "missing field"},
      {"v1 nothing after PROXY", text("PROXY \r\n"), "empty field"},
      {"v1 extra field", text("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"), "extra field"},
      {"v1 trailing space", text("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"), "extra field"},
      {"v1 family TCP5", text("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"), "bad protocol family"},
      {"v1 family UDP4", text("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"), "bad protocol family"},
      {"v1 family tcp4", text("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n"), "bad protocol family"},
      {"v1 family TCP", text("PROXY TCP 1.2.3.4 5.6.7.8 1 2\r\n"), "bad protocol family"},
      {"v1 family UNKNOWNX", text("PROXY UNKNOWNX\r\n"), "bad protocol family"},
      {"v1 tab separator", text("PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n"), "bad protocol family"},
      {"v1 NUL in address", text(std::string("PROXY TCP4 1.2\0.3.4 5.6.7.8 1 2\r\n", 33)),
       "bad source address"},
      {"v1 PROXY without space", text("PROXY\r\n"), "PROXY"},
      {"lowercase proxy", text("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), "not a PROXY"},
      {"HTTP request", text(kClientData), "not a PROXY"},
      {"HTTP/2 preface", text("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), "PROXY"},
      {"HTTP POST", text("POST / HTTP/1.1\r\n\r\n"), "PROXY"},
      {"TLS ClientHello", Bytes{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}, "not a PROXY"},
      {"SSH banner", text("SSH-2.0-OpenSSH_9.6\r\n"), "not a PROXY"},
      {"NUL byte", Bytes{0x00}, "not a PROXY"},
  };
  // A wrong byte at each position of the v2 signature.
  const Bytes good = kSignature + Bytes{0x21, 0x11, 0x00, 0x0C} + tcp4_tail;
  for (std::size_t i = 0; i < kSignature.size(); ++i) {
    Bytes bad = good;
    bad[i] ^= 0x20;
    all.push_back({"v2 signature byte " + std::to_string(i), bad,
                   i == 0 ? "not a PROXY" : "v2: bad signature"});
  }
  return all;
}

TEST(Parse, MalformedInputIsAnError) {
  const auto all = malformed_inputs();
  EXPECT_GE(all.size(), 25u);
  for (const Malformed& m : all) {
    const ParseResult r = parse_bytes(m.input);
    EXPECT_EQ(r.status, Status::error) << m.name;
    EXPECT_NE(r.error.find(m.error), std::string_view::npos)
        << m.name << ": \"" << r.error << "\" lacks \"" << m.error << '"';
    EXPECT_EQ(r.length, 0u) << m.name;
  }
}

// Once a prefix is known bad, more bytes cannot make it good: the caller may stop reading.
TEST(Parse, AnErrorStaysAnErrorAsBytesArrive) {
  for (const Malformed& m : malformed_inputs()) {
    bool failed = false;
    for (std::size_t n = 1; n <= m.input.size(); ++n) {
      const Status s = parse_bytes(m.input, n).status;
      EXPECT_NE(s, Status::done) << m.name << " at " << n;
      if (failed) {
        EXPECT_EQ(s, Status::error) << m.name << " at " << n;
      }
      failed = s == Status::error;
    }
  }
}

std::size_t bytes_to_reject(const Bytes& input) {
  for (std::size_t n = 1; n <= input.size(); ++n) {
    if (parse_bytes(input, n).status == Status::error) return n;
  }
  return 0;
}

TEST(Parse, GarbageIsRejectedOnItsFirstWrongByte) {
  EXPECT_EQ(bytes_to_reject(text(kClientData)), 1u);
  EXPECT_EQ(bytes_to_reject(Bytes{0x16, 0x03, 0x01}), 1u);
  EXPECT_EQ(bytes_to_reject(text("proxy")), 1u);
  EXPECT_EQ(bytes_to_reject(text("POST / HTTP/1.1")), 2u);
  EXPECT_EQ(bytes_to_reject(text("PRI * HTTP/2.0")), 3u);
  EXPECT_EQ(bytes_to_reject(text("PROXY TCP4 x")), 12u);
  EXPECT_EQ(bytes_to_reject(text("PROXY TCP7")), 10u);
  EXPECT_EQ(bytes_to_reject(text("PROXY TCP4 1.2.3.4 5.6.7.8 01")), 29u);
  EXPECT_EQ(bytes_to_reject(text("PROXY TCP4 1.2.3.4 5.6.7.8 65536")), 32u);
  EXPECT_EQ(bytes_to_reject(text("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3")), 31u);
  EXPECT_EQ(bytes_to_reject(text("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX")), 32u);
  EXPECT_EQ(bytes_to_reject(text("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n")), 29u);  // at the CR
  for (std::size_t i = 0; i < kSignature.size(); ++i) {
    Bytes bad = kSignature;
    bad[i] ^= 0x01;
    EXPECT_EQ(bytes_to_reject(bad), i + 1) << "signature byte " << i;
  }
  EXPECT_EQ(bytes_to_reject(kSignature + Bytes{0x11}), 13u);
  EXPECT_EQ(bytes_to_reject(kSignature + Bytes{0x21, 0x12}), 14u);
  EXPECT_EQ(bytes_to_reject(kSignature + Bytes{0x21, 0x11, 0x08, 0x01}), 16u);
  EXPECT_EQ(bytes_to_reject(kSignature + Bytes{0x21, 0x11, 0x00, 0x0B}), 16u);
  // A TLV whose length overruns is refused when its header arrives, not at the header's end.
  EXPECT_EQ(bytes_to_reject(kSignature + Bytes{0x21, 0x11, 0x00, 0x11} + Bytes(12, 0) +
                            Bytes{0x01, 0x00, 0x03}),
            31u);
}

// ---- randomized ----

TEST(Parse, RandomAndMutatedInputNeverCrashOrOverrun) {
  std::mt19937 rng(8);
  const auto pick = [&rng](std::size_t n) { return static_cast<std::size_t>(rng() % n); };
  const std::vector<Bytes> seeds = valid_headers();
  const std::string_view interesting = " \r\n0123456789.:PROXYTCP46UNKNOWN";
  Bytes input;
  for (int i = 0; i < 300000; ++i) {
    if (i % 4 == 0) {  // random bytes, starting like one version or the other
      input.resize(pick(140));
      for (auto& b : input) b = static_cast<unsigned char>(rng());
      if (!input.empty()) input[0] = (i & 4) != 0 ? 'P' : 0x0D;
    } else {  // a valid header with a few bytes changed, cut, dropped or added, then client data
      input = seeds[pick(seeds.size())];
      for (std::size_t k = 1 + pick(3); k > 0; --k) {
        const std::size_t at = input.empty() ? 0 : pick(input.size());
        const auto value = static_cast<unsigned char>(
            (rng() & 1) != 0 ? rng()
                             : static_cast<unsigned>(interesting[pick(interesting.size())]));
        switch (pick(4)) {
          case 0:
            if (!input.empty()) input[at] = value;
            break;
          case 1: input.resize(at); break;
          case 2:
            if (!input.empty()) input.erase(input.begin() + static_cast<std::ptrdiff_t>(at));
            break;
          default: input.insert(input.begin() + static_cast<std::ptrdiff_t>(at), value); break;
        }
      }
      if ((rng() & 1) != 0) input = input + text(kClientData);
    }
    const ParseResult r = parse_bytes(input);
    switch (r.status) {
      case Status::need_more:
        ASSERT_EQ(r.length, 0u);
        ASSERT_LT(input.size(), kV2MaxLength);
        break;
      case Status::error: ASSERT_FALSE(r.error.empty()); break;
      case Status::done: {
        ASSERT_GT(r.length, 0u);
        ASSERT_LE(r.length, input.size());
        ASSERT_TRUE(r.header.version == 1 || r.header.version == 2);
        if (!r.header.local) {
          ASSERT_TRUE(r.header.source.family() == AF_INET || r.header.source.family() == AF_INET6);
          ASSERT_EQ(r.header.source.family(), r.header.destination.family());
        }
        // The header alone is the same header: nothing after it was looked at.
        const ParseResult alone = parse_bytes(input, r.length);
        ASSERT_EQ(alone.status, Status::done);
        ASSERT_EQ(alone.length, r.length);
        break;
      }
    }
  }
}

}  // namespace
}  // namespace ferry::worker::proxy_protocol
