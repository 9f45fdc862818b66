// Session: one client's proxied connection, from accept to its access-log line. Its phase is
// named; the FIN state is per direction (RelayDirection). The members are defined in
// session.cc (lifecycle, relay), session_admission.cc and upstream_connect.cc.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "conf/config.h"
#include "event/connection.h"
#include "event/event_loop.h"
#include "event/socket_address.h"
#include "worker/proxy/access_log.h"
#include "worker/proxy/proxy_protocol.h"
#include "worker/proxy/relay_direction.h"
#include "worker/proxy/routes.h"
#include "worker/proxy/session_record.h"
#include "worker/proxy/session_shared.h"
#include "worker/stats/stats_table.h"
#include "worker/tls/tls_contexts.h"
#include "worker/upstream/balancer.h"

namespace ferry::worker {

// Puts `proxy`'s socket options (TCP_NODELAY, SO_KEEPALIVE) on `fd`. `set_off`: also clear
// what the proxy does not want (a listening socket shared with earlier generations); a new
// socket starts with both off.
void set_socket_options(int fd, const conf::Proxy& proxy, bool set_off);

class Session {
 public:
  // Where a session is. There is no closing phase: close() ends it at once (the access-log
  // line, both connections, the session itself); a half-closed relay is still relaying.
  enum class Phase : std::uint8_t {
    admitting,       // the access rules, the per-client limit, the trusted sender
    reading_header,  // accept_proxy_protocol: the client's header is not in yet
    prereading,      // routes: the client's TLS ClientHello is not in yet (peeked, not taken)
    handshaking,     // tls: the TLS handshake with the client (ferry terminates it)
    connecting,      // to a server the balancer chose (failing over to the next)
    relaying,        // connected: bytes move both ways until both FINs are passed on
    moving,          // frozen (out of the loop), handed to another worker, awaiting its answer
  };
  // A Fast Open connect (fastopen_connect) returns before the server has answered: the session
  // relays at once, and the answer is awaited beside the relay (fastopen_settle()).
  enum class FastOpen : std::uint8_t {
    none,       // a plain connect, or the server has answered
    unsent,     // connect() returned at once; no byte has gone, so no SYN either
    in_flight,  // the SYN left with the first bytes; no answer yet (connect_timeout runs)
  };
  // When fastopen_settle() looks for the answer: after a relay run (the kernel asked only when
  // a FIN is held), at a writable report of the server socket (a SYN-ACK's), at the timeout.
  enum class AnswerCheck : std::uint8_t { after_run, writable, timed_out };

  // Takes over `client` (accepted for `proxy`). start() runs it; it deletes itself at close().
  Session(event::EventLoop& loop, SessionShared& shared, const conf::Proxy& proxy,
          Balancer* balancer, event::Connection& client);
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  void start();
  // Ends the session now, with `status` in the access log and the counters; `this` is gone.
  void close(EndReason status) noexcept;

  // --- Moving to another worker (session_move.cc).
  // Only a relaying session moves: one reading a PROXY header or connecting is short.
  // A session ferry terminates or originates TLS for never moves: OpenSSL cannot hand its state
  // to another process; it drains in its worker.
  // Nor one whose Fast Open connect the server has not answered yet: the new worker would not
  // know to wait for the answer.
  [[nodiscard]] bool movable() const noexcept {
    return phase_ == Phase::relaying && !stays_ && client_->ssl == nullptr &&
           (upstream_ == nullptr || upstream_->ssl == nullptr) && fastopen_ == FastOpen::none;
  }
  [[nodiscard]] Phase phase() const noexcept { return phase_; }
  // Relaying before the server has answered its Fast Open connect: movable once it has.
  [[nodiscard]] bool answer_pending() const noexcept { return fastopen_ != FastOpen::none; }
  // A new worker refused it, or it cannot travel: it is not offered again.
  void stay() noexcept { stays_ = true; }
  [[nodiscard]] const conf::Proxy& proxy() const noexcept { return proxy_; }
  // The server it is connected (or connecting) to, or null.
  [[nodiscard]] const Peer* peer() const noexcept { return peer_; }
  // Takes the session out of this loop (epoll, timers, posted events) and describes it in `r`,
  // its sockets in `fds` (client, server). False: settling the relay found a failed call and
  // the session was closed (`this` is gone).
  [[nodiscard]] bool freeze(std::uint32_t id, SessionRecord& r, int (&fds)[kFdsPerSession]);
  // The new worker holds it: it ends here without a word to either side (no FIN, no log
  // line), its counts handed over. `this` is gone.
  void forget() noexcept;
  // The move failed: back in this loop as it was. False when its sockets cannot be watched
  // again: it was closed (`this` is gone).
  [[nodiscard]] bool thaw();
  // Runs (again): both sockets in this loop, relaying. For an adopted session once the old
  // worker has its answer.
  void resume();
  // A session moved here: `client` and `upstream` are this loop's connections of the record's
  // sockets, `client`'s listening set. Null when it cannot start (both connections closed).
  static Session* adopt(event::EventLoop& loop, SessionShared& shared, const conf::Proxy& proxy,
                        Balancer& balancer, event::Connection& client, event::Connection& upstream,
                        SessionRecord& r);

  // --- What `ferry ctl show sessions` lists (session_listing.cc).
  // Unique in this worker while the session stays in it (one moved here gets a new one).
  [[nodiscard]] std::uint64_t serial() const noexcept { return serial_; }
  [[nodiscard]] const event::SocketAddress& client_address() const noexcept {
    return client_->peer;
  }
  // The server's name as configured, or empty when none was picked yet.
  [[nodiscard]] std::string_view server_name() const noexcept;
  // The upstream its server is (or will be) picked from: its route's, or the proxy's.
  [[nodiscard]] std::string_view upstream_name() const noexcept;
  [[nodiscard]] std::uint64_t bytes_from_client() const noexcept;
  [[nodiscard]] std::uint64_t bytes_to_client() const noexcept { return down_.total(); }
  [[nodiscard]] event::TimePoint started() const noexcept { return started_; }

