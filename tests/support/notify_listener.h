// A systemd-style NOTIFY_SOCKET for tests: a datagram socket that collects what a program sends
// with sd_notify(), with the sender's pid (SO_PASSCRED), and waits for messages, bounded.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace ferry::test {

struct NotifyMessage {
  std::string text;  // "READY=1\nSTATUS=..."
  pid_t sender = 0;
  // When the kernel queued it (SO_TIMESTAMPNS, CLOCK_REALTIME): how far apart two messages were
  // sent, whenever the test got to read them.
  std::chrono::nanoseconds arrived{0};
  // The value of NAME= in the message, if it has one.
  [[nodiscard]] std::optional<std::string> get(const std::string& name) const;
  [[nodiscard]] bool has(const std::string& assignment) const;  // "READY=1"
};

class NotifyListener {
 public:
  explicit NotifyListener(const std::string& path);
  ~NotifyListener();
  NotifyListener(const NotifyListener&) = delete;
  NotifyListener& operator=(const NotifyListener&) = delete;

  // "NOTIFY_SOCKET=PATH" for the program's environment.
  [[nodiscard]] std::string env() const { return "NOTIFY_SOCKET=" + path_; }
  // Receives until a message matches, returning it; earlier ones stay in history().
  std::optional<NotifyMessage> wait_for(const std::function<bool(const NotifyMessage&)>& match,
                                        std::chrono::milliseconds limit = std::chrono::seconds(10));
  std::optional<NotifyMessage> wait_for(const std::string& assignment,
                                        std::chrono::milliseconds limit = std::chrono::seconds(10));
  // Every message received so far, in order.
  [[nodiscard]] const std::vector<NotifyMessage>& history() const noexcept { return history_; }
  // Receives whatever has arrived, without waiting.
  void drain();

 private:
  std::optional<NotifyMessage> receive(std::chrono::milliseconds limit);

  int fd_ = -1;
  std::string path_;
  std::vector<NotifyMessage> history_;
};

}  // namespace ferry::test
