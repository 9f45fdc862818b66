// Tests of worker/proxy/routes: server-name patterns, a route's match on name and ALPN, and the
// choice in the order written with the default last.
#include "worker/proxy/routes.h"

#include <gtest/gtest.h>

namespace ferry::worker {
namespace {

TEST(RoutesTest, ServerNamePatterns) {
  EXPECT_TRUE(server_name_matches("a.test", "a.test"));
  EXPECT_FALSE(server_name_matches("a.test", "b.a.test"));
  EXPECT_FALSE(server_name_matches("a.test", "a.tes"));
  EXPECT_TRUE(server_name_matches("*.a.test", "b.a.test"));
  EXPECT_TRUE(server_name_matches("*.a.test", "c.b.a.test"));
  EXPECT_FALSE(server_name_matches("*.a.test", "a.test"));
  EXPECT_FALSE(server_name_matches("*.a.test", "ba.test"));
  EXPECT_FALSE(server_name_matches("*.a.test", ".a.test"));
  EXPECT_FALSE(server_name_matches("*.a.test", ""));
}

conf::Route route(std::vector<std::string> names, std::vector<std::string> alpn,
                  std::string upstream) {
  conf::Route r;
  r.name = upstream;
  r.server_names = std::move(names);
  r.alpn = std::move(alpn);
  r.upstream = std::move(upstream);
  return r;
}

TEST(RoutesTest, ARouteNeedsBothItsNameAndItsAlpn) {
  const conf::Route both = route({"a.test"}, {"h2"}, "u");
  const std::vector<std::string> h2 = {"http/1.1", "h2"};
  const std::vector<std::string> http1 = {"http/1.1"};
  EXPECT_TRUE(route_matches(both, "a.test", h2));
  EXPECT_FALSE(route_matches(both, "a.test", http1));
  EXPECT_FALSE(route_matches(both, "b.test", h2));
  EXPECT_FALSE(route_matches(both, "", h2));
  const conf::Route any = route({}, {}, "u");
  EXPECT_TRUE(route_matches(any, "", {}));
  const conf::Route by_alpn = route({}, {"h2"}, "u");
  EXPECT_TRUE(route_matches(by_alpn, "", h2));
  EXPECT_FALSE(route_matches(by_alpn, "x", {}));
}

TEST(RoutesTest, TheFirstMatchingRouteWinsAndTheDefaultComesLast) {
  conf::Proxy p;
  p.upstream = "fallback";
  p.routes = {route({"*.a.test"}, {}, "wild"), route({"x.a.test"}, {}, "exact"),
              route({}, {"h2"}, "h2")};
  Balancer* fake[4] = {reinterpret_cast<Balancer*>(1), reinterpret_cast<Balancer*>(2),
                       reinterpret_cast<Balancer*>(3), reinterpret_cast<Balancer*>(4)};
  const RouteTable with_default(p, std::span(fake, 3), fake[3], {});
  const auto chosen = [&](const RouteTable& t, std::string name, std::vector<std::string> alpn) {
    const RouteTarget* r = t.choose({std::move(name), std::move(alpn)});
    return r == nullptr ? std::string("(none)") : std::string(r->name);
  };
  EXPECT_EQ(chosen(with_default, "x.a.test", {}), "wild");  // in the order written
  EXPECT_EQ(chosen(with_default, "b.test", {"h2"}), "h2");
  EXPECT_EQ(chosen(with_default, "b.test", {}), "default");
  EXPECT_EQ(with_default.choose({"b.test", {}})->balancer, fake[3]);
  EXPECT_EQ(with_default.choose({"b.test", {}})->upstream, "fallback");

  p.upstream.clear();
  const RouteTable without(p, std::span(fake, 3), nullptr, {});
  EXPECT_EQ(chosen(without, "b.test", {}), "(none)");
  EXPECT_EQ(without.fallback(), nullptr);
}

}  // namespace
}  // namespace ferry::worker
