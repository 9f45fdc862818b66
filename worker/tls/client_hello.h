// The TLS ClientHello as a layer-4 proxy reads it without terminating (nginx's ssl_preread,
// HAProxy's req.ssl_sni): the server name and the ALPN protocols, from the first bytes a client
// sends, which may arrive in pieces and span several TLS records.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ferry::worker::tls {

// The most bytes (records, their headers included) read before a ClientHello must be complete.
inline constexpr std::size_t kMaxClientHello = 16 * 1024;

enum class HelloStatus : std::uint8_t {
  need_more,  // a valid prefix: wait for more bytes
  done,       // the whole ClientHello was read: `hello` is filled in
  not_tls,    // the first bytes are not a TLS handshake record
  malformed,  // a TLS handshake record, but not a well-formed ClientHello
  too_large,  // no complete ClientHello within kMaxClientHello bytes
};

struct ClientHello {
  // The SNI host_name, lowercased, without a trailing dot; empty when the client sent none.
  std::string server_name;
  // The ALPN protocol names in the client's order; empty when it offered none.
  std::vector<std::string> alpn;
};

struct HelloResult {
  HelloStatus status = HelloStatus::need_more;
  ClientHello hello;       // when done
  std::string_view error;  // static text naming what is wrong, when not_tls / malformed / too_large
};

// `data` = every byte received from the client so far (from the first). Decides as early as it
// can: a byte no valid ClientHello could have at that position is not_tls/malformed at once (a
// client that is not TLS must not wait for the timeout); a valid prefix is need_more. Never
// reads past kMaxClientHello bytes; a prefix of kMaxClientHello bytes or more that is not
// complete is too_large. The bytes are only read: the caller forwards them unchanged.
HelloResult parse_client_hello(std::span<const std::byte> data);

}  // namespace ferry::worker::tls
