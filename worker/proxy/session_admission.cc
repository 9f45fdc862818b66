// Session admission: the access rules, the per-client limit, the trusted PROXY header senders,
// and the PROXY header a client sends (peeked, parsed, taken, its address admitted again).
#include <sys/socket.h>

#include <string>

#include <spdlog/spdlog.h>

#include "event/syscall_util.h"
#include "worker/proxy/session.h"

namespace ferry::worker {

using event::Connection;

// The access rules, and with `count` the per-client limit, for the client's address (the
// one a PROXY header carried, once read); false when the client was refused (closed).
bool Session::admit(bool count) {
  const Connection& client = *client_;
  if (const AccessRules& rules = shared_.rules(proxy_); !rules.empty()) {
    const AccessRules::Decision d = rules.check(client.peer);
    if (!d.allowed) {
      spdlog::debug("proxy \"{}\": client {} denied by rule \"{}\"", proxy_.name,
                    client.peer.to_string(), proxy_.access[d.rule].text);
      close(EndReason::denied);
      return false;
    }
  }
  if (!count) return true;
  switch (shared_.acquire_client(proxy_, client.peer, &limit_bucket_)) {
    case SessionShared::ClientPlace::held: counted_ = true; return true;
    case SessionShared::ClientPlace::not_counted: return true;
    case SessionShared::ClientPlace::limit:
      spdlog::debug("proxy \"{}\": client {} has {} sessions already", proxy_.name,
                    client.peer.to_string(), proxy_.max_conns_per_client);
      close(EndReason::limit);
      return false;
    case SessionShared::ClientPlace::table_full:
      if (auto held = shared_.throttles().table_full.admit(loop_.now())) {
        spdlog::warn(
            "proxy \"{}\": the per-client table is full, client {} not counted ({} "
            "more since the last message)",
            proxy_.name, client.peer.to_string(), *held);
      }
      return true;
  }
  return true;
}

// accept_proxy_protocol_from: a sender not listed may not speak for anyone; refused before
// it sends a byte rather than at the header it has to send (false: closed).
bool Session::trusted_sender() {
  const AccessRules& senders = shared_.senders(proxy_);
  if (senders.empty() || senders.check(client_->peer).rule >= 0) return true;
  if (auto held = shared_.throttles().untrusted.admit(loop_.now())) {
    spdlog::warn(
        "proxy \"{}\": {} is not in accept_proxy_protocol_from, refused ({} more since the "
        "last message)",
        proxy_.name, client_->peer.to_string(), *held);
  }
  close(EndReason::untrusted_proxy);
  return false;
}

// accept_proxy_protocol: looks at what the client sent so far without taking it (MSG_PEEK
// into the stack, so a client that sends nothing holds no buffer), and takes exactly the
// header once it parses: the bytes after it stay in the socket for the relay.
void Session::read_header() {
  Connection& client = *client_;
  // One byte more than the longest header: a peek that fills it proves bytes after the header
  // (a peek of exactly the header's length would not tell, and under edge-triggered epoll
  // bytes already queued bring no new report).
  std::byte seen[proxy_protocol::kV2MaxLength + 1];
  std::size_t n = 0;
  if (!peek_client(seen, n)) return;
  if (n == 0) {
    bad_header("the client closed before the header ended");
    return;
  }
  const proxy_protocol::ParseResult h = proxy_protocol::parse({seen, n});
  if (h.status == proxy_protocol::Status::error) {
    bad_header(h.error);
    return;
  }
  if (h.status == proxy_protocol::Status::need_more) {
    // The rest would come with the next EPOLLIN edge; after the FIN it never will.
    if (client.read.pending_eof) {
      bad_header("the client closed before the header ended");
      return;
    }
    client.read.ready = false;
    return;
  }
  const ssize_t taken =
      event::retry_eintr([&] { return ::recv(client.fd.get(), seen, h.length, 0); });
  if (taken != static_cast<ssize_t>(h.length)) {  // peeked bytes are there: not expected
    spdlog::error("recv() of a {}-byte PROXY header returned {}: {}", h.length, taken,
                  taken == -1 ? event::last_error().message() : std::string("short"));
    close(EndReason::client_reset);
    return;
  }
  // Whatever followed the header (or the FIN) is for the relay to read. Bytes that arrive
  // after the peek bring a report of their own.
  client.read.ready = n > h.length || client.read.pending_eof;
  header_done(h);
}

bool Session::peek_client(std::span<std::byte> into, std::size_t& n) {
  Connection& client = *client_;
  const ssize_t got = event::retry_eintr(
      [&] { return ::recv(client.fd.get(), into.data(), into.size(), MSG_PEEK); });
  if (got == -1) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      client.read.ready = false;
      return false;
    }
    reset(&client, errno);
    return false;
  }
  n = static_cast<std::size_t>(got);
  return true;
}

void Session::bad_header(std::string_view why) {
  if (auto held = shared_.throttles().bad_header.admit(loop_.now())) {
    spdlog::warn(
        "proxy \"{}\": bad PROXY protocol header from {}: {} ({} more since the "
        "last message)",
        proxy_.name, client_->peer.to_string(), why, *held);
  }
  close(EndReason::bad_proxy_protocol);
}

// The header is in: the address it carries (unless LOCAL) is the client's from now on, and
// is admitted as a client's address is without a header.
void Session::header_done(const proxy_protocol::ParseResult& h) {
  loop_.del_timer(client_->read);
  phase_ = Phase::admitting;
  if (!h.header.local) {
    client_->peer = h.header.source;
    if (proxy_.send_proxy_protocol != conf::ProxyProtocol::off) {
      aside().header_destination = h.header.destination;
    }
  }
  if (!admit(true)) return;
  admitted();
}

}  // namespace ferry::worker
