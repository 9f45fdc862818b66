// DnsServer: one poll()-driven thread; answers are queued with the time they are due, so a delay
// holds no other query back. Only what glibc's stub resolver sends is understood: one question.
#include "tests/support/dns_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <utility>

#include "tests/support/process.h"

namespace ferry::test {
namespace {

constexpr std::uint16_t kTypeA = 1;
constexpr std::uint16_t kTypeAAAA = 28;

void put16(std::string& out, std::uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v & 0xff));
}

std::uint16_t get16(const std::string& in, std::size_t at) {
  return static_cast<std::uint16_t>((static_cast<unsigned char>(in[at]) << 8) |
                                    static_cast<unsigned char>(in[at + 1]));
}

}  // namespace

DnsServer::DnsServer() {
  fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw std::runtime_error(std::string("DnsServer: socket: ") + std::strerror(errno));
  // A random address in 127/8 (not 127.0.0.x, where other tests live): port 53 is then free.
  std::random_device seed;
  std::mt19937 rng(seed());
  for (int attempt = 0;; ++attempt) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(53);
    sin.sin_addr.s_addr =
        htonl(0x7f000000U | (1 + rng() % 254) << 16 | (rng() % 256) << 8 | (1 + rng() % 254));
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&sin), sizeof sin) == 0) {
      char text[INET_ADDRSTRLEN] = {};
      ::inet_ntop(AF_INET, &sin.sin_addr, text, sizeof text);
      address_ = text;
      break;
    }
    if (errno != EADDRINUSE || attempt == 20) {
      throw std::runtime_error(std::string("DnsServer: bind: ") + std::strerror(errno));
    }
  }
  if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
    throw std::runtime_error(std::string("DnsServer: pipe2: ") + std::strerror(errno));
  }
  thread_ = std::thread([this] { serve(); });
}

DnsServer::~DnsServer() {
  stop_ = true;
  (void)::write(wake_[1], "x", 1);
  thread_.join();
  ::close(fd_);
  ::close(wake_[0]);
  ::close(wake_[1]);
}

void DnsServer::set(const std::string& name, std::vector<std::string> addresses) {
  const std::lock_guard lock(mutex_);
  names_[name] = std::move(addresses);
}

void DnsServer::erase(const std::string& name) {
  const std::lock_guard lock(mutex_);
  names_.erase(name);
}

std::string DnsServer::resolv_conf() const {
  return "nameserver " + address_ + "\noptions timeout:1 attempts:1\n";
}

std::string DnsServer::reply_to(const std::string& query) {
  if (query.size() < 12 || get16(query, 4) != 1) return {};
  // The question: labels, then type and class.
  std::string name;
  std::size_t at = 12;
  while (at < query.size() && query[at] != 0) {
    const auto len = static_cast<unsigned char>(query[at]);
    if (len > 63 || at + 1 + len > query.size()) return {};
    if (!name.empty()) name.push_back('.');
    for (std::size_t i = 0; i < len; ++i) {
      name.push_back(
          static_cast<char>(std::tolower(static_cast<unsigned char>(query[at + 1 + i]))));
    }
    at += 1 + len;
  }
  if (at + 5 > query.size()) return {};
  const std::size_t question_end = at + 5;
  const std::uint16_t type = get16(query, at + 1);

  std::vector<std::string> rdata;
  bool known = false;
  {
    const std::lock_guard lock(mutex_);
    if (auto it = names_.find(name); it != names_.end()) {
      known = true;
      for (const std::string& a : it->second) {
        unsigned char bytes[16];
        if (type == kTypeA && ::inet_pton(AF_INET, a.c_str(), bytes) == 1) {
          rdata.emplace_back(reinterpret_cast<char*>(bytes), 4);
        } else if (type == kTypeAAAA && ::inet_pton(AF_INET6, a.c_str(), bytes) == 1) {
          rdata.emplace_back(reinterpret_cast<char*>(bytes), 16);
        }
      }
    }
  }
  std::string out = query.substr(0, 2);                              // the id
  put16(out, static_cast<std::uint16_t>(0x8180 | (known ? 0 : 3)));  // QR RD RA, NXDOMAIN
  put16(out, 1);
  put16(out, static_cast<std::uint16_t>(rdata.size()));
  put16(out, 0);
  put16(out, 0);
  out += query.substr(12, question_end - 12);
  for (const std::string& r : rdata) {
    put16(out, 0xc00c);  // the name: a pointer to the question's
    put16(out, type);
    put16(out, 1);  // IN
    put16(out, 0);
    put16(out, 1);  // TTL 1 s
    put16(out, static_cast<std::uint16_t>(r.size()));
    out += r;
  }
  return out;
}

void DnsServer::serve() {
  using Clock = std::chrono::steady_clock;
  struct Due {
    Clock::time_point at;
    sockaddr_storage to;
    socklen_t to_len;
    std::string reply;
  };
  std::vector<Due> due;
  while (!stop_) {
    int wait_ms = 1000;
    const auto now = Clock::now();
    for (const Due& d : due) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(d.at - now).count();
      wait_ms = static_cast<int>(std::clamp<long>(left, 0, wait_ms));
    }
    pollfd fds[2] = {{fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    ::poll(fds, 2, wait_ms);
    if (fds[0].revents & POLLIN) {
      for (;;) {
        char buf[512];
        Due d{};
        d.to_len = sizeof d.to;
        const ssize_t n =
            ::recvfrom(fd_, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&d.to), &d.to_len);
        if (n <= 0) break;
        ++queries_;
        if (mode_.load() == Mode::silent) continue;
        d.reply = reply_to(std::string(buf, static_cast<std::size_t>(n)));
        if (d.reply.empty()) continue;
        d.at = Clock::now() + std::chrono::milliseconds(delay_ms_.load());
        due.push_back(std::move(d));
      }
    }
    const auto at = Clock::now();
    for (auto it = due.begin(); it != due.end();) {
      if (it->at > at) {
        ++it;
        continue;
      }
      ::sendto(fd_, it->reply.data(), it->reply.size(), 0, reinterpret_cast<sockaddr*>(&it->to),
               it->to_len);
      it = due.erase(it);
    }
  }
}

std::vector<std::string> resolv_sandbox(const DnsServer& dns, HostsLayout layout,
                                        const std::string& folder) {
  return resolv_sandbox(dns.resolv_conf(), layout, folder);
}

std::vector<std::string> resolv_sandbox(const std::string& resolv_conf, HostsLayout layout,
                                        const std::string& folder) {
  const char* launcher = std::getenv("FERRY_RESOLV_SANDBOX");
  if (launcher == nullptr || *launcher == '\0') {
    throw std::runtime_error("FERRY_RESOLV_SANDBOX is not set");
  }
  const std::string hosts = layout == HostsLayout::ipv6_first
                                ? "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"
                                : "127.0.0.1 localhost\n";
  auto write = [&](const std::string& name, const std::string& text) {
    const std::string path = folder + "/" + name;
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || ::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
      throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
    }
    ::close(fd);
    return path;
  };
  return {launcher, write("resolv.conf", resolv_conf), write("hosts", hosts),
          write("nsswitch.conf", "hosts: files dns\n")};
}

}  // namespace ferry::test
