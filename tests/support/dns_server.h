// A DNS server for tests: a UDP responder on its own random loopback address (127.x.y.z:53)
// answering A and AAAA queries from a map of names, which can delay or drop its answers; and the
// sandbox that points a ferry at it (its own mount namespace with a test resolv.conf and hosts).
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace ferry::test {

class DnsServer {
 public:
  // How queries are treated: answered (after `delay`), or never answered.
  enum class Mode { answer, silent };

  DnsServer();
  ~DnsServer();
  DnsServer(const DnsServer&) = delete;
  DnsServer& operator=(const DnsServer&) = delete;

  // `name` (lower case, no trailing dot) resolves to `addresses` ("127.0.0.1", "::1", ...);
  // an empty list answers NODATA. Names never set answer NXDOMAIN.
  void set(const std::string& name, std::vector<std::string> addresses);
  void erase(const std::string& name);
  void set_mode(Mode mode) { mode_.store(mode); }
  void set_delay(std::chrono::milliseconds delay) { delay_ms_.store(delay.count()); }

  [[nodiscard]] const std::string& address() const noexcept { return address_; }
  // Queries received so far (answered or not).
  [[nodiscard]] int queries() const noexcept { return queries_.load(); }
  // resolv.conf text for glibc: this server only, one try of one second.
  [[nodiscard]] std::string resolv_conf() const;

 private:
  void serve();
  std::string reply_to(const std::string& query);

  int fd_ = -1;
  int wake_[2] = {-1, -1};
  std::string address_;
  std::mutex mutex_;
  std::map<std::string, std::vector<std::string>> names_;
  std::atomic<Mode> mode_{Mode::answer};
  std::atomic<long> delay_ms_{0};
  std::atomic<int> queries_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Which /etc/hosts the sandbox gives ferry: Debian's (::1 localhost as well, which getaddrinfo
// returns first) or one with 127.0.0.1 only.
enum class HostsLayout { ipv4_only, ipv6_first };

// The command prefix (for FerryInstance::set_launcher) that runs a program in a private mount
// namespace where /etc/resolv.conf names `dns`, /etc/hosts has `layout`, and nsswitch.conf reads
// files then DNS. The files are written into `folder`.
std::vector<std::string> resolv_sandbox(const DnsServer& dns, HostsLayout layout,
                                        const std::string& folder);
// The same with `resolv_conf` as the sandbox's /etc/resolv.conf (another DNS server's).
std::vector<std::string> resolv_sandbox(const std::string& resolv_conf, HostsLayout layout,
                                        const std::string& folder);

}  // namespace ferry::test
