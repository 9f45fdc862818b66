// Tests of conf/loader and conf/printer: defaults, includes from the including file's folder,
// the spec's example, and -T's round trip to an equal Config.
#include "conf/loader.h"
#include "tests/unit/conf/load_errors.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "conf/lexical.h"
#include "conf/printer.h"
#include "conf/source.h"
#include "tests/support/process.h"
#include "tests/support/shipped_configs.h"
#include "tests/support/test_ca.h"

namespace ferry::conf {
namespace {

const std::string kExample = test::source_root() + "/packaging/ferry.conf";

TEST(LoaderTest, AnEmptyFileGivesEveryDefault) {
  const LoadResult r = load_text("", "empty.conf", ".");
  ASSERT_TRUE(r.config) << errors_of(r);
  const Config& c = *r.config;
  EXPECT_EQ(c.worker_processes, 1);
  EXPECT_EQ(c.worker_connections, 16384);
  EXPECT_EQ(c.worker_shutdown_timeout, Msec{30'000});
  EXPECT_EQ(c.pid_file, "/run/ferry/ferry.pid");
  EXPECT_EQ(c.log.level, LogLevel::info);
  EXPECT_EQ(c.log.path, "stderr");
  EXPECT_FALSE(c.events.accept_mutex);
  EXPECT_EQ(c.events.accept_mutex_delay, Msec{500});
  EXPECT_EQ(c.events.epoll_events, 512);
  EXPECT_EQ(c.thread_pool.threads, 4);
  EXPECT_EQ(c.thread_pool.max_queue, 65536);
  EXPECT_TRUE(c.proxies.empty());
  EXPECT_FALSE(c.status);
  EXPECT_EQ(c.reload_sessions, ReloadSessions::move);
}

TEST(LoaderTest, AutoWorkersAreTheOnlineCpus) {
  const LoadResult r = load_text("worker_processes = \"auto\";", "a.conf", ".");
  ASSERT_TRUE(r.config) << errors_of(r);
  EXPECT_EQ(r.config->worker_processes, static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN)));
  EXPECT_TRUE(r.config->worker_processes_auto);
}

TEST(LoaderTest, TheShippedExampleLoads) {
  const LoadResult r = load_file(kExample);
  ASSERT_TRUE(r.config) << errors_of(r);
  ASSERT_EQ(r.config->proxies.size(), 1U);
  const Proxy& p = r.config->proxies[0];
  EXPECT_EQ(p.name, "web");
  EXPECT_EQ(p.upstream, "app");
  ASSERT_EQ(p.listen.size(), 2U);
  EXPECT_EQ(p.listen[0].text, "127.0.0.1:8080");
  EXPECT_EQ(p.listen[1].text, "[::1]:8080");
  ASSERT_EQ(r.config->upstreams.size(), 1U);
  EXPECT_EQ(r.config->upstreams[0].servers.size(), 2U);
  EXPECT_TRUE(r.config->upstreams[0].health_check);
  EXPECT_TRUE(r.config->status);
  EXPECT_EQ(p.access.size(), 3U);
  EXPECT_EQ(p.buffer_size, 16384U);
}

TEST(LoaderTest, IncludesAreTakenFromTheIncludingFilesFolder) {
  test::TempDir dir;
  const std::string main = dir.write("main.conf",
                                     "worker_connections = 100;\n"
                                     "@include \"conf.d/events.conf\"\n"
                                     "pid_file = \"/tmp/x.pid\";\n");
  dir.write("conf.d/events.conf", "events = { multi_accept = true; };\n@include \"more.conf\"\n");
  dir.write("conf.d/more.conf", "\nthread_pool = { threads = 0; };\n");
  const LoadResult r = load_file(main);
  ASSERT_EQ(r.errors.size(), 1U) << errors_of(r);
  // The error is reported in the file and at the line where it is written.
  EXPECT_EQ(r.errors[0].file, dir.path() + "/conf.d/more.conf");
  EXPECT_EQ(r.errors[0].line, 2);
  EXPECT_EQ(r.errors[0].setting, "thread_pool.threads");
}

TEST(LoaderTest, LinesAfterAnIncludeKeepTheirNumbers) {
  test::TempDir dir;
  const std::string main = dir.write("main.conf",
                                     "@include \"a.conf\"\n"
                                     "\n"
                                     "worker_connections = -1;\n");
  dir.write("a.conf", "log = { level = \"info\"; };\n\n\n\n");
  const LoadResult r = load_file(main);
  ASSERT_EQ(r.errors.size(), 1U) << errors_of(r);
  EXPECT_EQ(r.errors[0].to_string(),
            main + ":3: worker_connections: -1 is out of range (2-1048576)");
}

TEST(LoaderTest, DumpLoadsBackToAnEqualConfig) {
  const std::string full = R"(
    worker_processes = 3;
    worker_connections = 1000;
    worker_rlimit_nofile = 4096;
    worker_shutdown_timeout = "1m30s";
    worker_cpu_affinity = "off";
    reload_sessions = "drain";
    pid_file = "/tmp/p \"quoted\".pid";
    log = { level = "debug"; path = "/tmp/ferry.log"; };
    events = { accept_mutex = true; accept_mutex_delay = "100ms"; multi_accept = true; epoll_events = 64; };
    thread_pool = { threads = 2; max_queue = 10; };
    upstreams = (
      { name = "a"; balance = "least_conn"; resolve_interval = "0"; slow_start = "30s";
        servers = ( { address = "127.0.0.1:1"; weight = 5; max_fails = 0; fail_timeout = "1s";
                      max_conns = 10; backup = true; slow_start = "0"; },
                    { address = "[::1]:2"; down = true; } );
        health_check = { interval = "2s"; timeout = "250ms"; fails = 2; passes = 1;
                         send = "PING\r\n"; expect = "+PONG"; }; },
      { name = "b"; balance = "hash"; servers = ( { address = "localhost:3"; } ); UPSTREAM_TLS }
    );
    proxies = (
      { name = "p1"; listen = [ "127.0.0.1:7001", "[::1]:7001" ]; upstream = "a";
        reuseport = true; backlog = 100; deferred_accept = true; connect_timeout = "2s"; idle_timeout = "0";
        half_close = false; next_upstream_tries = 0; next_upstream_timeout = "3s"; buffer_size = "64k";
        splice = false; tcp_nodelay = false; so_keepalive = true; fastopen_connect = true;
        send_proxy_protocol = "v2";
        accept_proxy_protocol = true; access = [ "allow 10.0.0.0/8", "deny all" ];
        accept_proxy_protocol_from = [ "10.1.0.0/16", "::1" ];
        max_conns_per_client = 7; client_ipv4_prefix = 24; client_ipv6_prefix = 56;
        access_log = "off"; reload_sessions = "move"; },
      { name = "p2"; listen = "*:7002"; upstream = "127.0.0.1:9999"; buffer_size = 5000; PROXY_TLS }
    );
    status = { listen = "127.0.0.1:9145"; access = [ "allow 127.0.0.1" ]; };
  )";
  // TLS at both ends (more in tls_settings_test.cc), with certificates made for the test.
  const test::TempDir dir;
  test::TestCa ca(dir.path());
  const test::Issued server = ca.issue("server", {"a.test"});
  const test::Issued client = ca.issue("client", {"client.test"}, {}, test::KeyType::rsa);
  std::string text = full;
  text.replace(text.find("UPSTREAM_TLS"), 12,
               "tls = { ca = \"" + ca.cert_path() + "\"; certificate = \"" + client.cert_path +
                   "\"; key = \"" + client.key_path + "\"; server_name = \"b.test\"; };");
  text.replace(text.find("PROXY_TLS"), 9,
               "tls = { certificates = ( { certificate = \"" + server.cert_path + "\"; key = \"" +
                   server.key_path + "\"; } ); alpn = \"h2\"; client_ca = \"" + ca.cert_path() +
                   "\"; };");
  const LoadResult first = load_text(text, "full.conf", ".");
  ASSERT_TRUE(first.config) << errors_of(first);
  const std::string dumped = to_text(*first.config);
  const LoadResult second = load_text(dumped, "dumped.conf", ".");
  ASSERT_TRUE(second.config) << errors_of(second) << dumped;
  EXPECT_TRUE(*first.config == *second.config) << dumped;
  EXPECT_EQ(to_text(*second.config), dumped);
  // Spot checks that the values were really read, not left at their defaults.
  EXPECT_EQ(first.config->proxies[1].upstream_address->text, "127.0.0.1:9999");
  EXPECT_EQ(first.config->upstreams[0].health_check->send, "PING\r\n");
  EXPECT_EQ(first.config->worker_shutdown_timeout, Msec{90'000});
  EXPECT_EQ(first.config->proxies[0].accept_proxy_protocol_from.size(), 2U);
  EXPECT_EQ(first.config->proxies[0].client_ipv6_prefix, 56);
  EXPECT_FALSE(first.config->proxies[0].half_close);
  EXPECT_TRUE(first.config->proxies[1].half_close);
  EXPECT_TRUE(first.config->proxies[0].deferred_accept);
  EXPECT_FALSE(first.config->proxies[1].deferred_accept);
  EXPECT_TRUE(first.config->proxies[0].fastopen_connect);
  EXPECT_FALSE(first.config->proxies[1].fastopen_connect);
  EXPECT_EQ(first.config->reload_sessions, ReloadSessions::drain);
  EXPECT_EQ(first.config->proxies[0].reload_sessions, ReloadSessions::move);
  EXPECT_EQ(first.config->proxies[1].reload_sessions, ReloadSessions::drain);
  EXPECT_EQ(first.config->upstreams[0].slow_start, Msec{30'000});
  EXPECT_EQ(first.config->upstreams[0].servers[0].slow_start, Msec{0});
  EXPECT_FALSE(first.config->upstreams[0].servers[1].slow_start) << "follows the upstream's";
  EXPECT_EQ(first.config->proxies[1].tls->verify_client, VerifyClient::on);
  EXPECT_EQ(first.config->upstreams[1].tls->server_name, "b.test");
}

// slow_start: off by default; on an upstream, and on a server (which overrides it); refused
// with hash balancing and when not a duration, at its line.
TEST(LoaderTest, SlowStartIsAnUpstreamAndServerDurationNotForHash) {
  LoadResult r = load_text(
      "upstreams = ( { name = \"a\"; servers = ( { address = \"127.0.0.1:1\"; } ); },\n"
      "  { name = \"b\"; slow_start = \"30s\";\n"
      "    servers = ( { address = \"127.0.0.1:1\"; slow_start = \"5s\"; },\n"
      "                { address = \"127.0.0.1:2\"; } ); } );\n",
      "s.conf", ".");
  ASSERT_TRUE(r.config) << errors_of(r);
  EXPECT_EQ(r.config->upstreams[0].slow_start, Msec{0});
  EXPECT_FALSE(r.config->upstreams[0].servers[0].slow_start);
  EXPECT_EQ(r.config->upstreams[1].slow_start, Msec{30'000});
  EXPECT_EQ(r.config->upstreams[1].servers[0].slow_start, Msec{5'000});
  EXPECT_FALSE(r.config->upstreams[1].servers[1].slow_start);

  r = load_text(
      "upstreams = ( { name = \"a\"; balance = \"hash\";\n"
      "  slow_start = \"10s\";\n"
      "  servers = ( { address = \"127.0.0.1:1\";\n"
      "    slow_start = \"1s\"; } ); } );\n",
      "h.conf", ".");
  EXPECT_FALSE(r.config);
  const std::string why =
      ": slow_start cannot be used with balance = \"hash\" (a client's server follows its "
      "address alone)\n";
  EXPECT_EQ(errors_of(r), "h.conf:2: upstreams.[0].slow_start" + why +
                              "h.conf:4: upstreams.[0].servers.[0].slow_start" + why);
  // Off is fine with hash.
  r = load_text(
      "upstreams = ( { name = \"a\"; balance = \"hash\"; slow_start = \"0\";\n"
      "  servers = ( { address = \"127.0.0.1:1\"; slow_start = \"0\"; } ); } );\n",
      "h.conf", ".");
  EXPECT_TRUE(r.config) << errors_of(r);

  r = load_text(
      "upstreams = ( { name = \"a\";\n"
      "  servers = ( { address = \"127.0.0.1:1\"; slow_start = \"soon\"; } ); } );\n",
      "d.conf", ".");
  EXPECT_FALSE(r.config);
  EXPECT_EQ(errors_of(r),
            "d.conf:2: upstreams.[0].servers.[0].slow_start: \"soon\" is not a duration (use "
            "\"500ms\", \"5s\", \"1m\")\n");
}

// Issue 17: `upstream = "host:port"` on a proxy is an implicit upstream of that one server (every
// default, each address of the name, re-resolved), shared by the proxies that write the same
// text; -T writes the proxy's form, not the upstream.
TEST(LoaderTest, TheInlineUpstreamFormIsAnImplicitUpstreamOfOneServer) {
  const LoadResult r = load_text(
      "upstreams = ( { name = \"a\"; servers = ( { address = \"127.0.0.1:1\"; } ); } );\n"
      "proxies = ( { name = \"p1\"; listen = \"127.0.0.1:7001\"; upstream = \"localhost:9\"; },\n"
      "  { name = \"p2\"; listen = \"127.0.0.1:7002\"; upstream = \"localhost:9\"; },\n"
      "  { name = \"p3\"; listen = \"127.0.0.1:7003\"; upstream = \"a\"; } );\n",
      "i.conf", ".");
  ASSERT_TRUE(r.config) << errors_of(r);
  const Config& cfg = *r.config;
  ASSERT_EQ(cfg.upstreams.size(), 2U);
  const Upstream& made = cfg.upstreams[1];
  EXPECT_TRUE(made.implicit);
  EXPECT_FALSE(cfg.upstreams[0].implicit);
  EXPECT_EQ(made.name, "localhost:9");
  EXPECT_EQ(made.resolve_interval, Msec{30'000});
  ASSERT_EQ(made.servers.size(), 1U);
  EXPECT_EQ(made.servers[0].address.text, "localhost:9");
  EXPECT_FALSE(made.servers[0].addresses.empty());
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(cfg.proxies[i].upstream, "localhost:9");
    EXPECT_EQ(cfg.proxies[i].upstream_address->text, "localhost:9");
  }
  EXPECT_EQ(cfg.proxies[2].upstream, "a");
  const std::string dumped = to_text(cfg);
  EXPECT_EQ(dumped.find("name = \"localhost:9\""), std::string::npos) << dumped;
  EXPECT_NE(dumped.find("upstream = \"localhost:9\""), std::string::npos) << dumped;
}

// Issue 17: whose PROXY header is believed, and what counts as one client.
TEST(LoaderTest, ProxyProtocolSendersAndClientPrefixes) {
  const std::string head =
      "proxies = ( { name = \"p\"; listen = \"127.0.0.1:7001\"; upstream = \"127.0.0.1:1\";\n";
  LoadResult r = load_text(head +
                               "accept_proxy_protocol = true;\n"
                               "accept_proxy_protocol_from = [ \"10.0.0.0/8\", \"::1\" ]; } );",
                           "p.conf", ".");
  ASSERT_TRUE(r.config) << errors_of(r);
  EXPECT_TRUE(r.warnings.empty()) << r.warnings[0].to_string();
  const Proxy& p = r.config->proxies[0];
  ASSERT_EQ(p.accept_proxy_protocol_from.size(), 2U);
  EXPECT_EQ(p.accept_proxy_protocol_from[0].family, AF_INET);
  EXPECT_EQ(p.accept_proxy_protocol_from[0].prefix, 8);
  EXPECT_TRUE(p.accept_proxy_protocol_from[1].allow);
  EXPECT_EQ(p.client_ipv4_prefix, 32);
  EXPECT_EQ(p.client_ipv6_prefix, 64);
  // One string is a list of one; "all" believes every sender knowingly, without a warning.
  r = load_text(head + "accept_proxy_protocol = true; accept_proxy_protocol_from = \"all\"; } );",
                "p.conf", ".");
  ASSERT_TRUE(r.config) << errors_of(r);
  EXPECT_TRUE(r.warnings.empty());
  EXPECT_TRUE(r.config->proxies[0].accept_proxy_protocol_from[0].all);

  // Without the list every sender is believed, as before the list existed, with a warning at
  // accept_proxy_protocol's line.
  r = load_text(head + "accept_proxy_protocol = true; } );", "p.conf", ".");
  ASSERT_TRUE(r.config) << errors_of(r);
  EXPECT_TRUE(r.config->proxies[0].accept_proxy_protocol_from.empty());
  ASSERT_EQ(r.warnings.size(), 1U);
  EXPECT_EQ(r.warnings[0].to_string().rfind("p.conf:2: proxies.[0].accept_proxy_protocol: every "
                                            "sender is believed",
                                            0),
            0U)
      << r.warnings[0].to_string();
  // A list without accept_proxy_protocol does nothing: said so.
  r = load_text(head + "accept_proxy_protocol_from = [ \"::1\" ]; } );", "p.conf", ".");
  ASSERT_TRUE(r.config) << errors_of(r);
  ASSERT_EQ(r.warnings.size(), 1U);
  EXPECT_EQ(r.warnings[0].to_string(),
            "p.conf:2: proxies.[0].accept_proxy_protocol_from: no effect without "
            "accept_proxy_protocol = true");

  r = load_text(
      head + "max_conns_per_client = 4; client_ipv4_prefix = 0; client_ipv6_prefix = 128; } );",
      "p.conf", ".");
  ASSERT_TRUE(r.config) << errors_of(r);
  EXPECT_TRUE(r.warnings.empty()) << r.warnings[0].to_string();
  EXPECT_EQ(r.config->proxies[0].client_ipv4_prefix, 0);
  EXPECT_EQ(r.config->proxies[0].client_ipv6_prefix, 128);
  // The prefixes only say what one client is for max_conns_per_client: alone, said so.
  r = load_text(
      head + "client_ipv4_prefix = 24;\nclient_ipv6_prefix = 56;\nmax_conns_per_client = 0; } );",
      "p.conf", ".");
  ASSERT_TRUE(r.config) << errors_of(r);
  ASSERT_EQ(r.warnings.size(), 2U);
  EXPECT_EQ(r.warnings[0].to_string(),
            "p.conf:2: proxies.[0].client_ipv4_prefix: no effect without max_conns_per_client");
  EXPECT_EQ(r.warnings[1].to_string(),
            "p.conf:3: proxies.[0].client_ipv6_prefix: no effect without max_conns_per_client");
  r = load_text(head +
                    "accept_proxy_protocol = true;\naccept_proxy_protocol_from = [ \"::1\", "
                    "\"10.0.0.0/33\" ];\nclient_ipv6_prefix = 129; } );",
                "p.conf", ".");
  EXPECT_FALSE(r.config);
  EXPECT_EQ(errors_of(r),
            "p.conf:3: proxies.[0].accept_proxy_protocol_from.[1]: \"10.0.0.0/33\": prefix length "
            "must be 0-32\n"
            "p.conf:4: proxies.[0].client_ipv6_prefix: 129 is out of range (0-128)\n");
}

// Issue 20: what a reload does with a proxy's established sessions. "move" unless said; the
// top level's value is the default of every proxy that does not set its own, wherever in the
// file it stands; -T prints both and loads back the same.
TEST(LoaderTest, ReloadSessionsDefaultsToMoveAndTheTopLevelIsTheProxiesDefault) {
  const std::string upstreams =
      "upstreams = ( { name = \"a\"; servers = ( { address = \"127.0.0.1:1\"; } ); } );\n";
  const auto proxy = [](int n, std::string_view own) {
    return "{ name = \"p" + std::to_string(n) +
           "\"; listen = \"127.0.0.1:" + std::to_string(7000 + n) + "\"; upstream = \"a\"; " +
           std::string(own) + " }";
  };
  const std::string three = "proxies = ( " + proxy(1, "") + ",\n" +
                            proxy(2, "reload_sessions = \"move\";") + ",\n" +
                            proxy(3, "reload_sessions = \"drain\";") + " );\n";

  LoadResult r = load_text(upstreams + three, "m.conf", ".");
  ASSERT_TRUE(r.config) << errors_of(r);
  EXPECT_EQ(r.config->reload_sessions, ReloadSessions::move);
  EXPECT_EQ(r.config->proxies[0].reload_sessions, ReloadSessions::move);
  EXPECT_EQ(r.config->proxies[1].reload_sessions, ReloadSessions::move);
  EXPECT_EQ(r.config->proxies[2].reload_sessions, ReloadSessions::drain);

  // The top level after the proxies in the file: still their default.
  for (const std::string& text : {"reload_sessions = \"drain\";\n" + upstreams + three,
                                  upstreams + three + "reload_sessions = \"drain\";\n"}) {
    r = load_text(text, "d.conf", ".");
    ASSERT_TRUE(r.config) << errors_of(r);
    const Config& cfg = *r.config;
    EXPECT_EQ(cfg.reload_sessions, ReloadSessions::drain);
    EXPECT_EQ(cfg.proxies[0].reload_sessions, ReloadSessions::drain) << text;
    EXPECT_EQ(cfg.proxies[1].reload_sessions, ReloadSessions::move) << text;
    EXPECT_EQ(cfg.proxies[2].reload_sessions, ReloadSessions::drain) << text;

    // -T: the top level's value and every proxy's, the inherited one written out.
    const std::string dumped = to_text(cfg);
    EXPECT_NE(dumped.find("reload_sessions = \"drain\";"), std::string::npos) << dumped;
    const LoadResult back = load_text(dumped, "dumped.conf", ".");
    ASSERT_TRUE(back.config) << errors_of(back) << dumped;
    EXPECT_TRUE(*back.config == cfg) << dumped;
    EXPECT_EQ(to_text(*back.config), dumped);
    // Printed once at the top level and once per proxy.
    std::size_t printed = 0;
    for (auto at = dumped.find("reload_sessions"); at != std::string::npos;
         at = dumped.find("reload_sessions", at + 1)) {
      ++printed;
    }
    EXPECT_EQ(printed, 4U) << dumped;
  }
}

TEST(LoaderTest, AReloadSessionsValueNotMoveOrDrainIsAnErrorAtItsLine) {
  LoadResult r =
      load_text("worker_connections = 100;\nreload_sessions = \"moove\";\n", "b.conf", ".");
  EXPECT_FALSE(r.config);
  EXPECT_EQ(errors_of(r),
            "b.conf:2: reload_sessions: \"moove\" is not one of \"move\", \"drain\"\n");
  r = load_text(
      "upstreams = ( { name = \"a\"; servers = ( { address = \"127.0.0.1:1\"; } ); } );\n"
      "proxies = ( { name = \"p\"; listen = \"127.0.0.1:7001\"; upstream = \"a\";\n"
      "  reload_sessions = \"moove\"; } );\n",
      "b.conf", ".");
  EXPECT_FALSE(r.config);
  EXPECT_EQ(errors_of(r),
            "b.conf:3: proxies.[0].reload_sessions: \"moove\" is not one of \"move\", \"drain\"\n");
  // Not a string at all.
  r = load_text("reload_sessions = 1;\n", "b.conf", ".");
  EXPECT_FALSE(r.config);
  ASSERT_EQ(r.errors.size(), 1U) << errors_of(r);
  EXPECT_EQ(r.errors[0].to_string().rfind("b.conf:1: reload_sessions: ", 0), 0U) << errors_of(r);
}

// "(reclaimed)" is the statistics' entry for names a full registry gave back: a proxy or an
// upstream of that name would be listed twice, and mixed with it across a binary upgrade.
TEST(LoaderTest, NamesInParenthesesAreRefused) {
  const LoadResult r = load_text(
      "upstreams = ( { name = \"(reclaimed)\"; servers = ( { address = \"127.0.0.1:1\"; } ); } "
      ");\nproxies = ( { name = \"(reclaimed)\"; listen = \"127.0.0.1:7001\"; upstream = "
      "\"(reclaimed)\"; } );\n",
      "r.conf", ".");
  EXPECT_FALSE(r.config);
  ASSERT_EQ(r.errors.size(), 2U) << errors_of(r);
  EXPECT_NE(
      errors_of(r).find("r.conf:1: upstreams.[0].name: \"(reclaimed)\": a name may not begin"),
      std::string::npos)
      << errors_of(r);
  EXPECT_NE(errors_of(r).find("r.conf:2: proxies.[0].name:"), std::string::npos) << errors_of(r);
}

TEST(LoaderTest, EveryErrorIsReportedNotJustTheFirst) {
  const LoadResult r = load_text(
      "worker_connections = 0;\nworker_processes = 0;\nevents = { epoll_events = \"x\"; };\n",
      "m.conf", ".");
  EXPECT_EQ(r.errors.size(), 3U) << errors_of(r);
  EXPECT_FALSE(r.config);
}

// Every valid configuration the project ships: -T's text loads back to an equal Config.
TEST(LoaderTest, EveryShippedValidConfigRoundTripsThroughDump) {
  const auto files = test::shipped_valid_configs();
  ASSERT_GE(files.size(), 5U);
  for (const std::string& file : files) {
    const LoadResult first = load_file(file);
    ASSERT_TRUE(first.config) << file << ":\n" << errors_of(first);
    const std::string dumped = to_text(*first.config);
    const LoadResult second = load_text(dumped, file + " (dumped)", ".");
    ASSERT_TRUE(second.config) << file << ":\n" << errors_of(second) << dumped;
    EXPECT_TRUE(*first.config == *second.config) << file << " dumps to:\n" << dumped;
  }
}

// Issue 10: the metrics stay on loopback unless an address says otherwise.
TEST(LoaderTest, TheStatusEndpointListensOnLoopbackByDefault) {
  const LoadResult r = load_text("status = { };", "s.conf", ".");
  ASSERT_TRUE(r.config) << errors_of(r);
  ASSERT_TRUE(r.config->status);
  EXPECT_EQ(r.config->status->listen.text, "127.0.0.1:9145");
  const auto* sin = reinterpret_cast<const sockaddr_in*>(&r.config->status->listen.storage);
  EXPECT_EQ(sin->sin_family, AF_INET);
  EXPECT_EQ(ntohl(sin->sin_addr.s_addr), INADDR_LOOPBACK);
  EXPECT_EQ(ntohs(sin->sin_port), 9145);
  // -T prints the address it binds, and that loads back the same.
  const std::string dumped = to_text(*r.config);
  EXPECT_NE(dumped.find("listen = \"127.0.0.1:9145\""), std::string::npos) << dumped;
  const LoadResult again = load_text(dumped, "dumped.conf", ".");
  ASSERT_TRUE(again.config) << errors_of(again);
  EXPECT_TRUE(*again.config == *r.config);
}

TEST(LoaderTest, AStatusListenOfABarePortIsLoopback) {
  const LoadResult r = load_text("status = { listen = \"9200\"; };", "s.conf", ".");
  ASSERT_TRUE(r.config) << errors_of(r);
  EXPECT_EQ(r.config->status->listen.text, "127.0.0.1:9200");
  const LoadResult all = load_text("status = { listen = \"*:9200\"; };", "s.conf", ".");
  ASSERT_TRUE(all.config) << errors_of(all);
  const auto* sin = reinterpret_cast<const sockaddr_in*>(&all.config->status->listen.storage);
  EXPECT_EQ(sin->sin_addr.s_addr, htonl(INADDR_ANY)) << "an operator can still ask for all";
  for (const char* bad : {"0", "65536", "99999", "", "9145x"}) {
    const LoadResult r2 =
        load_text(std::string("status = { listen = \"") + bad + "\"; };", "s.conf", ".");
    EXPECT_FALSE(r2.config) << bad;
    EXPECT_NE(errors_of(r2).find("status.listen"), std::string::npos) << bad << errors_of(r2);
  }
}

TEST(LoaderTest, TheDefaultStatusListenCollidesWithAProxyOnItsPort) {
  const LoadResult r = load_text(
      "proxies = ( { name = \"w\"; listen = \"*:9145\"; upstream = \"127.0.0.1:1\"; } );\n"
      "status = { };\n",
      "s.conf", ".");
  EXPECT_FALSE(r.config);
  EXPECT_NE(errors_of(r).find("\"127.0.0.1:9145\" is already listened on as \"*:9145\""),
            std::string::npos)
      << errors_of(r);
  const LoadResult other = load_text(
      "proxies = ( { name = \"w\"; listen = \"127.0.0.2:9145\"; upstream = \"127.0.0.1:1\"; } );\n"
      "status = { listen = \"9145\"; };\n",
      "s.conf", ".");
  EXPECT_TRUE(other.config) << errors_of(other);
}

// Bad input (issue 10): what libconfig 1.5 would misread or choke on is refused before it parses.

// `ferry -s` with a file libconfig cannot parse still finds a pid_file line that is whole.
TEST(PidFileSettingTest, ReadFromTheLineWhenTheFileDoesNotParse) {
  const test::TempDir dir;
  const auto setting = [&](const std::string& text) {
    return read_pid_file_setting(dir.write("f.conf", text));
  };
  EXPECT_EQ(setting("pid_file = \"/a/f.pid\";\nworker_processes = 1;\n"), "/a/f.pid");
  EXPECT_EQ(setting("pid_file = \"/a/f.pid\";\nworker_processes = ;\n"), "/a/f.pid");
  EXPECT_EQ(setting("x = {\n  pid_file: \"/b/f.pid\"  # here\n"), "/b/f.pid");
  EXPECT_EQ(setting("x = {\npid_file = \"/c/f.pid\" // there\n"), "/c/f.pid");
  // Parsed without the setting, or lines that are not whole: nothing (the default applies).
  EXPECT_EQ(setting("worker_processes = 1;\n"), std::nullopt);
  EXPECT_EQ(setting("x = {\npid_file = \"/d/f.pid\" junk;\n"), std::nullopt);
  EXPECT_EQ(setting("x = {\npid_file = \"/e/f\\\".pid\";\n"), std::nullopt);
  EXPECT_EQ(setting("x = {\npid_file = \"/f/f.pid\n"), std::nullopt);
  EXPECT_EQ(setting("x = {\n# pid_file = \"/g/f.pid\";\n"), std::nullopt);
  // Inside a block comment, whole or cut: not a setting; after one closes, it is.
  EXPECT_EQ(setting("x = {\n/*\npid_file = \"/h/f.pid\";\n*/\n"), std::nullopt);
  EXPECT_EQ(setting("x = {\n/* old:\n  pid_file = \"/i/f.pid\";\n"), std::nullopt);
  EXPECT_EQ(setting("x = { /* a */ pid_file = \"/j/f.pid\"; /* b */\n"), std::nullopt);
  EXPECT_EQ(setting("x = {\n/* a */ pid_file = \"/k/f.pid\"; /* b\n*/\n"), "/k/f.pid");
  EXPECT_EQ(setting("x = \"/*\";\npid_file = \"/l/f.pid\";\ny = ;\n"), "/l/f.pid");
}

}  // namespace
}  // namespace ferry::conf

namespace ferry::conf {
namespace {

// Issue 19 review: messages are sorted by line only, so on one line they come in the order the
// settings are read; the tables changed that order for accept_proxy_protocol_from (read second
// last, before access_log, as ferry always has), and with it a failed reload's reason (the
// first error).
TEST(LoaderTest, MessagesOnOneLineKeepTheirOrder) {
  const LoadResult r = load_text(
      "upstreams = ( { name = \"app\"; servers = ( { address = \"127.0.0.1:9000\"; } ); } );\n"
      "proxies = ( { name = \"web\"; listen = [ \"127.0.0.1:8080\" ]; upstream = \"app\";\n"
      "  access = [ \"bogus\" ]; accept_proxy_protocol_from = [ \"bogus\" ]; "
      "client_ipv4_prefix = 99; } );\n",
      "a.conf", ".");
  const std::string errors = errors_of(r);
  const std::size_t access = errors.find("access.[0]");
  const std::size_t prefix = errors.find("client_ipv4_prefix");
  const std::size_t from = errors.find("accept_proxy_protocol_from");
  ASSERT_NE(from, std::string::npos) << errors;
  EXPECT_LT(access, prefix) << errors;
  EXPECT_LT(prefix, from) << errors;
}

}  // namespace
}  // namespace ferry::conf
