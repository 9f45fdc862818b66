// The names of the configuration's enumerations, one table each, shared by the reader (text →
// value) and the printer (value → text) so that the two cannot disagree.
#pragma once

#include <span>
#include <string_view>

#include "conf/config.h"

namespace ferry::conf {

template <typename E>
struct Named {
  std::string_view name;
  E value;
};

inline constexpr Named<LogLevel> kLogLevels[] = {
    {"trace", LogLevel::trace}, {"debug", LogLevel::debug}, {"info", LogLevel::info},
    {"warn", LogLevel::warn},   {"error", LogLevel::error}, {"critical", LogLevel::critical}};
inline constexpr Named<CpuAffinity> kCpuAffinities[] = {{"auto", CpuAffinity::automatic},
                                                        {"off", CpuAffinity::off}};
inline constexpr Named<Balance> kBalances[] = {{"round_robin", Balance::round_robin},
                                               {"least_conn", Balance::least_conn},
                                               {"hash", Balance::hash}};
inline constexpr Named<ProxyProtocol> kProxyProtocols[] = {
    {"off", ProxyProtocol::off}, {"v1", ProxyProtocol::v1}, {"v2", ProxyProtocol::v2}};

inline constexpr Named<ReloadSessions> kReloadSessions[] = {{"move", ReloadSessions::move},
                                                            {"drain", ReloadSessions::drain}};
// OpenSSL's names of the versions, as nginx's ssl_protocols and HAProxy's ssl-min-ver write them.
inline constexpr Named<TlsVersion> kTlsVersions[] = {{"TLSv1.2", TlsVersion::tls1_2},
                                                     {"TLSv1.3", TlsVersion::tls1_3}};
inline constexpr Named<VerifyClient> kVerifyClient[] = {
    {"off", VerifyClient::off}, {"optional", VerifyClient::optional}, {"on", VerifyClient::on}};

// The name of `value` in `table` (the first entry's for a value not in it).
template <typename E>
constexpr std::string_view name_in(std::span<const Named<E>> table, E value) {
  for (const auto& [name, v] : table) {
    if (v == value) return name;
  }
  return table.front().name;
}

}  // namespace ferry::conf
