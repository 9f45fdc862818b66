// SessionRecord: what travels beside a moved session's two sockets from an old worker to a new
// one (reload_sessions = "move"), and the wire form of a batch of them and of the answer.
// Versioned and length-prefixed; the decoder checks every length against what arrived.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "event/socket_address.h"

namespace ferry::worker {

// 2 added the route (upstream, route, sni) at a record's end; version 1 batches still decode.
inline constexpr std::uint8_t kSessionRecordVersion = 2;
// The answers did not change: still version 1, which a worker of an older binary (a binary
// upgrade's old generation, sending version-1 batches here) must be able to read.
inline constexpr std::uint8_t kMoveAnswerVersion = 1;

// One direction of the relay, as it stood when the session was frozen.
struct DirectionRecord {
  // RelayDirection::State's values: 0 open, 1 draining (FIN read, bytes may wait), 2 finished
  // (the FIN passed on).
  std::uint8_t state = 0;
  bool splice_ok = false;
  std::uint64_t total = 0;      // bytes passed on so far
  std::vector<std::byte> held;  // read, not yet written (a splice pipe's contents included)
  bool operator==(const DirectionRecord&) const = default;
};

struct SessionRecord {
  std::uint32_t id = 0;  // the sender's handle, echoed in the answer
  std::string proxy;     // the proxy's name
  event::SocketAddress listen;
  event::SocketAddress client;  // as the session sees it: a PROXY header's address when it came
  std::string server;           // the connected server's name
  event::SocketAddress server_address;
  std::int64_t started_ms = 0;  // CLOCK_MONOTONIC (steady_clock), the same in every process
  std::int64_t wall_start_ns = 0;
  std::int64_t idle_ms = 0;      // since the last activity
  std::uint32_t header_out = 0;  // bytes of a PROXY header ferry sent upstream (already sent)
  std::uint32_t moves = 0;       // how many times it moved before this one
  bool counted = false;          // holds a place in the per-client counts
  std::uint32_t limit_bucket = 0;
  DirectionRecord up;    // client → server
  DirectionRecord down;  // server → client
  // A session routed by its ClientHello: its route's upstream (the server's), the route's name
  // and the server name the client sent; all empty for one of a proxy without routes.
  std::string upstream;
  std::string route;
  std::string sni;
  bool operator==(const SessionRecord&) const = default;
};

// The answer per session: the new worker holds both sockets and armed them (the sender forgets
// the session), or it refused and the sender resumes it.
enum class MoveVerdict : std::uint8_t { adopted = 0, refused = 1 };

struct MoveAnswer {
  std::uint32_t id = 0;
  MoveVerdict verdict = MoveVerdict::refused;
  bool operator==(const MoveAnswer&) const = default;
};

// The fds of session i of a batch are fds[2i] (client) and fds[2i+1] (server).
inline constexpr std::size_t kFdsPerSession = 2;

// Appends `r` to a batch being built in `out` (started by begin_batch).
void begin_batch(std::vector<std::byte>& out);
void append_record(std::vector<std::byte>& out, const SessionRecord& r);
// Whether the decoder would take `r`: names of at most 4096 bytes, addresses IPv4 or IPv6 (or
// none), held bytes within a buffer's 64 MiB. A session that is not stays where it is.
bool encodable(const SessionRecord& r) noexcept;
// The size append_record() adds for `r`.
std::size_t encoded_size(const SessionRecord& r) noexcept;

// Decodes a whole batch; false (with `why`) when anything is out of bounds, of another version
// or of another kind: the receiver then refuses the message as a whole.
bool decode_batch(std::span<const std::byte> in, std::vector<SessionRecord>& out, std::string& why);

void encode_answers(std::span<const MoveAnswer> answers, std::vector<std::byte>& out);
bool decode_answers(std::span<const std::byte> in, std::vector<MoveAnswer>& out, std::string& why);

}  // namespace ferry::worker
