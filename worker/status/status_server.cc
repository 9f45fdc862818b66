// StatusServer: one StatusConnection per client, a small state machine (read a request head,
// write the response, then read the next one or linger until the client closes) driven by the
// connection's edge-triggered events and three timers.
#include "worker/status/status_server.h"

#include <sys/socket.h>

#include <cstring>
#include <ctime>
#include <iterator>
#include <memory>
#include <span>
#include <system_error>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "event/connection_io.h"
#include "worker/status/http_request.h"

namespace ferry::worker {

using event::Connection;
using event::Event;
using event::IoStatus;

namespace {

void on_event(Event& ev);

constexpr std::string_view kJson = "application/json";
constexpr std::string_view kPrometheus = "text/plain; version=0.0.4; charset=utf-8";
constexpr std::string_view kText = "text/plain; charset=utf-8";

// RFC 9110's IMF-fixdate, without the C library's locale-dependent names.
void append_date(std::string& out) {
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&now, &tm);
  fmt::format_to(std::back_inserter(out), "Date: {}, {:02} {} {} {:02}:{:02}:{:02} GMT\r\n",
                 kDays[tm.tm_wday], tm.tm_mday, kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour,
                 tm.tm_min, tm.tm_sec);
}

const char* reason_phrase(int code) {
  switch (code) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    default: return "Service Unavailable";
  }
}

}  // namespace

struct StatusConnection {
  enum class State : std::uint8_t { reading, writing, lingering };
  // What one step of the state machine did.
  enum class Step : std::uint8_t { more, wait, closed };

  event::EventLoop* loop = nullptr;
  StatusServer* server = nullptr;
  Connection* c = nullptr;
  State state = State::reading;
  // The head being read, and whatever the client sent after it (a pipelined request).
  std::unique_ptr<char[]> in = std::make_unique<char[]>(http::kMaxRequest);
  std::size_t in_len = 0;
  http::RequestParser parser;
  std::string out;
  std::size_t sent = 0;
  int requests = 0;
  bool close_after = false;
  StatusConnection* prev = nullptr;
  StatusConnection* next = nullptr;

  const StatusServer::Options& options() const noexcept { return server->options_; }

  void close() noexcept {
    loop->close_connection(*c);
    server->unlink(*this);
    delete this;
  }

  void run() {
    for (;;) {
      Step step = Step::wait;
      switch (state) {
        case State::reading: step = read_request(); break;
        case State::writing: step = write_response(); break;
        case State::lingering: step = linger(); break;
      }
      if (step != Step::more) return;
    }
  }

  void timed_out() {
    // An idle keep-alive connection that reached its limit is not the client's fault.
    const bool idle = state == State::reading && in_len == 0 && requests > 0;
    if (state != State::lingering && !idle) {
      ++server->stats_.timed_out;
      spdlog::debug("status: client {} timed out {}", c->peer.to_string(),
                    state == State::reading ? "sending its request" : "taking the response");
    }
    close();
  }

  Step read_request() {
    for (;;) {
      const http::ParseResult r = parser.parse({in.get(), in_len});
      if (r.status == http::ParseStatus::done) {
        respond(r.request);
        return Step::more;
      }
      if (r.status != http::ParseStatus::need_more) {
        reject(r.reason);
        return Step::more;
      }
      if (c->read.eof) {
        if (in_len > 0) {
          spdlog::debug("status: client {} closed before its request ended", c->peer.to_string());
        }
        close();
        return Step::closed;
      }
      const auto space =
          std::as_writable_bytes(std::span<char>(in.get() + in_len, http::kMaxRequest - in_len));
      const event::IoResult io = event::recv(*c, space);
      if (io.status == IoStatus::again) return Step::wait;
      if (io.status == IoStatus::error) {
        spdlog::debug("status: recv() from {} failed: {}", c->peer.to_string(),
                      std::system_category().message(io.err));
        close();
        return Step::closed;
      }
      in_len += io.bytes;  // eof: the next turn sees read.eof
    }
  }

  void respond(const http::Request& q) {
    ++requests;
    const bool status = q.path == "/status";
    const bool known = status || q.path == "/metrics";
    const bool head = q.method == "HEAD";
    close_after = !q.keep_alive || requests >= options().max_requests;
    std::string body;
    int code = 200;
    if (!known) {
      code = 404;
    } else if (!head && q.method != "GET") {
      code = 405;
    } else if (!server->render_) {
      code = 503;
    } else {
      body = server->render_(q.path);
    }
    if (code != 200) body = fmt::format("{} {}\n", code, reason_phrase(code));
    start_response(code,
                   code != 200 ? kText
                   : status    ? kJson
                               : kPrometheus,
                   body, head, q.minor == 0 && !close_after);
    // The views in `q` point into `in`: only now is the next request moved to its front.
    std::memmove(in.get(), in.get() + q.length, in_len - q.length);
    in_len -= q.length;
    parser.reset();
  }

  void reject(std::string_view why) {
    ++server->stats_.bad_requests;
    spdlog::debug("status: bad request from {}: {}", c->peer.to_string(), why);
    close_after = true;
    start_response(400, kText, fmt::format("400 Bad Request: {}\n", why), false, false);
    in_len = 0;  // what else it sent is drained while lingering
  }

