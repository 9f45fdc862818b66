// `show sessions` / `kill session(s)`: filters, the worker's answer (tab-separated lines in the
// memfd the master passed) and the master's reading of it, which trusts none of it.
#include "worker/proxy/session_listing.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include <fmt/format.h>

#include "event/syscall_util.h"
#include "worker/proxy/session.h"
#include "worker/proxy/session_set.h"

namespace ferry::worker {
namespace {

std::string_view phase_name(Session::Phase p) noexcept {
  switch (p) {
    case Session::Phase::admitting: return "admitting";
    case Session::Phase::reading_header: return "reading_header";
    case Session::Phase::prereading: return "prereading";
    case Session::Phase::handshaking: return "handshaking";
    case Session::Phase::connecting: return "connecting";
    case Session::Phase::relaying: return "relaying";
    case Session::Phase::moving: return "moving";
  }
  return "unknown";
}

template <typename T>
bool parse_number(std::string_view text, T& out) {
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size() && !text.empty();
}

// A field of a tab-separated line: no tab or new line may come from a name.
std::string field(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c == '\t' || c == '\n' || c == '\r') c = ' ';
  }
  return out.empty() ? std::string("-") : out;
}

std::vector<std::string_view> split_on(std::string_view line, char sep) {
  std::vector<std::string_view> parts;
  std::size_t from = 0;
  for (;;) {
    const std::size_t at = line.find(sep, from);
    parts.push_back(line.substr(from, at == std::string_view::npos ? line.npos : at - from));
    if (at == std::string_view::npos) return parts;
    from = at + 1;
  }
}

bool matches(const Session& s, const SessionFilter& f) {
  if (f.serial != 0 && s.serial() != f.serial) return false;
  if (!f.proxy.empty() && s.proxy().name != f.proxy) return false;
  if (!f.server.empty() && (s.upstream_name() != f.upstream || s.server_name() != f.server)) {
    return false;
  }
  return !f.client || f.client->matches(s.client_address());
}

}  // namespace

std::string_view Session::server_name() const noexcept {
  if (peer_ != nullptr) return peer_->name;
  if (aside_ && !aside_->server.empty()) return aside_->server;
  return {};
}

// The PROXY header ferry sent on is not the client's.
std::uint64_t Session::bytes_from_client() const noexcept {
  return up_.total() - std::min<std::uint64_t>(up_.total(), header_out_);
}

std::optional<ClientMatch> ClientMatch::parse(std::string_view text) {
  ClientMatch m;
  std::string_view ip = text;
  std::string_view port;
  if (text.starts_with('[')) {
    const std::size_t close = text.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    ip = text.substr(1, close - 1);
    const std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (!rest.starts_with(':')) return std::nullopt;
      port = rest.substr(1);
      if (port.empty()) return std::nullopt;
    }
  } else if (const std::size_t colon = text.find(':');
             colon != std::string_view::npos &&
             text.find(':', colon + 1) == std::string_view::npos) {
    ip = text.substr(0, colon);  // one colon: IPv4 and a port (IPv6 has two at least)
    port = text.substr(colon + 1);
    if (port.empty()) return std::nullopt;
  }
  if (ip.empty() || ip.size() >= INET6_ADDRSTRLEN) return std::nullopt;
  const std::string ip_text(ip);
  if (::inet_pton(AF_INET, ip_text.c_str(), m.ip) == 1) {
    m.family = AF_INET;
  } else if (ip.find(':') != std::string_view::npos &&
             ::inet_pton(AF_INET6, ip_text.c_str(), m.ip) == 1) {
    m.family = AF_INET6;
    // ::ffff:a.b.c.d is the IPv4 client a dual-stack socket saw.
    static constexpr unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(m.ip, kMapped, sizeof kMapped) == 0) {
      std::memmove(m.ip, m.ip + 12, 4);
      std::memset(m.ip + 4, 0, 12);
      m.family = AF_INET;
    }
  } else {
    return std::nullopt;
  }
  if (!port.empty()) {
    int p = 0;
    if (!parse_number(port, p) || p < 0 || p > 65535) return std::nullopt;
    m.port = p;
  }
  return m;
}

