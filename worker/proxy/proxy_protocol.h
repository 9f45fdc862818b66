// The HAProxy PROXY protocol (haproxy doc/proxy-protocol.txt): parsing the v1 text or v2 binary
// header a load balancer puts before the client's bytes, and encoding one for an upstream.
#pragma once

#include <cstddef>
#include <span>
#include <string_view>

#include "conf/config.h"
#include "event/socket_address.h"

namespace ferry::worker::proxy_protocol {

inline constexpr std::size_t kV1MaxLength = 107;        // including CRLF
inline constexpr std::size_t kV2MaxLength = 16 + 2048;  // 16-byte fixed part + declared length
inline constexpr std::size_t kMaxEncoded = 108;  // room enough for any header encode() writes

enum class Status { need_more, done, error };

struct Header {
  int version = 0;  // 1 or 2
  // v2 LOCAL, v1 UNKNOWN, or v2 UNSPEC / AF_UNIX: the sender has no inet addresses to give
  // (a health check, a unix socket), so the connection's own addresses stand.
  bool local = false;
  event::SocketAddress source;       // set when !local
  event::SocketAddress destination;  // set when !local
};

struct ParseResult {
  Status status = Status::need_more;
  std::size_t length = 0;  // header bytes to drop when done (bytes after it are the client's data)
  Header header;
  std::string_view error;  // static text naming what is wrong, when error ("v1: bad source port")
};

// `data` = every byte received from the client so far (from the first). Decides as early as it
// can: a byte that no valid header could have at that position is an error at once (garbage must
// not wait for the timeout); a valid prefix is need_more. Never looks past kV1MaxLength bytes for
// v1 nor kV2MaxLength for v2, so the caller's buffer needs no more room than that.
ParseResult parse(std::span<const std::byte> data) noexcept;

// Writes a header for a session from `source` (the client) to `destination` (the address it
// connected to) into `out`; returns the bytes written: 0 when `version` is off or `out` is
// smaller than kMaxEncoded. A v4-mapped IPv6 address is sent as IPv4; mixed families are sent
// as IPv6 (the IPv4 side v4-mapped); a non-inet family is sent as v1 UNKNOWN / v2 UNSPEC.
std::size_t encode(conf::ProxyProtocol version, const event::SocketAddress& source,
                   const event::SocketAddress& destination, std::span<std::byte> out) noexcept;

}  // namespace ferry::worker::proxy_protocol
