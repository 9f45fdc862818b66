// StreamLoad: client sessions that stream numbered bytes both ways without pause through a
// proxy to an echo backend, one epoll thread for all of them, checking every byte that comes
// back — for tests that move sessions between workers under load.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace ferry::test {

class StreamLoad {
 public:
  struct Options {
    int port = 0;
    int sessions = 100;
    // Bytes a session keeps in flight (sent, not yet echoed): ping-pong-like when small.
    std::size_t window = 2048;
    // Of `sessions`, this many are bulk transfers: each sends `bulk_bytes` with a window of
    // 1 MiB (large reads: the relay's splice path), then only reads.
    int bulk_sessions = 0;
    std::uint64_t bulk_bytes = 0;
  };
  struct Result {
    int sessions = 0;
    int connected = 0;
    int cut = 0;    // closed or reset before the end
    int wrong = 0;  // a byte that came back was not the one sent there
    std::uint64_t echoed = 0;
    std::string first_problem;
  };

  // Connects every session (raising RLIMIT_NOFILE to its hard limit first) and starts.
  explicit StreamLoad(const Options& options);
  ~StreamLoad();
  StreamLoad(const StreamLoad&) = delete;
  StreamLoad& operator=(const StreamLoad&) = delete;

  // Waits until every live session has had at least `bytes` more echoed than now.
  bool progress(std::size_t bytes, std::chrono::milliseconds limit = std::chrono::seconds(20));
  // Stops sending, waits until everything sent came back (bounded), closes every session.
  Result finish(std::chrono::milliseconds limit = std::chrono::seconds(60));
  [[nodiscard]] Result now() const;

  // The byte at `offset` of session `i`'s stream.
  static std::uint8_t byte_at(int i, std::uint64_t offset) noexcept;

 private:
  struct Session {
    int fd = -1;
    std::uint64_t sent = 0;
    std::uint64_t echoed = 0;
    std::uint64_t limit = UINT64_MAX;  // bytes it sends at most
    std::size_t window = 0;
    bool dead = false;
  };
  void run();
  void send_some(int i);
  void receive_some(int i);
  void problem(int i, const std::string& what, bool cut);

  Options options_;
  std::vector<Session> sessions_;
  int epoll_ = -1;
  int wake_ = -1;  // an eventfd: finish() wakes the thread
  std::atomic<bool> stop_sending_{false};
  std::atomic<bool> quit_{false};
  mutable std::mutex mutex_;  // the sessions' counts, between the thread and the test
  Result result_;
  std::thread thread_;
};

}  // namespace ferry::test