  // `keep_alive_10`: an HTTP/1.0 client asked to keep the connection and may.
  void start_response(int code, std::string_view type, const std::string& body, bool head,
                      bool keep_alive_10) {
    ++server->stats_.responses;
    out.clear();
    out.reserve(256 + (head ? 0 : body.size()));
    fmt::format_to(std::back_inserter(out), "HTTP/1.1 {} {}\r\nServer: ferry\r\n", code,
                   reason_phrase(code));
    append_date(out);
    fmt::format_to(std::back_inserter(out),
                   "Content-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n", type,
                   body.size());
    if (code == 405) out += "Allow: GET, HEAD\r\n";
    if (close_after) out += "Connection: close\r\n";
    if (keep_alive_10) out += "Connection: keep-alive\r\n";
    out += "\r\n";
    if (!head) out += body;
    sent = 0;
    loop->del_timer(c->read);
    state = State::writing;
  }

  Step write_response() {
    bool progressed = false;
    while (sent < out.size()) {
      const event::IoResult io = event::send(
          *c, std::as_bytes(std::span<const char>(out.data() + sent, out.size() - sent)));
      if (io.status == IoStatus::again) {
        // Re-armed only on progress: a reader that takes a byte now and then keeps its
        // connection, one that takes nothing for send_timeout loses it.
        if (progressed || !c->write.timer_set) loop->add_timer(c->write, options().send_timeout);
        return Step::wait;
      }
      if (io.status == IoStatus::error) {
        spdlog::debug("status: send() to {} failed: {}", c->peer.to_string(),
                      std::system_category().message(io.err));
        close();
        return Step::closed;
      }
      sent += io.bytes;
      progressed = progressed || io.bytes > 0;
    }
    loop->del_timer(c->write);
    std::string().swap(out);  // a large body is not held while the connection idles
    if (close_after) {
      // Our FIN after the response; the client's is awaited before closing (see linger()).
      if (::shutdown(c->fd.get(), SHUT_WR) == -1) {
        spdlog::debug("status: shutdown(SHUT_WR) for {} failed: {}", c->peer.to_string(),
                      event::last_error().message());
        close();
        return Step::closed;
      }
      state = State::lingering;
      loop->add_timer(c->read, options().linger_timeout);
      return Step::more;
    }
    state = State::reading;
    loop->add_timer(c->read, options().request_timeout);
    return Step::more;
  }

  // Closing with unread bytes (the rest of an oversized request, a pipelined one) would send a
  // reset, and the client's kernel may drop the response it has not read yet on receiving it.
  // So the rest is read and dropped until the client closes, within linger_timeout; one still
  // sending after a few buffers' worth is not reading the response anyway.
  Step linger() {
    for (int reads = 0; reads < 16; ++reads) {
      const auto space = std::as_writable_bytes(std::span<char>(in.get(), http::kMaxRequest));
      const event::IoResult io = event::recv(*c, space);
      if (io.status == IoStatus::again) return Step::wait;
      if (io.status != IoStatus::ok || c->read.eof) break;
    }
    close();
    return Step::closed;
  }
};

namespace {

void on_event(Event& ev) {
  auto& s = *static_cast<StatusConnection*>(static_cast<Connection*>(ev.data)->data);
  if (ev.timedout) {
    ev.timedout = false;
    s.timed_out();
    return;
  }
  // Reading and lingering wait on read events, writing on write events; the other direction's
  // readiness stays recorded in its flags for later.
  if (ev.write != (s.state == StatusConnection::State::writing)) return;
  s.run();
}

}  // namespace

StatusServer::StatusServer(const conf::StatusSettings& settings, Renderer render)
    : StatusServer(settings, std::move(render), Options{}) {}

StatusServer::StatusServer(const conf::StatusSettings& settings, Renderer render,
                           const Options& options)
    : settings_(settings), rules_(settings.access), render_(std::move(render)), options_(options) {}

void StatusServer::link(StatusConnection& s) noexcept {
  s.next = head_;
  if (head_ != nullptr) head_->prev = &s;
  head_ = &s;
  ++count_;
}

void StatusServer::unlink(StatusConnection& s) noexcept {
  if (s.prev != nullptr) s.prev->next = s.next;
  if (s.next != nullptr) s.next->prev = s.prev;
  if (head_ == &s) head_ = s.next;
  --count_;
}

void StatusServer::close_all() noexcept {
  while (head_ != nullptr) head_->close();
}

void StatusServer::start(event::EventLoop& loop, Connection& c) {
  ++stats_.accepted;
  if (!rules_.empty()) {
    const AccessRules::Decision d = rules_.check(c.peer);
    if (!d.allowed) {
      ++stats_.denied;
      spdlog::debug("status: client {} denied by rule \"{}\"", c.peer.to_string(),
                    settings_.access[static_cast<std::size_t>(d.rule)].text);
      loop.close_connection(c);
      return;
    }
  }
  if (count_ >= options_.max_connections) {
    ++stats_.refused;
    if (auto held = full_log_.admit(loop.now())) {
      spdlog::warn(
          "status: {} connections open already, client {} refused ({} more since the last "
          "message)",
          count_, c.peer.to_string(), *held);
    }
    loop.close_connection(c);
    return;
  }
  auto* s = new StatusConnection;
  s->loop = &loop;
  s->server = this;
  s->c = &c;
  link(*s);
  c.data = s;
  c.read.handler = c.write.handler = on_event;
  if (loop.add_connection(c)) {
    s->close();
    return;
  }
  loop.add_timer(c.read, options_.request_timeout);
  s->run();
}

}  // namespace ferry::worker
