// The schema of `tls`: in a proxy, termination (certificates, versions and suites, ALPN, client
// certificates, session tickets); in an upstream, origination (verification, SNI, a client
// certificate). Certificates, keys, CA files and suites are tried with OpenSSL as they are read.
#include <algorithm>
#include <string>

#include "conf/field.h"
#include "conf/schema.h"
#include "conf/tls_check.h"

namespace ferry::conf {
namespace {

// The checks read files: a reader that resolves no names (`ferry -s`, run by whoever may not
// be able to read the keys) checks none.
bool reads_files(const Reader& r) { return r.resolves(); }

bool is_list(const Setting& s) {
  return s.getType() == Setting::TypeArray || s.getType() == Setting::TypeList;
}

void read_protocols(Reader& r, const Setting& s, std::vector<TlsVersion>& out) {
  std::vector<TlsVersion> list;
  bool ok = true;
  r.strings(s, [&](const Setting& e) {
    const std::string name = e.c_str();
    if (name == "SSLv3" || name == "TLSv1" || name == "TLSv1.0" || name == "TLSv1.1") {
      r.error(e, "\"" + name +
                     "\" is refused: SSLv3, TLS 1.0 and TLS 1.1 are broken (allowed: \"TLSv1.2\", "
                     "\"TLSv1.3\")");
      ok = false;
    } else if (auto v = r.choice<TlsVersion>(e, kTlsVersions)) {
      list.push_back(*v);
    } else {
      ok = false;
    }
  });
  if (is_list(s) && s.getLength() == 0) r.error(s, "no protocol listed");
  if (!ok || list.empty()) return;
  std::sort(list.begin(), list.end());
  list.erase(std::unique(list.begin(), list.end()), list.end());
  out = std::move(list);
}

void print_protocols(Writer& w, std::string_view n, const std::vector<TlsVersion>& list) {
  std::vector<std::string> names;
  for (TlsVersion v : list) names.emplace_back(name_in<TlsVersion>(kTlsVersions, v));
  w.strings(n, names);
}

// A cipher list, tried with OpenSSL by `check`.
void read_suites(Reader& r, const Setting& s, std::string& out,
                 std::string (*check)(const std::string&)) {
  auto text = r.string(s, false);
  if (!text) return;
  if (const std::string why = check(*text); !why.empty()) {
    r.error(s, why);
    return;
  }
  out = std::move(*text);
}

// The fields both directions share, on `T::versions`.
template <typename T>
constexpr Field<T> protocols_field() {
  return {"protocols",
          [](Reader& r, const Setting& s, T& o) { read_protocols(r, s, o.versions.protocols); },
          [](Writer& w, std::string_view n, const T& o) {
            print_protocols(w, n, o.versions.protocols);
          }};
}
template <typename T>
constexpr Field<T> ciphers_field() {
  return {"ciphers",
          [](Reader& r, const Setting& s, T& o) {
            read_suites(r, s, o.versions.ciphers, check_ciphers);
          },
          [](Writer& w, std::string_view n, const T& o) { w.set_string(n, o.versions.ciphers); }};
}
template <typename T>
constexpr Field<T> ciphersuites_field() {
  return {
      "ciphersuites",
      [](Reader& r, const Setting& s, T& o) {
        read_suites(r, s, o.versions.ciphersuites, check_ciphersuites);
      },
      [](Writer& w, std::string_view n, const T& o) { w.set_string(n, o.versions.ciphersuites); }};
}

template <typename T>
constexpr Field<T> kernel_tls_field() {
  return {"kernel_tls",
          [](Reader& r, const Setting& s, T& o) { assign(o.versions.kernel_tls, r.boolean(s)); },
          [](Writer& w, std::string_view n, const T& o) { w.set(n, o.versions.kernel_tls); }};
}

// A CA file, loaded by OpenSSL now; printed only when given.
template <auto M>
constexpr Field<OwnerOf<M>> ca_field(std::string_view name) {
  return {name,
          [](Reader& r, const Setting& s, OwnerOf<M>& o) {
            auto path = r.string(s, false);
            if (!path) return;
            if (reads_files(r)) {
              if (const std::string why = check_ca_file(*path); !why.empty()) {
                r.error(s, why);
                return;
              }
            }
            o.*M = std::move(*path);
          },
          [](Writer& w, std::string_view n, const OwnerOf<M>& o) {
            if (!(o.*M).empty()) w.set_string(n, o.*M);
          }};
}

// Loads a certificate and its key with OpenSSL; the error is at the setting of the file at fault.
// True when the pair loaded (and was checked at all).
bool check_pair(Reader& r, const Setting& group, const CertificatePair& pair) {
  if (!reads_files(r) || pair.certificate.empty() || pair.key.empty()) return false;
  const PairError why = check_certificate_pair(pair);
  if (!why.text.empty()) r.error(group[why.in_key ? "key" : "certificate"], why.text);
  return why.text.empty();
}

// Two certificates serving the same names with the same type of key: OpenSSL keeps one per type
// and name set, so the later would silently replace the earlier.
void check_not_shadowed(Reader& r, const Setting& group, const CertificatePair& pair,
                        std::vector<std::pair<CertificateIdentity, std::string>>& seen) {
  CertificateIdentity id;
  std::string error;
  if (!certificate_identity(pair.certificate, id, error)) {
    r.error(group["certificate"], error);
    return;
  }
  for (const auto& [other, path] : seen) {
    if (other.names == id.names && other.key_type == id.key_type) {
      r.error(group["certificate"], "serves the same names with the same key type as \"" + path +
                                        "\", which it would replace: give one other names or "
                                        "another key type, or drop it");
      return;
    }
  }
  seen.emplace_back(std::move(id), pair.certificate);
}

constexpr Field<CertificatePair> kPair[] = {
    {"certificate",
     [](Reader& r, const Setting& s, CertificatePair& p) {
       assign(p.certificate, r.string(s, false));
     },
     [](Writer& w, std::string_view n, const CertificatePair& p) {
       w.set_string(n, p.certificate);
     },
     "a certificate's PEM file (its chain, leaf first)"},
    {"key",
     [](Reader& r, const Setting& s, CertificatePair& p) { assign(p.key, r.string(s, false)); },
     [](Writer& w, std::string_view n, const CertificatePair& p) { w.set_string(n, p.key); },
     "the certificate's private key file"},
};

void read_certificates(Reader& r, const Setting& s, ServerTls& t) {
  std::vector<std::pair<CertificateIdentity, std::string>> seen;
  r.groups(s, [&](const Setting& e) {
    CertificatePair pair;
    read_fields<CertificatePair>(r, e, kPair, pair);
    if (check_pair(r, e, pair)) check_not_shadowed(r, e, pair, seen);
    t.certificates.push_back(std::move(pair));
  });
  if (s.getType() == Setting::TypeList && s.getLength() == 0) {
    r.error(s, "a TLS proxy needs at least one certificate");
  }
}

void print_certificates(Writer& w, std::string_view n, const ServerTls& t) {
  print_list<CertificatePair>(w, n, all_of(t.certificates), [&](const CertificatePair& p) {
    print_fields<CertificatePair>(w, kPair, p);
  });
}

void read_alpn(Reader& r, const Setting& s, ServerTls& t) {
  std::vector<std::string> list;
  r.strings(s, [&](const Setting& e) {
    const std::string name = e.c_str();
    if (name.empty() || name.size() > 255) {
      r.error(e, "an ALPN protocol name has 1 to 255 bytes");
    } else if (std::find(list.begin(), list.end(), name) != list.end()) {
      r.error(e, "\"" + name + "\" is listed twice");
    } else {
      list.push_back(name);
    }
  });
  if (is_list(s) && s.getLength() == 0) {
    r.error(s, "no protocol listed (leave alpn out not to negotiate ALPN)");
  }
  t.alpn = std::move(list);
}

constexpr Field<ServerTls> kServerTls[] = {
    {"certificates", read_certificates, print_certificates,
     "a TLS proxy needs at least one certificate and its key"},
    protocols_field<ServerTls>(),
    ciphers_field<ServerTls>(),
    ciphersuites_field<ServerTls>(),
    kernel_tls_field<ServerTls>(),
    {"alpn", read_alpn,
     [](Writer& w, std::string_view n, const ServerTls& t) {
       if (!t.alpn.empty()) w.strings(n, t.alpn);
     }},
    ca_field<&ServerTls::client_ca>("client_ca"),
    choice_field<&ServerTls::verify_client, kVerifyClient>("verify_client"),
    duration_field<&ServerTls::handshake_timeout, 1>("handshake_timeout"),
    bool_field<&ServerTls::session_tickets>("session_tickets"),
    duration_field<&ServerTls::session_ticket_lifetime, 1000>("session_ticket_lifetime"),
};

// The client certificate's two files, flat in the group: both or neither.
template <auto M>
constexpr Field<ClientTls> client_pair_field(std::string_view name) {
  return {name,
          [](Reader& r, const Setting& s, ClientTls& t) {
            assign(t.client_certificate.*M, r.string(s, false));
          },
          [](Writer& w, std::string_view n, const ClientTls& t) {
            if (!(t.client_certificate.*M).empty()) w.set_string(n, t.client_certificate.*M);
          }};
}

constexpr Field<ClientTls> kClientTls[] = {
    bool_field<&ClientTls::verify>("verify"),
    ca_field<&ClientTls::ca>("ca"),
    {"server_name",
     [](Reader& r, const Setting& s, ClientTls& t) {
       auto name = r.string(s, false);
       if (!name) return;
       if (name->find_first_of(" \t/:") != std::string::npos) {
         r.error(s, "\"" + *name + "\" is not a host name");
         return;
       }
       t.server_name = std::move(*name);
     },
     [](Writer& w, std::string_view n, const ClientTls& t) {
       if (!t.server_name.empty()) w.set_string(n, t.server_name);
     }},
    client_pair_field<&CertificatePair::certificate>("certificate"),
    client_pair_field<&CertificatePair::key>("key"),
    protocols_field<ClientTls>(),
    ciphers_field<ClientTls>(),
    ciphersuites_field<ClientTls>(),
    kernel_tls_field<ClientTls>(),
    bool_field<&ClientTls::session_reuse>("session_reuse"),
};

}  // namespace

void read_server_tls(Reader& r, const Setting& s, std::optional<ServerTls>& out) {
  if (!r.is_group(s)) return;
  ServerTls t;
  read_fields<ServerTls>(r, s, kServerTls, t);
  const Setting* verify = Reader::member(s, "verify_client");
  if (verify == nullptr) {
    // A CA given is a CA to check against: asked for, not optional (nginx needs both said).
    if (!t.client_ca.empty()) t.verify_client = VerifyClient::on;
  } else if (t.verify_client != VerifyClient::off && Reader::member(s, "client_ca") == nullptr) {
    r.error(*verify,
            "needs client_ca, the CA certificates the clients' certificates must chain to");
  } else if (t.verify_client == VerifyClient::off && !t.client_ca.empty()) {
    r.warn(s["client_ca"], "no effect with verify_client = \"off\"");
  }
  out = std::move(t);
}

void print_server_tls(Writer& w, std::string_view name, const std::optional<ServerTls>& tls) {
  if (tls) print_group<ServerTls>(w, name, kServerTls, *tls);
}

void read_client_tls(Reader& r, const Setting& s, std::optional<ClientTls>& out) {
  if (!r.is_group(s)) return;
  ClientTls t;
  read_fields<ClientTls>(r, s, kClientTls, t);
  const Setting* certificate = Reader::member(s, "certificate");
  const Setting* key = Reader::member(s, "key");
  if (certificate != nullptr && key == nullptr) {
    r.missing(s, "key", "a client certificate needs its key");
  } else if (key != nullptr && certificate == nullptr) {
    r.missing(s, "certificate", "a key needs its client certificate");
  } else {
    check_pair(r, s, t.client_certificate);
  }
  out = std::move(t);
}

void print_client_tls(Writer& w, std::string_view name, const std::optional<ClientTls>& tls) {
  if (tls) print_group<ClientTls>(w, name, kClientTls, *tls);
}

}  // namespace ferry::conf