bool ClientMatch::matches(const event::SocketAddress& peer) const noexcept {
  const sockaddr* sa = peer.get();
  const unsigned char* ip_bytes = nullptr;
  int port_number = 0;
  sa_family_t fam = sa->sa_family;
  if (fam == AF_INET && peer.length() >= sizeof(sockaddr_in)) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    ip_bytes = reinterpret_cast<const unsigned char*>(&in->sin_addr);
    port_number = ntohs(in->sin_port);
  } else if (fam == AF_INET6 && peer.length() >= sizeof(sockaddr_in6)) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    ip_bytes = reinterpret_cast<const unsigned char*>(&in6->sin6_addr);
    port_number = ntohs(in6->sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
      ip_bytes += 12;
      fam = AF_INET;
    }
  } else {
    return false;
  }
  if (fam != family || std::memcmp(ip_bytes, ip, fam == AF_INET ? 4 : 16) != 0) return false;
  return !port || *port == port_number;
}

std::variant<SessionFilter, std::string> parse_session_filter(
    std::span<const std::string_view> words, bool serial_allowed) {
  SessionFilter f;
  for (std::size_t i = 0; i < words.size(); ++i) {
    const std::string_view key = words[i];
    if (i + 1 >= words.size()) return fmt::format("\"{}\" needs a value", key);
    const std::string_view value = words[++i];
    if (key == "proxy" && f.proxy.empty()) {
      f.proxy = value;
    } else if (key == "server" && f.server.empty()) {
      const std::size_t slash = value.find('/');
      if (slash == 0 || slash == std::string_view::npos || slash + 1 == value.size()) {
        return fmt::format("\"{}\" is not UPSTREAM/SERVER", value);
      }
      f.upstream = value.substr(0, slash);
      f.server = value.substr(slash + 1);
    } else if (key == "client" && !f.client) {
      f.client = ClientMatch::parse(value);
      if (!f.client) return fmt::format("\"{}\" is not a client address (IP or IP:PORT)", value);
    } else if (key == "session" && serial_allowed && f.serial == 0) {
      if (!parse_number(value, f.serial) || f.serial == 0) {
        return fmt::format("\"{}\" is not a session serial", value);
      }
    } else {
      return fmt::format("unexpected \"{}\" (proxy NAME, server UPSTREAM/SERVER, client ADDRESS)",
                         key);
    }
  }
  return f;
}

std::variant<SessionRequest, std::string> parse_session_request(std::string_view line) {
  std::vector<std::string_view> words;
  for (std::string_view w : split_on(line, ' ')) {
    if (!w.empty()) words.push_back(w);
  }
  if (words.empty()) return std::string("empty request");
  SessionRequest r;
  if (words[0] == "list") {
    r.verb = SessionVerb::list;
  } else if (words[0] == "kill") {
    r.verb = SessionVerb::kill;
  } else {
    return fmt::format("unknown request \"{}\"", words[0]);
  }
  auto parsed = parse_session_filter(std::span(words).subspan(1), true);
  if (auto* why = std::get_if<std::string>(&parsed)) return std::move(*why);
  r.filter = std::get<SessionFilter>(std::move(parsed));
  return r;
}

