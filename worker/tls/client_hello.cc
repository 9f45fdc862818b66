// The TLS ClientHello parser: reassembles the handshake message from its records and reads the
// server name and ALPN protocols out of it, deciding on a prefix as early as the bytes allow.
#include "worker/tls/client_hello.h"

#include <algorithm>
#include <bitset>
#include <cstdint>
#include <vector>

namespace ferry::worker::tls {
namespace {

constexpr std::uint8_t kHandshakeRecord = 22;
constexpr std::uint8_t kClientHelloType = 1;
constexpr std::size_t kRecordHeader = 5;
constexpr std::size_t kHandshakeHeader = 4;
constexpr std::size_t kMaxRecord = 16384;
constexpr std::uint16_t kServerName = 0;
constexpr std::uint16_t kAlpn = 16;

HelloResult failed(HelloStatus status, std::string_view error) {
  HelloResult r;
  r.status = status;
  r.error = error;
  return r;
}

bool host_char(std::uint8_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_';
}

// The ClientHello body as far as it has arrived. Every read is checked first against the end its
// enclosing length declares (past it is malformed, whether or not the bytes are here yet) and
// only then against what has arrived, so that a prefix is turned down as soon as it contradicts
// itself and a valid prefix stops without a verdict.
class Body {
 public:
  Body(const std::uint8_t* p, std::size_t avail, std::size_t end)
      : p_(p), avail_(avail), end_(end) {}

  HelloStatus parse(ClientHello& hello) {
    if (!read(hello)) return status_;
    // The last reads may have skipped over bytes not here yet.
    return avail_ < end_ ? HelloStatus::need_more : HelloStatus::done;
  }

  std::string_view error() const { return error_; }

 private:
  bool read(ClientHello& hello) {
    std::size_t n = 0, vend = 0;
    if (!has(2 + 32, end_, "ClientHello too short")) return false;
    pos_ += 2 + 32;  // legacy_version and random: nothing to check
    if (!vec(1, end_, 0, 32, "bad session_id", vend)) return false;
    pos_ = vend;
    if (!vec(2, end_, 2, 0xfffe, "bad cipher_suites", vend)) return false;
    if ((vend - pos_) % 2 != 0) return bad("bad cipher_suites");
    pos_ = vend;
    if (!vec(1, end_, 1, 255, "bad compression_methods", vend)) return false;
    pos_ = vend;
    // A body that ends after the compression methods has no extensions (TLS 1.2 allows it).
    if (pos_ < end_) {
      if (!number(2, end_, "bad extensions length", n)) return false;
      if (n != end_ - pos_) return bad("bad extensions length");
      // Each type once (RFC 8446, 4.2); 8 KiB of bits beats a search on a hello of 4,000 of them.
      std::bitset<65536> seen;
      while (pos_ < end_) {
        std::size_t type = 0;
        if (!number(2, end_, "bad extension length", type)) return false;
        if (!vec(2, end_, 0, 0xffff, "bad extension length", vend)) return false;
        if (seen.test(type)) return bad("duplicate extension");
        seen.set(type);
        if (type == kServerName && !server_name(vend, hello.server_name)) return false;
        if (type == kAlpn && !alpn(vend, hello.alpn)) return false;
        pos_ = vend;
      }
    }
    return true;
  }

  bool bad(std::string_view what) {
    status_ = HelloStatus::malformed;
    error_ = what;
    return false;
  }

  bool has(std::size_t n, std::size_t end, std::string_view what) {
    if (n > end - pos_) return bad(what);
    if (n > avail_ || pos_ > avail_ - n) {
      status_ = HelloStatus::need_more;
      return false;
    }
    return true;
  }

  bool number(std::size_t width, std::size_t end, std::string_view what, std::size_t& out) {
    if (!has(width, end, what)) return false;
    out = 0;
    for (std::size_t i = 0; i < width; ++i) out = out << 8 | p_[pos_++];
    return true;
  }

  // A vector with a `width`-byte length in [min, max]; leaves pos_ at its first byte.
  bool vec(std::size_t width, std::size_t end, std::size_t min, std::size_t max,
           std::string_view what, std::size_t& vend) {
    std::size_t n = 0;
    if (!number(width, end, what, n)) return false;
    if (n < min || n > max || n > end - pos_) return bad(what);
    vend = pos_ + n;
    return true;
  }

