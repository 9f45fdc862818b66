// A real DNS server for tests: unbound, started from a generated configuration on its own random
// loopback address (127.x.y.z:53) with one static local zone, its records changed live through
// unbound-control over a unix socket. Every wait is bounded.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tests/support/process.h"

namespace ferry::test {

class UnboundServer {
 public:
  // Serves `zone` ("service.test") from `records` (unbound local-data lines, "NAME TTL IN TYPE
  // DATA"). Throws when unbound is not installed or does not come up within 10 s.
  UnboundServer(const std::string& zone, const std::vector<std::string>& records);
  ~UnboundServer();
  UnboundServer(const UnboundServer&) = delete;
  UnboundServer& operator=(const UnboundServer&) = delete;

  // `name` has exactly `records` from now on (all of its types: removed, then added); none
  // makes it NXDOMAIN. Throws when unbound-control fails.
  void set(const std::string& name, const std::vector<std::string>& records);

  [[nodiscard]] const std::string& address() const noexcept { return address_; }
  // resolv.conf text for glibc: this server only, one try of one second.
  [[nodiscard]] std::string resolv_conf() const;
  [[nodiscard]] const TempDir& dir() const noexcept { return dir_; }
  // What unbound wrote so far (its errors, with verbosity 0).
  [[nodiscard]] std::string log();

  // Where unbound and unbound-control are (Debian's package puts them in /usr/sbin).
  static constexpr const char* kUnbound = "/usr/sbin/unbound";
  static constexpr const char* kControl = "/usr/sbin/unbound-control";

 private:
  void control(const std::vector<std::string>& args);

  TempDir dir_;
  std::string address_;
  std::string conf_;
  std::unique_ptr<Process> process_;
};

}  // namespace ferry::test
