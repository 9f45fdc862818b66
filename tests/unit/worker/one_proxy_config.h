// A configuration of one proxy NAME on upstream uNAME with one server h:NAME, for the statistics
// tests (registering names, reclaiming them, taking them in across an upgrade).
#pragma once

#include <string>

#include "conf/config.h"

namespace ferry::worker {

inline conf::Config one_proxy(const std::string& name) {
  conf::Config cfg;
  conf::Upstream u;
  u.name = "u" + name;
  conf::Server s;
  s.address.text = "h:" + name;
  u.servers.push_back(s);
  cfg.upstreams.push_back(u);
  conf::Proxy p;
  p.name = name;
  p.upstream = u.name;
  cfg.proxies.push_back(p);
  return cfg;
}

}  // namespace ferry::worker
