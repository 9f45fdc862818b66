// Routing by the TLS ClientHello (passthrough): the hello is peeked, never taken, so that the
// server gets the client's bytes unchanged; its server name and ALPN choose the route.
#include <sys/socket.h>

#include <string>

#include <spdlog/spdlog.h>

#include "event/syscall_util.h"
#include "worker/proxy/session.h"

namespace ferry::worker {

using event::Connection;

namespace {

EndReason end_reason_of(tls::HelloStatus status) noexcept {
  return status == tls::HelloStatus::not_tls ? EndReason::not_tls : EndReason::bad_client_hello;
}

}  // namespace

// A ClientHello comes in a few segments (16 KiB is a dozen); one dripped in many more would
// have each of them copy and parse everything again.
constexpr std::uint16_t kMaxPrereads = 64;

// Looks at everything the client sent so far (MSG_PEEK into the stack: a client that sends
// nothing holds no buffer) and decides as soon as the parser can.
void Session::preread() {
  Connection& client = *client_;
  std::byte seen[tls::kMaxClientHello];
  std::size_t n = 0;
  if (!peek_client(seen, n)) return;
  const RouteTable& routes = *shared_.routes(proxy_);
  tls::HelloResult h = tls::parse_client_hello({seen, n});
  if (h.status == tls::HelloStatus::need_more && ++aside().prereads > kMaxPrereads) {
    h.status = tls::HelloStatus::malformed;
    h.error = "the ClientHello came in too many pieces";
  }
  if (h.status == tls::HelloStatus::need_more) {
    // The rest would come with the next EPOLLIN edge; after the FIN it never will.
    if (n > 0 && !client.read.pending_eof) {
      client.read.ready = false;
      return;
    }
    h.status = n == 0 ? tls::HelloStatus::not_tls : tls::HelloStatus::malformed;
    h.error = "the client closed before its ClientHello ended";
  }
  // Whatever the client sent stays in its socket for the relay to read, as if never looked at.
  client.read.ready = true;
  if (h.status == tls::HelloStatus::done) {
    route_to(routes.choose(h.hello), h.hello.server_name, EndReason::no_route);
    return;
  }
  if (routes.fallback() == nullptr) {
    if (auto held = shared_.throttles().bad_hello.admit(loop_.now())) {
      spdlog::info(
          "proxy \"{}\": client {} sent no usable ClientHello: {} ({} more since the last "
          "message)",
          proxy_.name, client.peer.to_string(), h.error, *held);
    }
  }
  route_to(routes.fallback(), {}, end_reason_of(h.status));
}

// preread_timeout: a client that speaks first with something else than TLS, or too slowly,
// goes to the default route with what it sent, as HAProxy's inspect-delay does.
void Session::preread_timed_out() {
  client_->read.ready = true;
  route_to(shared_.routes(proxy_)->fallback(), {}, EndReason::preread_timeout);
}

void Session::route_to(const RouteTarget* route, std::string_view sni, EndReason otherwise) {
  Aside& a = aside();
  a.routed = true;
  a.sni = sni;
  if (route == nullptr) {
    close(otherwise);
    return;
  }
  a.route = route->name;
  a.upstream = route->upstream;
  if ((a.route_stats = route->stats) != nullptr) {
    stat_add(a.route_stats->sessions);
    stat_add(a.route_stats->active);
  }
  balancer_ = route->balancer;
  loop_.del_timer(client_->read);
  connect_next();
}

}  // namespace ferry::worker