  // The live list, SessionShared's (intrusive: joining it allocates nothing).
  Session* prev = nullptr;
  Session* next = nullptr;

 private:
  ~Session() = default;

  // session.cc: the relay and the end.
  static void on_client_event(event::Event& ev);
  void run();
  bool pump(RelayDirection& d, const RelayDirection& other);
  void count_bytes(const RelayDirection& d, std::uint64_t n) noexcept;
  void count_end(EndReason status) noexcept;
  void reset(event::Connection* side, int err);
  void idle_timer();

  // session_admission.cc: who may come in, and the PROXY header a client sends.
  bool admit(bool count);
  bool trusted_sender();
  void read_header();
  void bad_header(std::string_view why);
  // What the client sent so far, left in its socket (MSG_PEEK) into `into`: false when there is
  // nothing yet (wait for the next report) or the session was closed (`this` is gone).
  bool peek_client(std::span<std::byte> into, std::size_t& n);
  void header_done(const proxy_protocol::ParseResult& h);
  // Admitted: the route by the ClientHello first when the proxy has routes, then the server.
  void admitted();

  // session_tls.cc: TLS with the client (termination) and with the server (origination).
  void start_client_tls();
  void client_handshake();
  // A terminated client whose stream ended with its handshake has reset since (it closed
  // without reading): nobody to answer, nothing to send. True when the session was closed.
  bool client_gone();
  // The server's TLS, once connected; false when it is not done yet or failed (then the next
  // server is being tried, or the session closed).
  bool start_upstream_tls(const tls::ClientContext& ctx);
  bool upstream_handshake();

  // session_preread.cc: the ClientHello a routing proxy reads without taking it.
  void preread();
  void preread_timed_out();
  // Goes on to `route`'s upstream (null: none takes it, the session ends with `otherwise`).
  void route_to(const RouteTarget* route, std::string_view sni, EndReason otherwise);

  // upstream_connect.cc: the server side, up to the first relayed byte.
  static void on_upstream_event(event::Event& ev);
  bool connect_next();
  void connect_failed(const char* why);
  void connected_now();
  void count_server_session();
  // While a Fast Open connect is unanswered: the answer noticed, the FIN held for it passed on,
  // the timer armed once the SYN is out. False when the session was closed (refused, or no
  // answer in time).
  bool fastopen_settle(AnswerCheck check);
  void failed_peer();
  void release_peer(bool failed, ServerCounters* c) noexcept;
  void prepend_header();
  std::size_t encode_header(std::span<std::byte> out);
  bool send_header_in_clear();

  event::EventLoop& loop_;
  SessionShared& shared_;
  const conf::Proxy& proxy_;
  Balancer* balancer_;  // the upstream's servers (null: a routing proxy's, none chosen yet)
  event::Connection* client_;
  event::Connection* upstream_ = nullptr;
  Peer* peer_ = nullptr;  // being connected to, or connected
  TriedSet tried_;
  int tries_ = 0;
  RelayDirection up_;    // client → upstream
  RelayDirection down_;  // upstream → client
  Phase phase_ = Phase::admitting;
  std::uint64_t serial_ = 0;
  std::uint16_t moves_ = 0;  // how often it moved to another worker (saturating)
  // Resumed after a move (or a move that did not happen), no byte relayed since: a run counts
  // as activity only once it moves bytes, so that a move does not restart the idle time.
  bool resumed_ = false;
  // The proxy's half_close, kept per session: a session that moved in already half-closed (its
  // old configuration's) keeps its other direction open whatever the new one says.
  bool half_close_ = true;
  FastOpen fastopen_ = FastOpen::none;
  // The client's FIN, held until the server answers a Fast Open connect: a shutdown() before
  // the answer (SYN_SENT) would drop the connect.
  bool fin_held_ = false;
  bool stays_ = false;    // stay()
  bool counted_ = false;  // holds a place in the per-client counts (limit_bucket_)
  std::uint32_t limit_bucket_ = 0;
  std::uint32_t header_out_ = 0;    // bytes of the PROXY header sent on (not the client's bytes)
  ProxyCounters* stats_ = nullptr;  // this worker's counters of the proxy (or none)
  ServerCounters* peer_stats_ = nullptr;  // of the server, once connected (or none)
  // What few sessions need: the destination a received PROXY header carried (to send on in
  // ours), the name of a moved session's server that this worker's balancer does not have, a
  // routed session's route, its upstream and the server name its client sent.
  struct Aside {
    std::optional<event::SocketAddress> header_destination;
    std::string server;
    bool routed = false;
    std::string route;
    std::string upstream;
    std::string sni;
    ServerCounters* route_stats = nullptr;  // the route's counters (null: none)
    std::uint16_t prereads = 0;             // looks at a ClientHello not yet whole
    // A session whose TLS ferry terminated: the version agreed, the client certificate's
    // subject (verify_client), for the access log.
    std::string tls_version;
    std::string client_subject;
    // Its stream ended with the handshake (nothing sent): a reset seen while connecting means
    // the client is gone (client_gone()).
    bool ended_with_handshake = false;
  };
  Aside& aside();
  std::unique_ptr<Aside> aside_;
  event::TimePoint started_;
  event::TimePoint last_active_;  // the last time run() moved bytes or looked for them
  std::chrono::system_clock::time_point wall_start_;
};

}  // namespace ferry::worker