std::string answer_session_request(SessionSet& sessions, const SessionRequest& request,
                                   event::TimePoint now) {
  std::string out(kAnswerHead);
  if (request.verb == SessionVerb::list) {
    for (const Session* s = sessions.first(); s != nullptr; s = s->next) {
      if (!matches(*s, request.filter)) continue;
      const Peer* p = s->peer();
      const auto age = now > s->started() ? (now - s->started()).count() : 0;
      out += fmt::format("{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n", s->serial(),
                         field(s->proxy().name), field(s->client_address().to_string()),
                         field(s->server_name()), p != nullptr ? p->address.to_string() : "-",
                         phase_name(s->phase()), age, s->bytes_from_client(), s->bytes_to_client());
    }
  } else {
    // An empty filter would kill everything: the master never sends one, and a worker refuses.
    const SessionFilter& f = request.filter;
    std::uint64_t killed = 0;
    if (f.serial != 0 || f.client || !f.proxy.empty() || !f.server.empty()) {
      for (Session* s = sessions.first(); s != nullptr;) {
        Session* next = s->next;  // close() unlinks and frees `s`
        // A session handed to another worker is that worker's to close.
        if (matches(*s, f) && s->phase() != Session::Phase::moving) {
          s->close(EndReason::killed);
          ++killed;
        }
        s = next;
      }
    }
    out += fmt::format("killed\t{}\n", killed);
  }
  out += kAnswerEnd;
  return out;
}

std::optional<std::string> answer_session_file(SessionSet& sessions, bool kill, int fd,
                                               event::TimePoint now) {
  char buf[kMaxRequestLine];
  const ssize_t n = event::retry_eintr([&] { return ::pread(fd, buf, sizeof buf, 0); });
  if (n < 0) return fmt::format("pread() of the request failed: {}", event::last_error().message());
  const std::string_view text(buf, static_cast<std::size_t>(n));
  const std::size_t eol = text.find('\n');
  if (eol == std::string_view::npos) return std::string("the request has no whole line");
  auto parsed = parse_session_request(text.substr(0, eol));
  if (auto* why = std::get_if<std::string>(&parsed)) return "bad request: " + *why;
  const auto& request = std::get<SessionRequest>(parsed);
  if ((request.verb == SessionVerb::kill) != kill) {
    return std::string("the request's verb is not its command's");
  }
  const std::string answer = answer_session_request(sessions, request, now);
  if (::ftruncate(fd, 0) == -1) {
    return fmt::format("ftruncate() of the answer failed: {}", event::last_error().message());
  }
  std::size_t written = 0;
  while (written < answer.size()) {
    const ssize_t w = event::retry_eintr([&] {
      return ::pwrite(fd, answer.data() + written, answer.size() - written,
                      static_cast<off_t>(written));
    });
    if (w <= 0) {
      return fmt::format("pwrite() of the answer failed: {}",
                         w < 0 ? event::last_error().message() : std::string("wrote nothing"));
    }
    written += static_cast<std::size_t>(w);
  }
  return std::nullopt;
}

std::optional<ParsedAnswer> parse_session_answer(std::string_view text) {
  if (!text.starts_with(kAnswerHead) || !text.ends_with(kAnswerEnd)) return std::nullopt;
  text.remove_prefix(kAnswerHead.size());
  text.remove_suffix(kAnswerEnd.size());
  ParsedAnswer a;
  while (!text.empty()) {
    const std::size_t eol = text.find('\n');
    const std::string_view line = text.substr(0, eol);
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    const auto f = split_on(line, '\t');
    if (f.size() == 2 && f[0] == "killed") {
      std::uint64_t n = 0;
      if (parse_number(f[1], n)) {
        a.killed = n;
        continue;
      }
    }
    ListedSession s;
    if (f.size() != 9 || !parse_number(f[0], s.serial) || !parse_number(f[6], s.age_ms) ||
        !parse_number(f[7], s.bytes_from_client) || !parse_number(f[8], s.bytes_to_client)) {
      ++a.skipped;
      continue;
    }
    s.proxy = f[1];
    s.client = f[2];
    s.server = f[3] == "-" ? "" : std::string(f[3]);
    s.server_address = f[4] == "-" ? "" : std::string(f[4]);
    s.phase = f[5];
    a.sessions.push_back(std::move(s));
  }
  return a;
}

}  // namespace ferry::worker
