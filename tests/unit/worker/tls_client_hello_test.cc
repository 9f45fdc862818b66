// Tests of worker/tls/client_hello: ClientHellos written by OpenSSL's client in memory (TLS 1.3
// and 1.2), every prefix and re-framings of them across records, and hellos edited to be wrong.
#include "worker/tls/client_hello.h"

#include <openssl/bio.h>
#include <openssl/ssl.h>

#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

namespace ferry::worker::tls {
namespace {

using Bytes = std::vector<std::uint8_t>;

// What SSL_connect writes first into a memory BIO: the ClientHello, in one record.
Bytes openssl_hello(const char* server_name, const std::vector<std::string>& alpn,
                    int max_version = 0) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  EXPECT_NE(ctx, nullptr);
  if (max_version != 0) {
    EXPECT_EQ(SSL_CTX_set_max_proto_version(ctx, max_version), 1);
  }
  SSL* ssl = SSL_new(ctx);
  SSL_set_bio(ssl, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
  if (server_name != nullptr) {
    EXPECT_EQ(SSL_set_tlsext_host_name(ssl, server_name), 1);
  }
  Bytes wire;
  for (const std::string& name : alpn) {
    wire.push_back(static_cast<std::uint8_t>(name.size()));
    wire.insert(wire.end(), name.begin(), name.end());
  }
  if (!wire.empty()) {
    EXPECT_EQ(SSL_set_alpn_protos(ssl, wire.data(), wire.size()), 0);
  }
  EXPECT_EQ(SSL_connect(ssl), -1);  // waits for the server's answer
  Bytes out(64 * 1024);
  const int n = BIO_read(SSL_get_wbio(ssl), out.data(), static_cast<int>(out.size()));
  EXPECT_GT(n, 0);
  out.resize(n > 0 ? n : 0);
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  return out;
}

HelloResult parse(const Bytes& b, std::size_t size) {
  return parse_client_hello(std::as_bytes(std::span(b.data(), size)));
}
HelloResult parse(const Bytes& b) { return parse(b, b.size()); }

Bytes u16(std::size_t n) {
  return {static_cast<std::uint8_t>(n >> 8), static_cast<std::uint8_t>(n)};
}

Bytes operator+(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// A handshake message (header included) in one handshake record.
Bytes record(const Bytes& message) { return Bytes{22, 3, 1} + u16(message.size()) + message; }

// A ClientHello body as fields, to write back with one of them changed.
struct Fields {
  Bytes head;  // legacy_version, random
  Bytes session_id, cipher_suites, compression;
  std::vector<std::pair<std::uint16_t, Bytes>> extensions;

  Bytes body() const {
    Bytes exts;
    for (const auto& [type, data] : extensions) exts = exts + u16(type) + u16(data.size()) + data;
    return head + Bytes{static_cast<std::uint8_t>(session_id.size())} + session_id +
           u16(cipher_suites.size()) + cipher_suites +
           Bytes{static_cast<std::uint8_t>(compression.size())} + compression + u16(exts.size()) +
           exts;
  }
  Bytes message() const {
    const Bytes b = body();
    return Bytes{1, 0} + u16(b.size()) + b;
  }
  Bytes hello() const { return record(message()); }
};

// Trusts its input: one of OpenSSL's hellos.
Fields fields(const Bytes& hello) {
  Fields f;
  std::size_t at = 9;
  const auto take = [&](std::size_t n) {
    Bytes b(hello.begin() + at, hello.begin() + at + n);
    at += n;
    return b;
  };
  const auto len = [&](std::size_t width) {
    std::size_t n = 0;
    for (const std::uint8_t byte : take(width)) n = n << 8 | byte;
    return n;
  };
  f.head = take(34);
  f.session_id = take(len(1));
  f.cipher_suites = take(len(2));
  f.compression = take(len(1));
  const std::size_t end = at + len(2);
  while (at < end) {
    const auto type = static_cast<std::uint16_t>(len(2));
    f.extensions.emplace_back(type, take(len(2)));
  }
  return f;
}

Bytes sni(std::string_view name) {
  const Bytes entry = Bytes{0} + u16(name.size()) + Bytes(name.begin(), name.end());
  return u16(entry.size()) + entry;
}

void set_extension(Fields& f, std::uint16_t type, const Bytes& data) {
  for (auto& [t, d] : f.extensions) {
    if (t == type) {
      d = data;
      return;
    }
  }
  f.extensions.emplace_back(type, data);
}

// Every prefix waits or gives `status`, and once given it stays: the parser decides early and
// does not change its mind.
void expect_decided(const Bytes& b, HelloStatus status) {
  bool decided = false;
  for (std::size_t k = 0; k <= b.size(); ++k) {
    const HelloResult r = parse(b, k);
    if (decided || r.status != HelloStatus::need_more) {
      ASSERT_EQ(r.status, status) << "prefix " << k;
      EXPECT_FALSE(r.error.empty());
      decided = true;
    }
  }
  EXPECT_TRUE(decided);
}

const std::vector<std::string> kAlpn = {"h2", "http/1.1"};

TEST(RealHello, Tls13ServerNameAndAlpn) {
  const HelloResult r = parse(openssl_hello("www.example.com", kAlpn));
  ASSERT_EQ(r.status, HelloStatus::done) << r.error;
  EXPECT_EQ(r.hello.server_name, "www.example.com");
  EXPECT_EQ(r.hello.alpn, kAlpn);
}

TEST(RealHello, Tls12ServerNameAndAlpn) {
  const HelloResult r = parse(openssl_hello("api.example.org", {"http/1.1"}, TLS1_2_VERSION));
  ASSERT_EQ(r.status, HelloStatus::done) << r.error;
  EXPECT_EQ(r.hello.server_name, "api.example.org");
  EXPECT_EQ(r.hello.alpn, std::vector<std::string>{"http/1.1"});
}

TEST(RealHello, NoServerNameNoAlpn) {
  const HelloResult r = parse(openssl_hello(nullptr, {}));
  ASSERT_EQ(r.status, HelloStatus::done) << r.error;
  EXPECT_EQ(r.hello.server_name, "");
  EXPECT_TRUE(r.hello.alpn.empty());
}

TEST(RealHello, UppercaseIsLowered) {
  const HelloResult r = parse(openssl_hello("WWW.Example-1.COM", {}));
  ASSERT_EQ(r.status, HelloStatus::done) << r.error;
  EXPECT_EQ(r.hello.server_name, "www.example-1.com");
}

TEST(RealHello, TrailingDotDropped) {
  const HelloResult r = parse(openssl_hello("example.com.", {}));
  ASSERT_EQ(r.status, HelloStatus::done) << r.error;
  EXPECT_EQ(r.hello.server_name, "example.com");
}

TEST(RealHello, TrailingBytesIgnored) {
  const Bytes hello = openssl_hello("example.com", kAlpn);
  const HelloResult r = parse(hello + Bytes{23, 3, 3, 0, 2, 'h', 'i', 0xff});
  ASSERT_EQ(r.status, HelloStatus::done) << r.error;
  EXPECT_EQ(r.hello.server_name, "example.com");
}

TEST(Prefixes, EveryPrefixNeedsMore) {
  for (const Bytes& hello :
       {openssl_hello("example.com", kAlpn), openssl_hello("example.com", kAlpn, TLS1_2_VERSION)}) {
    for (std::size_t k = 0; k < hello.size(); ++k) {
      const HelloResult r = parse(hello, k);
      ASSERT_EQ(r.status, HelloStatus::need_more) << "prefix " << k << ": " << r.error;
      EXPECT_TRUE(r.hello.server_name.empty());
    }
    EXPECT_EQ(parse(hello).status, HelloStatus::done);
  }
}

TEST(Records, SplitIntoThree) {
  const Bytes hello = openssl_hello("split.example.com", kAlpn);
  const Bytes message(hello.begin() + 5, hello.end());
  std::mt19937 random(22);
  for (int round = 0; round < 50; ++round) {
    std::uniform_int_distribution<std::size_t> cut(1, message.size() - 1);
    std::size_t a = cut(random), b = cut(random);
    if (a > b) std::swap(a, b);
    if (a == b) continue;
    const Bytes framed = record(Bytes(message.begin(), message.begin() + a)) +
                         record(Bytes(message.begin() + a, message.begin() + b)) +
                         record(Bytes(message.begin() + b, message.end()));
    for (std::size_t k = 0; k < framed.size(); ++k) {
      ASSERT_EQ(parse(framed, k).status, HelloStatus::need_more) << a << " " << b << " " << k;
    }
    const HelloResult r = parse(framed);
    ASSERT_EQ(r.status, HelloStatus::done) << r.error;
    EXPECT_EQ(r.hello.server_name, "split.example.com");
    EXPECT_EQ(r.hello.alpn, kAlpn);
  }
}

TEST(Records, OtherRecordBeforeTheEnd) {
  const Bytes hello = openssl_hello("example.com", {});
  const Bytes message(hello.begin() + 5, hello.end());
  const Bytes first = record(Bytes(message.begin(), message.begin() + 50));
  expect_decided(first + Bytes{21, 3, 3, 0, 2, 2, 40}, HelloStatus::malformed);  // an alert
}

TEST(Records, BadRecordHeaders) {
  expect_decided({22, 3, 5, 0, 1, 1}, HelloStatus::malformed);  // version 3.5
  expect_decided({22, 3, 1, 0, 0}, HelloStatus::malformed);     // empty
  expect_decided({22, 3, 1, 0x40, 0x01}, HelloStatus::malformed);
  EXPECT_EQ(parse({22, 3, 1, 0x40, 0x01}).error, "record length over 16384");
}

TEST(NotTls, HttpAtFirstByte) {
  const std::string get = "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
  const Bytes b(get.begin(), get.end());
  const HelloResult r = parse(b, 1);
  EXPECT_EQ(r.status, HelloStatus::not_tls);
  EXPECT_EQ(r.error, "not a TLS handshake record");
  expect_decided(b, HelloStatus::not_tls);
}

TEST(NotTls, SslV2Hello) {
  // An SSLv2-compatible CLIENT-HELLO: two-byte header with the high bit set, then type 1.
  expect_decided({0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15}, HelloStatus::not_tls);
}

TEST(NotTls, OtherMajorVersion) { expect_decided({22, 2, 0, 0, 1, 1}, HelloStatus::not_tls); }

TEST(Malformed, GarbageAfterRecordHeader) {
  expect_decided({22, 3, 1, 0, 200, 'x', 'y', 'z'}, HelloStatus::malformed);
}

TEST(Malformed, HandshakeTypeServerHello) {
  Bytes hello = openssl_hello("example.com", {});
  hello[5] = 2;
  const HelloResult r = parse(hello, 6);
  EXPECT_EQ(r.status, HelloStatus::malformed);
  EXPECT_EQ(r.error, "handshake is not a ClientHello");
}

TEST(Malformed, SessionId33) {
  Fields f = fields(openssl_hello("example.com", {}));
  f.session_id.assign(33, 7);
  expect_decided(f.hello(), HelloStatus::malformed);
}

TEST(Malformed, OddCipherSuitesLength) {
  Fields f = fields(openssl_hello("example.com", {}));
  f.cipher_suites.push_back(0);
  expect_decided(f.hello(), HelloStatus::malformed);
}

TEST(Malformed, NoCompressionMethods) {
  Fields f = fields(openssl_hello("example.com", {}));
  f.compression.clear();
  expect_decided(f.hello(), HelloStatus::malformed);
}

TEST(Malformed, ExtensionPastTheEnd) {
  const Fields f = fields(openssl_hello("example.com", {}));
  Bytes message = f.message();
  const std::size_t last = f.extensions.back().second.size();
  const Bytes longer = u16(last + 1);
  message[message.size() - last - 2] = longer[0];
  message[message.size() - last - 1] = longer[1];
  expect_decided(record(message), HelloStatus::malformed);
}

TEST(Malformed, ExtensionsShorterThanBody) {
  const Fields f = fields(openssl_hello("example.com", {}));
  Bytes message = f.message() + Bytes{0};  // one byte past the extensions
  message[3] = static_cast<std::uint8_t>(message[3] + 1);
  if (message[3] == 0) ++message[2];
  expect_decided(record(message), HelloStatus::malformed);
}

TEST(Malformed, DuplicateServerName) {
  Fields f = fields(openssl_hello("example.com", {}));
  f.extensions.emplace_back(0, sni("other.example.com"));
  expect_decided(f.hello(), HelloStatus::malformed);
  EXPECT_EQ(parse(f.hello()).error, "duplicate extension");
}

TEST(Malformed, BadHostNameCharacter) {
  for (const std::string_view name : {"exa mple.com", "example.com/", "ex\xc3\xa9.com", ".", ""}) {
    Fields f = fields(openssl_hello("example.com", {}));
    set_extension(f, 0, sni(name));
    expect_decided(f.hello(), HelloStatus::malformed);
    EXPECT_EQ(parse(f.hello()).error, "bad server_name extension") << name;
  }
}

TEST(Malformed, BadCharacterDecidedBeforeTheEnd) {
  Fields f = fields(openssl_hello("example.com", kAlpn));
  set_extension(f, 0, sni("a*b.example.com"));
  const Bytes hello = f.hello();
  std::size_t first = 0;
  while (parse(hello, first).status == HelloStatus::need_more) ++first;
  EXPECT_LT(first, hello.size());
}

TEST(Malformed, AlpnEmptyName) {
  Fields f = fields(openssl_hello("example.com", kAlpn));
  set_extension(f, 16, u16(4) + Bytes{2, 'h', '2', 0});
  expect_decided(f.hello(), HelloStatus::malformed);
  EXPECT_EQ(parse(f.hello()).error, "bad ALPN extension");
}

TEST(Malformed, AlpnEmptyList) {
  Fields f = fields(openssl_hello("example.com", kAlpn));
  set_extension(f, 16, u16(0));
  expect_decided(f.hello(), HelloStatus::malformed);
}

TEST(Alpn, AnyBytesInNames) {
  Fields f = fields(openssl_hello("example.com", kAlpn));
  set_extension(f, 16, u16(5) + Bytes{1, 0, 2, 0xff, ' '});
  const HelloResult r = parse(f.hello());
  ASSERT_EQ(r.status, HelloStatus::done) << r.error;
  EXPECT_EQ(r.hello.alpn, (std::vector<std::string>{std::string(1, '\0'), "\xff "}));
}

TEST(TooLarge, DeclaredLengthAtOnce) {
  const Bytes start = {22, 3, 1, 0x40, 0x00, 1, 0, 0x50, 0x00};  // a 20,480-byte hello
  const HelloResult r = parse(start);
  EXPECT_EQ(r.status, HelloStatus::too_large);
  EXPECT_EQ(parse(start, 8).status, HelloStatus::need_more);
}

TEST(TooLarge, SmallRecordsPastTheLimit) {
  // A valid 16,000-byte hello (padding extension, RFC 7685) that would fit in one record, sent
  // in 100-byte records: their headers push its end past kMaxClientHello.
  Fields f = fields(openssl_hello("example.com", kAlpn));
  const std::size_t body = f.body().size();
  set_extension(f, 21, Bytes(16000 - 4 - 4 - body, 0));
  const Bytes message = f.message();
  ASSERT_EQ(message.size(), 16000u);
  ASSERT_EQ(parse(record(message)).status, HelloStatus::done);
  Bytes stream;
  for (std::size_t at = 0; at < message.size(); at += 100) {
    stream = stream + record(Bytes(message.begin() + at, message.begin() + at + 100));
  }
  ASSERT_GT(stream.size(), kMaxClientHello);
  for (std::size_t k = 0; k < kMaxClientHello; k += 97) {
    ASSERT_EQ(parse(stream, k).status, HelloStatus::need_more) << k;
  }
  EXPECT_EQ(parse(stream, kMaxClientHello - 1).status, HelloStatus::need_more);
  EXPECT_EQ(parse(stream, kMaxClientHello).status, HelloStatus::too_large);
  EXPECT_EQ(parse(stream).status, HelloStatus::too_large);
}

}  // namespace
}  // namespace ferry::worker::tls
