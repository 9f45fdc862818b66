// Tests of a proxy's `routes` and `preread_timeout` (issue 22): routes by server name and ALPN
// read with their defaults, names lowercased, -T's round trip, and every mistake refused at its
// line with what is wrong.
#include <string>

#include <gtest/gtest.h>

#include "conf/loader.h"
#include "conf/printer.h"
#include "tests/unit/conf/load_errors.h"

namespace ferry::conf {
namespace {

const std::string kUpstreams =
    "upstreams = ( { name = \"a\"; servers = ( { address = \"127.0.0.1:1\"; } ); },\n"
    "  { name = \"b\"; servers = ( { address = \"127.0.0.1:2\"; } ); } );\n";

LoadResult load_proxy(const std::string& settings) {
  return load_text(kUpstreams + "proxies = ( { name = \"p\"; listen = \"127.0.0.1:7001\";\n" +
                       settings + "\n} );\n",
                   "r.conf", ".");
}

TEST(RoutesTest, RoutesAreReadInOrderWithTheirDefaultsAndRoundTrip) {
  const LoadResult r = load_proxy(
      "upstream = \"a\"; preread_timeout = \"5s\";\n"
      "routes = ( { name = \"web\"; server_name = [\"WWW.Example.com\", \"*.example.org\"]; "
      "upstream = \"b\"; },\n"
      "  { alpn = [\"h2\", \"http/1.1\"]; upstream = \"a\"; },\n"
      "  { server_name = \"db.test\"; upstream = \"127.0.0.1:5432\"; } );");
  ASSERT_TRUE(r.config) << errors_of(r);
  const Proxy& p = r.config->proxies[0];
  EXPECT_EQ(p.upstream, "a");
  EXPECT_EQ(p.preread_timeout, Msec{5'000});
  ASSERT_EQ(p.routes.size(), 3U);
  EXPECT_EQ(p.routes[0].name, "web");
  EXPECT_EQ(p.routes[0].server_names,
            (std::vector<std::string>{"www.example.com", "*.example.org"}));
  EXPECT_EQ(p.routes[0].upstream, "b");
  EXPECT_EQ(p.routes[1].name, "a");  // the upstream's name when none is given
  EXPECT_EQ(p.routes[1].alpn, (std::vector<std::string>{"h2", "http/1.1"}));
  EXPECT_TRUE(p.routes[1].server_names.empty());
  EXPECT_EQ(p.routes[2].name, "127.0.0.1:5432");
  EXPECT_EQ(p.routes[2].upstream, "127.0.0.1:5432");  // an implicit upstream, as a proxy's
  ASSERT_TRUE(p.routes[2].upstream_address);

  const std::string dumped = to_text(*r.config);
  const LoadResult again = load_text(dumped, "dumped.conf", ".");
  ASSERT_TRUE(again.config) << errors_of(again) << dumped;
  EXPECT_TRUE(*again.config == *r.config) << dumped;
}

TEST(RoutesTest, ARoutingProxyMayHaveNoDefaultUpstream) {
  const LoadResult r = load_proxy("routes = ( { server_name = \"a.test\"; upstream = \"a\"; } );");
  ASSERT_TRUE(r.config) << errors_of(r);
  EXPECT_TRUE(r.config->proxies[0].upstream.empty());
  EXPECT_EQ(r.config->proxies[0].preread_timeout, Msec{30'000});  // nginx's default
  const std::string dumped = to_text(*r.config);
  EXPECT_EQ(dumped.find("upstream = \"\""), std::string::npos) << dumped;
  const LoadResult again = load_text(dumped, "dumped.conf", ".");
  ASSERT_TRUE(again.config) << errors_of(again) << dumped;
  EXPECT_TRUE(*again.config == *r.config);
}

TEST(RoutesTest, MistakesAreRefusedAtTheirLine) {
  const struct {
    std::string settings;
    std::string error;
  } cases[] = {
      {"", "r.conf:3: proxies.[0].upstream: missing: name an upstream"},
      {"upstream = \"a\";\nroutes = ( );", "r.conf:5: proxies.[0].routes: routes lists no route"},
      {"routes = (\n{ server_name = \"a.test\"; } );",
       "r.conf:5: proxies.[0].routes.[0].upstream: missing: a route needs an upstream"},
      {"routes = (\n{ server_name = \"a b\"; upstream = \"a\"; } );",
       "r.conf:5: proxies.[0].routes.[0].server_name: \"a b\" is not a server name"},
      {"routes = (\n{ server_name = \"a.*.test\"; upstream = \"a\"; } );",
       "\"a.*.test\" is not a server name"},
      {"routes = (\n{ server_name = \"a.test.\"; upstream = \"a\"; } );",
       "\"a.test.\" is not a server name"},
      {"routes = (\n{ upstream = \"nope\"; } );",
       "r.conf:5: proxies.[0].routes.[0].upstream: no upstream named \"nope\""},
      {"routes = ( { upstream = \"a\"; },\n{ upstream = \"a\"; } );",
       "r.conf:5: proxies.[0].routes.[1]: a route named \"a\" already exists"},
      {"upstream = \"a\"; routes = (\n{ name = \"default\"; upstream = \"b\"; } );",
       "r.conf:5: proxies.[0].routes.[0].name: a route named \"default\" already exists"},
      {"routes = (\n{ upstream = \"a\"; server = \"x\"; } );",
       "r.conf:5: proxies.[0].routes.[0].server: unknown setting"},
      {"routes = (\n{ alpn = [\"\"]; upstream = \"a\"; } );", "proxies.[0].routes.[0].alpn"},
      {"upstream = \"a\"; tls = { certificates = ( { certificate = \"/nonexistent\"; key = "
       "\"/nonexistent\"; } ); };\nroutes = ( { upstream = \"b\"; } );",
       "r.conf:5: proxies.[0].routes: routes pass TLS through by its ClientHello and tls "
       "terminates it"},
      {"upstream = \"a\"; routes = ( { upstream = \"b\"; } );\npreread_timeout = \"0ms\";",
       "r.conf:5: proxies.[0].preread_timeout:"},
  };
  for (const auto& c : cases) {
    const LoadResult r = load_proxy(c.settings);
    EXPECT_FALSE(r.config) << c.settings;
    EXPECT_NE(errors_of(r).find(c.error), std::string::npos)
        << c.settings << "\ngot: " << errors_of(r);
  }
}

TEST(RoutesTest, PrereadTimeoutWithoutRoutesIsAWarning) {
  const LoadResult r = load_proxy("upstream = \"a\"; preread_timeout = \"5s\";");
  ASSERT_TRUE(r.config) << errors_of(r);
  ASSERT_EQ(r.warnings.size(), 1U);
  EXPECT_NE(r.warnings[0].to_string().find("no effect without routes"), std::string::npos);
}

}  // namespace
}  // namespace ferry::conf

namespace ferry::conf {
namespace {

// A route passes the client's TLS through: to an upstream that makes TLS to its servers it
// would be wrapped in a second TLS (and the session would no longer move at reloads).
TEST(RoutesTest, ARouteToAnUpstreamThatOriginatesTlsIsRefused) {
  const std::string upstreams =
      "upstreams = ( { name = \"plain\"; servers = ( { address = \"127.0.0.1:1\"; } ); },\n"
      "  { name = \"secure\"; servers = ( { address = \"127.0.0.1:2\"; } ); tls = { verify = "
      "false; }; } );\n";
  const LoadResult routed =
      load_text(upstreams +
                    "proxies = ( { name = \"p\"; listen = \"127.0.0.1:7001\";\n"
                    "routes = ( { upstream = \"plain\"; },\n"
                    "{ name = \"s\"; upstream = \"secure\"; } ); } );\n",
                "r.conf", ".");
  EXPECT_FALSE(routed.config);
  EXPECT_NE(errors_of(routed).find("r.conf:5: proxies.[0].routes.[1].upstream: upstream "
                                   "\"secure\" makes TLS to its servers"),
            std::string::npos)
      << errors_of(routed);
  const LoadResult fallback = load_text(
      upstreams +
          "proxies = ( { name = \"p\"; listen = \"127.0.0.1:7001\"; upstream = \"secure\";\n"
          "routes = ( { upstream = \"plain\"; } ); } );\n",
      "r.conf", ".");
  EXPECT_NE(errors_of(fallback).find("the default route passes the client's TLS through"),
            std::string::npos)
      << errors_of(fallback);
}

}  // namespace
}  // namespace ferry::conf
