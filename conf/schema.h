// The configuration's schema: each group's settings as a table of Fields (conf/field.h), read
// from libconfig's tree into a Config and printed back from one for `ferry -T`.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "conf/config.h"
#include "conf/reader.h"
#include "conf/writer.h"

namespace ferry::conf {

// The whole file (schema.cc). `r.upstreams` is set to cfg.upstreams while the proxies are read.
void read_root(Reader& r, const Setting& root, Config& cfg);
void print_root(Writer& w, const Config& cfg);

// One group of `proxies` (schema_proxy.cc): the upstream it names must be in `*r.upstreams`,
// or its "host:port" is added there as an upstream of its own.
Proxy read_proxy(Reader& r, const Setting& g);
void print_proxy(Writer& w, const Proxy& p);

// A proxy's or an upstream's name: not empty, and not beginning with '(' (the statistics' own
// entries, such as "(reclaimed)", are named so).
void read_name(Reader& r, const Setting& s, std::string& out);
// A server's addresses, resolved now (schema.cc). A name that does not resolve is a warning
// (the workers retry it every resolve_interval), or an error when `up` requires it. `at`: the
// setting a warning or error points at.
void resolve_server(Reader& r, const Setting& at, const Upstream& up, Server& sv);

// A proxy's `tls` group (termination) and an upstream's (origination), schema_tls.cc: the
// certificates, keys, cipher lists and CA files are tried with OpenSSL as they are read.
void read_server_tls(Reader& r, const Setting& s, std::optional<ServerTls>& out);
void print_server_tls(Writer& w, std::string_view name, const std::optional<ServerTls>& tls);
void read_client_tls(Reader& r, const Setting& s, std::optional<ClientTls>& out);
void print_client_tls(Writer& w, std::string_view name, const std::optional<ClientTls>& tls);

}  // namespace ferry::conf