  // RFC 6066, 3: a server_name_list that fills the extension, at most one host_name in it.
  bool server_name(std::size_t end, std::string& out) {
    constexpr std::string_view kBad = "bad server_name extension";
    std::size_t list_end = 0, type = 0, name_end = 0;
    if (!vec(2, end, 1, 0xffff, kBad, list_end)) return false;
    if (list_end != end) return bad(kBad);
    bool found = false;
    while (pos_ < list_end) {
      if (!number(1, list_end, kBad, type)) return false;
      if (!vec(2, list_end, type == 0 ? 1 : 0, type == 0 ? 255 : 0xffff, kBad, name_end)) {
        return false;
      }
      if (type == 0) {
        if (found) return bad(kBad);
        found = true;
        // The characters that have arrived are checked now: a name with a bad one is refused
        // without waiting for the rest.
        const std::size_t here = std::min(name_end, std::max(avail_, pos_));
        for (std::size_t i = pos_; i < here; ++i) {
          if (!host_char(p_[i])) return bad(kBad);
        }
        if (!has(name_end - pos_, list_end, kBad)) return false;
        out.assign(reinterpret_cast<const char*>(p_ + pos_), name_end - pos_);
        for (char& c : out) {
          if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        }
        if (out.back() == '.') out.pop_back();
        if (out.empty()) return bad(kBad);  // "." names no host
      }
      pos_ = name_end;
    }
    return true;
  }

  // RFC 7301, 3.1: a non-empty protocol_name_list that fills the extension.
  bool alpn(std::size_t end, std::vector<std::string>& out) {
    constexpr std::string_view kBad = "bad ALPN extension";
    std::size_t list_end = 0, name_end = 0;
    if (!vec(2, end, 2, 0xffff, kBad, list_end)) return false;
    if (list_end != end) return bad(kBad);
    while (pos_ < list_end) {
      if (!vec(1, list_end, 1, 255, kBad, name_end)) return false;
      if (!has(name_end - pos_, list_end, kBad)) return false;
      out.emplace_back(reinterpret_cast<const char*>(p_ + pos_), name_end - pos_);
      pos_ = name_end;
    }
    return true;
  }

  const std::uint8_t* p_;
  std::size_t avail_;  // bytes of the body received so far
  std::size_t end_;    // the body's length, from the handshake header
  std::size_t pos_ = 0;
  HelloStatus status_ = HelloStatus::need_more;
  std::string_view error_;
};

}  // namespace

HelloResult parse_client_hello(std::span<const std::byte> data) {
  const std::size_t size = std::min(data.size(), kMaxClientHello);
  const auto* in = reinterpret_cast<const std::uint8_t*>(data.data());
  // The handshake message may span records (RFC 8446, 5.1): its bytes are gathered first.
  std::vector<std::uint8_t> hs;
  std::size_t at = 0, length = 0;
  bool complete = false;
  HelloResult record_error;  // need_more while the records are fine
  while (at < size && !complete) {
    const std::uint8_t* h = in + at;
    const std::size_t got = std::min(kRecordHeader, size - at);
    // Byte by byte, so that a client speaking something else is told at its first byte.
    if (h[0] != kHandshakeRecord || (got >= 2 && h[1] != 3)) {
      if (at == 0) return failed(HelloStatus::not_tls, "not a TLS handshake record");
      record_error =
          failed(HelloStatus::malformed, "not a handshake record before the hello's end");
      break;
    }
    if (got >= 3 && h[2] > 4) {
      record_error = failed(HelloStatus::malformed, "bad record version");
      break;
    }
    if (got < kRecordHeader) break;
    const std::size_t n = std::size_t{h[3]} << 8 | h[4];
    if (n == 0 || n > kMaxRecord) {
      record_error = failed(HelloStatus::malformed,
                            n == 0 ? "empty handshake record" : "record length over 16384");
      break;
    }
    at += kRecordHeader;
    const std::size_t take = std::min(n, size - at);
    hs.insert(hs.end(), in + at, in + at + take);
    at += take;
    if (!hs.empty() && hs[0] != kClientHelloType) {
      return failed(HelloStatus::malformed, "handshake is not a ClientHello");
    }
    if (hs.size() >= kHandshakeHeader) {
      length = std::size_t{hs[1]} << 16 | std::size_t{hs[2]} << 8 | hs[3];
      // Even in one record, it could not end within kMaxClientHello: no use waiting for it.
      if (kRecordHeader + kHandshakeHeader + length > kMaxClientHello) {
        return failed(HelloStatus::too_large, "ClientHello over 16 KiB");
      }
      complete = hs.size() >= kHandshakeHeader + length;
    }
    if (take < n) break;
  }

  HelloResult r;
  if (hs.size() >= kHandshakeHeader) {
    Body body(hs.data() + kHandshakeHeader, std::min(hs.size() - kHandshakeHeader, length), length);
    r.status = body.parse(r.hello);
    r.error = body.error();
  }
  // A record that went wrong comes after the body bytes here: an error in those is the first.
  if (r.status == HelloStatus::need_more && record_error.status != HelloStatus::need_more) {
    return record_error;
  }
  if (r.status == HelloStatus::need_more && data.size() >= kMaxClientHello) {
    return failed(HelloStatus::too_large, "no complete ClientHello in 16 KiB");
  }
  if (r.status != HelloStatus::done) r.hello = {};
  return r;
}

}  // namespace ferry::worker::tls
