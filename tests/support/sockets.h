// Plain sockets for tests that play client or backend themselves: from a chosen source
// address, on IPv4 or IPv6 loopback, with bounded reads and a check that the peer closed.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace ferry::test {

// Connects to ip:port (IPv4 or IPv6 text) from `source` ("" = the kernel's choice, e.g.
// "127.0.0.2" to be another client); 5 s send/receive timeouts; -1 on failure.
int connect_from(const std::string& source, const std::string& ip, int port);
// A connected unix stream socket at `path` (a control socket, say), or -1.
int connect_unix(const std::string& path);
// A listening socket on `ip` ("127.0.0.1", "::1") with a kernel-chosen port written to `port`.
int listen_on(const std::string& ip, int& port);
// accept() with a bound: -1 when nobody came within `limit`.
int accept_within(int listener, std::chrono::milliseconds limit);
// Reads until `n` bytes arrived, the peer closed, or `limit` passed; returns what came.
std::string read_exactly(int fd, std::size_t n, std::chrono::milliseconds limit);
// True when the peer closes (EOF or reset) within `limit`, discarding any bytes before that.
bool closed_by_peer(int fd, std::chrono::milliseconds limit);
bool send_all(int fd, const std::string& data);
// The local port of a connected socket.
int local_port(int fd);
std::string read_file(const std::string& path);
// GET `path` from an HTTP server on 127.0.0.1:`port` (the status endpoint): the whole answer,
// headers included ("" when it cannot connect).
std::string http_get(int port, const std::string& path);
// How many times `needle` occurs in `text`.
std::size_t count_of(const std::string& text, const std::string& needle);

// A listener on 127.0.0.1 whose accept queue is full (a backlog of 0, filled by its own
// connects, never accepted): the kernel drops the SYNs of later connects, which stay in
// SYN_SENT until their timeout. port() is 0 when it could not be made.
class BlackHole {
 public:
  BlackHole();
  ~BlackHole();
  BlackHole(const BlackHole&) = delete;
  BlackHole& operator=(const BlackHole&) = delete;
  [[nodiscard]] int port() const noexcept { return port_; }

 private:
  int listener_ = -1;
  int port_ = 0;
  std::vector<int> fillers_;
};

}  // namespace ferry::test
