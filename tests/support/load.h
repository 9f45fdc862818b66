// EchoLoad: client threads that connect to a port, echo a short message and close, again and
// again until stopped, counting what succeeded and what failed.
#pragma once

#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/echo_server.h"

namespace ferry::test {

class EchoLoad {
 public:
  EchoLoad(int port, int threads) {
    for (int t = 0; t < threads; ++t) {
      threads_.emplace_back([this, port, t] {
        for (int i = 0; !stop_.load(); ++i) {
          const std::string text = "t" + std::to_string(t) + " #" + std::to_string(i);
          const int fd = connect_to_port(port);
          const bool ok = fd >= 0 && echo_round_trip(fd, text);
          if (fd >= 0) ::close(fd);
          (ok ? done_ : failed_).fetch_add(1);
        }
      });
    }
  }
  ~EchoLoad() { stop(); }
  EchoLoad(const EchoLoad&) = delete;
  EchoLoad& operator=(const EchoLoad&) = delete;

  void stop() {
    stop_ = true;
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  [[nodiscard]] long done() const { return done_.load(); }
  [[nodiscard]] long failed() const { return failed_.load(); }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<long> done_{0};
  std::atomic<long> failed_{0};
  std::vector<std::thread> threads_;
};

}  // namespace ferry::test
