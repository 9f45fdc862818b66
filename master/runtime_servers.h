// RuntimeServers: the master's own copy of the operator's runtime changes to upstream servers
// (admin state, weight, servers added and removed), the rules that keep them across a reload
// and a restart (the state file), and the records it publishes to the workers.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "conf/config.h"
#include "worker/upstream/server_admin.h"

namespace ferry::master {

struct RuntimeServer {
  std::string upstream;
  std::string server;  // as configured, or the address it was added with
  worker::AdminState state = worker::AdminState::ready;
  int weight = 0;         // set at run time (0: none)
  int config_weight = 0;  // the configuration's weight when `weight` was set
  bool added = false;
  bool backup = false;              // added: a backup
  std::int64_t slow_start_ms = 0;   // added: its slow start
  std::int64_t ready_since_ms = 0;  // when it last became ready (steady clock ms; not kept)
  std::uint32_t kill_epoch = 0;     // not kept either: a kill is for the sessions of now
};

// What a command names: an upstream and one of its servers.
struct ServerName {
  std::string upstream;
  std::string server;
};

class RuntimeServers {
 public:
  // The commands. Each returns why it was refused (nothing changed), or nothing.
  std::optional<std::string> set_state(const conf::Config& cfg, const ServerName& n,
                                       worker::AdminState state, bool kill, std::int64_t now_ms);
  std::optional<std::string> set_weight(const conf::Config& cfg, const ServerName& n, int weight,
                                        std::int64_t now_ms = 0);
  std::optional<std::string> add(const conf::Config& cfg, const ServerName& n, int weight,
                                 bool backup, std::int64_t slow_start_ms, std::int64_t now_ms);
  std::optional<std::string> remove(const conf::Config& cfg, const ServerName& n);
  std::optional<std::string> kill(const conf::Config& cfg, const ServerName& n);

  // A new configuration serves (a reload, or the start with the state file read): keeps what
  // still applies to it. Returns a line for each change it dropped, for the log.
  // `now_ms`: the steady clock (0: unknown, every slow start under way is kept).
  std::vector<std::string> reconcile(const conf::Config& cfg, std::int64_t now_ms = 0);

  // The records for ServerAdminTable::publish().
  [[nodiscard]] std::vector<worker::AdminRecord> records() const;
  [[nodiscard]] const std::vector<RuntimeServer>& servers() const noexcept { return servers_; }
  [[nodiscard]] const RuntimeServer* find(const ServerName& n) const noexcept;
  // Kill epochs only grow in a master's life (workers take a kill as new when it is above the
  // highest they saw): records put back from before a rejected reload keep the later count.
  [[nodiscard]] std::uint32_t kills() const noexcept { return kills_; }
  void keep_kills_above(std::uint32_t n) noexcept { kills_ = std::max(kills_, n); }

  // The state file's text, and reading it back: lines it cannot read are skipped and named in
  // `errors` ("LINE: why").
  [[nodiscard]] std::string serialize() const;
  void parse(std::string_view text, std::vector<std::string>& errors);

 private:
  RuntimeServer* find_mutable(const ServerName& n) noexcept;
  // Why a record for `n` would not fit the workers' table (its names, its places), or nothing.
  [[nodiscard]] std::optional<std::string> does_not_fit(const ServerName& n) const;
  // The configured server `n` names, or null (then `why` says what is wrong).
  static const conf::Server* configured(const conf::Config& cfg, const ServerName& n);
  // The record of an existing server (made for a configured one), or null with the reason.
  RuntimeServer* existing(const conf::Config& cfg, const ServerName& n, std::string& why);
  // Drops records that say nothing: a configured server ready at its configured weight, with no
  // kill to pass on and no slow start of the operator's under way at `now_ms` (0: unknown).
  void prune(const conf::Config& cfg, std::int64_t now_ms);

  std::vector<RuntimeServer> servers_;
  std::uint32_t kills_ = 0;  // every kill gets an epoch of its own
};

// Parses "UPSTREAM/SERVER"; nothing when it is not that.
std::optional<ServerName> parse_server_name(std::string_view text);

// Writes `text` to `path` atomically (a temporary file beside it, fsync, rename, fsync of the
// folder): a reader sees the old file or the new, never a part. The error's text, or nothing.
std::optional<std::string> write_file_atomically(const std::string& path, std::string_view text);

}  // namespace ferry::master
