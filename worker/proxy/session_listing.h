// `ferry ctl show sessions` and `kill session(s)`: the filter both share, the request line the
// master writes into a worker's memfd, the worker's answer and the master's defensive reading of
// it.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "event/clock.h"
#include "event/socket_address.h"

namespace ferry::worker {

class SessionSet;

// A client as the operator names it: an IP, with or without a port.
struct ClientMatch {
  sa_family_t family = AF_UNSPEC;
  unsigned char ip[16] = {};  // 4 bytes for AF_INET
  std::optional<int> port;
  // "127.0.0.2", "127.0.0.2:5555", "::1", "[::1]", "[::1]:5555". Nothing when it is none.
  static std::optional<ClientMatch> parse(std::string_view text);
  // An IPv4-mapped IPv6 peer (a dual-stack listener) matches its IPv4 address.
  [[nodiscard]] bool matches(const event::SocketAddress& peer) const noexcept;
};

// Which sessions a request is about; every field set must match (AND).
struct SessionFilter {
  std::string proxy;
  std::string upstream;  // with `server`: "server UPSTREAM/SERVER"
  std::string server;
  std::optional<ClientMatch> client;
  std::uint64_t serial = 0;  // "session SERIAL" (kill only); 0: any
};

enum class SessionVerb : std::uint8_t { list, kill };

// A request as the worker reads it from its memfd: "list|kill WORD..." on one line.
struct SessionRequest {
  SessionVerb verb = SessionVerb::list;
  SessionFilter filter;
};

// Parses filter words ("proxy NAME", "server U/S", "client ADDRESS", "session SERIAL" when
// `serial_allowed`); the error says which word is wrong.
std::variant<SessionFilter, std::string> parse_session_filter(
    std::span<const std::string_view> words, bool serial_allowed);

// The request line "list ..." / "kill ..." (no '\n'), as the master writes it.
std::variant<SessionRequest, std::string> parse_session_request(std::string_view line);

// The worker's answer to `request`: "sessions\n", a line per listed session (or "killed N"),
// then "end\n" (its last line, so that the master can tell a whole answer from one half
// written). Kills close the sessions (EndReason::killed).
std::string answer_session_request(SessionSet& sessions, const SessionRequest& request,
                                   event::TimePoint now);

// The worker's side: reads the request line at the start of the memfd `fd`, checks that it is
// a kill exactly when `kill`, answers and puts the answer in its place. The error (logged by the
// caller) when it could not: the master then counts this worker as silent.
[[nodiscard]] std::optional<std::string> answer_session_file(SessionSet& sessions, bool kill,
                                                             int fd, event::TimePoint now);

// The longest request line a worker reads (filters are a few short words).
constexpr std::size_t kMaxRequestLine = 4096;
constexpr std::string_view kAnswerHead = "sessions\n";
constexpr std::string_view kAnswerEnd = "end\n";

// One session as a worker listed it; `age_ms` on the worker's clock.
struct ListedSession {
  std::uint64_t serial = 0;
  std::string proxy;
  std::string client;
  std::string server;          // "" when none was picked yet
  std::string server_address;  // "" likewise
  std::string phase;
  std::uint64_t age_ms = 0;
  std::uint64_t bytes_from_client = 0;
  std::uint64_t bytes_to_client = 0;
};

// What the master makes of a worker's answer (untrusted text): a line that is not a session is
// skipped (counted in `skipped`); nothing when the answer is not whole yet.
struct ParsedAnswer {
  std::vector<ListedSession> sessions;
  std::optional<std::uint64_t> killed;
  std::size_t skipped = 0;
};
std::optional<ParsedAnswer> parse_session_answer(std::string_view text);

}  // namespace ferry::worker
