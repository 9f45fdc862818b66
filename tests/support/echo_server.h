// A real backend for tests: a threaded TCP echo server on 127.0.0.1 that counts the
// connections it accepted.
#pragma once

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace ferry::test {

class EchoServer {
 public:
  EchoServer() : EchoServer(0) {}
  // On a given loopback port (0: any), e.g. to restart a backend where it was.
  explicit EchoServer(int port);
  ~EchoServer();
  EchoServer(const EchoServer&) = delete;
  EchoServer& operator=(const EchoServer&) = delete;

  [[nodiscard]] int port() const noexcept { return port_; }
  [[nodiscard]] int accepted() const noexcept { return accepted_.load(); }
  // Connections that sent at least a byte: clients, not a health check's bare connects. Counted
  // before the echo goes back, so a client that got its echo is counted.
  [[nodiscard]] int spoke() const noexcept { return spoke_.load(); }

 private:
  void serve();

  int fd_ = -1;
  int port_ = 0;
  int wake_[2] = {-1, -1};
  std::atomic<int> accepted_{0};
  std::atomic<int> spoke_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// A client connection to 127.0.0.1:port with 5 s send/receive timeouts; -1 on failure.
int connect_to_port(int port);
// Waits until 127.0.0.1:port accepts a connection (a backend that was just started); false
// after `limit`.
bool accepts_connections(int port, std::chrono::milliseconds limit = std::chrono::seconds(10));
// Sends `text` and reads back exactly as many bytes; true when they match.
bool echo_round_trip(int fd, const std::string& text);
// Whether a new connection to the proxy on `port` relays one echo of `text` (false: refused, or
// closed by ferry).
bool served_through(int port, const std::string& text = "ping");
// Opens `n` sessions from `source` to 127.0.0.1:port, each echoed: true with all of them in
// `held` (the caller closes them), else false with none left open.
bool open_served(const std::string& source, int port, int n, std::vector<int>& held);

}  // namespace ferry::test
