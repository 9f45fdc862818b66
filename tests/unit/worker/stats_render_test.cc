// Tests of worker/stats/render: the JSON parses (python3's json) and has the documented keys,
// the Prometheus text passes `promtool check metrics` with HELP/TYPE once per family, names
// with quotes, backslashes, newlines and stray bytes are escaped in both, the table lines up.
#include "worker/stats/render.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace ferry::worker {
namespace {

// A proxy and an upstream named to trip every escaping rule: quote, backslash, newline, a byte
// that is no UTF-8 and a character that is.
constexpr const char* kOddProxy = "we\"b\\\nx";
constexpr const char* kOddUpstream = "a\"p\\p\n\xff \xc3\xa9";

Snapshot::Proxy proxy(std::string name, std::uint64_t accepted, std::uint64_t active) {
  Snapshot::Proxy p;
  p.name = std::move(name);
  p.accepted = accepted;
  p.handled = accepted - active;
  p.active = active;
  p.denied = 1;
  p.limited = 2;
  p.no_connections = 3;
  p.bytes_from_clients = 1024;
  p.bytes_to_clients = 4096;
  return p;
}

Snapshot::Server server(std::string address, ServerState state, CheckResult health) {
  Snapshot::Server v;
  v.address = std::move(address);
  v.state = state;
  v.sessions = 12;
  v.active = 2;
  v.connect_failures = 3;
  v.bytes_sent = 1024;
  v.bytes_received = 4096;
  v.health = health;
  v.health_at = health == CheckResult::none ? 0 : 4590;
  return v;
}

Snapshot sample() {
  Snapshot s;
  s.version = "0.1.0";
  s.pid = 1234;
  s.started = 1000;
  s.now = 4600;
  s.generation = 2;
  s.reloads_ok = 3;
  s.reloads_failed = 1;
  s.last_reload = ReloadResult::ok;
  s.last_reload_at = 4000;
  s.last_reload_error = "ferry.conf:3: \"x\" is bad\n\tsee \\here";
  s.workers = {{1240, 2, 4000, 4}, {1200, 1, 1000, 0}};
  s.proxies = {proxy("web", 12, 2), proxy(kOddProxy, 5, 0)};
  s.proxies[1].configured = false;
  s.upstreams = {
      {"app",
       {server("127.0.0.1:9001", ServerState::up, CheckResult::ok),
        server("127.0.0.1:9002", ServerState::down, CheckResult::failed),
        server("127.0.0.1:9003", ServerState::backup, CheckResult::none)}},
      {kOddUpstream, {server("[::1]:80", ServerState::draining, CheckResult::none)}},
  };
  return s;
}

struct Run {
  int status = -1;
  std::string output;
};

// Runs `command` (through sh) with `input` on its stdin; its stdout and stderr come back.
Run run(const std::string& command, const std::string& input) {
  char path[] = "/tmp/ferry-stats-render-XXXXXX";
  const int fd = ::mkstemp(path);
  if (fd == -1) return {};
  ::close(fd);
  std::ofstream(path, std::ios::binary) << input;
  Run r;
  FILE* p = ::popen((command + " < " + path + " 2>&1").c_str(), "r");
  if (p != nullptr) {
    char buf[4096];
    std::size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
    r.status = ::pclose(p);
  }
  ::unlink(path);
  return r;
}

bool have(const char* tool) {
  return run(std::string("command -v ") + tool + " >/dev/null", "").status == 0;
}

// Loads the JSON with python3 and checks every documented key at every level (no more, no
// fewer), then `checks`.
void check_json(const std::string& json, const std::string& checks) {
  const std::string script = R"(
import json, sys
d = json.load(sys.stdin)
assert set(d) == {"version", "pid", "started", "uptime_seconds", "generation", "reloads",
                  "workers", "proxies", "upstreams", "routes"}, sorted(d)
for g in d["routes"].values():
    for r in g.values():
        assert set(r) == {"sessions", "active"}, r
assert set(d["reloads"]) == {"ok", "failed", "last", "last_at", "last_error"}, d["reloads"]
for w in d["workers"]:
    assert set(w) == {"pid", "generation", "started", "connections"}, w
for p in d["proxies"].values():
    assert set(p) == {"accepted", "handled", "active", "denied", "limited", "no_connections",
                      "bytes_from_clients", "bytes_to_clients"}, p
for u in d["upstreams"].values():
    assert set(u) == {"servers"}, u
    for v in u["servers"]:
        assert set(v) == {"address", "state", "admin", "weight", "effective_weight",
                          "slow_start_percent", "sessions", "active", "connect_failures",
                          "bytes_sent", "bytes_received", "health"}, v
        assert v["state"] in ("up", "down", "backup", "draining", "removed"), v
        assert v["admin"] in ("ready", "drain", "maint", "removed"), v
        assert v["slow_start_percent"] is None or 0 <= v["slow_start_percent"] < 100, v
        assert set(v["health"]) == {"last", "at"}, v
        assert (v["health"]["at"] is None) == (v["health"]["last"] == "none"), v
)" + checks + "\nprint('ok')\n";
  char path[] = "/tmp/ferry-stats-check-XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_NE(fd, -1);
  ::close(fd);
  std::ofstream(path) << script;
  const Run r = run(std::string("python3 ") + path, json);
  ::unlink(path);
  EXPECT_EQ(r.status, 0) << r.output << "\n" << json;
  EXPECT_EQ(r.output, "ok\n");
}

TEST(StatsRenderTest, JsonParsesWithTheDocumentedSchema) {
  if (!have("python3")) GTEST_SKIP() << "python3 is not installed";
  check_json(render_json(sample()), R"(
assert d["version"] == "0.1.0" and d["pid"] == 1234 and d["started"] == 1000
assert d["uptime_seconds"] == 3600 and d["generation"] == 2
assert d["reloads"] == {"ok": 3, "failed": 1, "last": "ok", "last_at": 4000,
                        "last_error": 'ferry.conf:3: "x" is bad\n\tsee \\here'}, d["reloads"]
assert d["workers"] == [{"pid": 1240, "generation": 2, "started": 4000, "connections": 4},
                        {"pid": 1200, "generation": 1, "started": 1000, "connections": 0}]
assert list(d["proxies"]) == ["web", 'we"b\\\nx'], ascii(list(d["proxies"]))
assert d["proxies"]["web"] == {"accepted": 12, "handled": 10, "active": 2, "denied": 1,
    "limited": 2, "no_connections": 3, "bytes_from_clients": 1024, "bytes_to_clients": 4096}, \
    d["proxies"]["web"]
assert list(d["upstreams"]) == ["app", 'a"p\\p\n\ufffd \u00e9'], ascii(list(d["upstreams"]))
app = d["upstreams"]["app"]["servers"]
assert [v["address"] for v in app] == ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]
assert [v["state"] for v in app] == ["up", "down", "backup"]
assert app[0] == {"address": "127.0.0.1:9001", "state": "up", "admin": "ready", "weight": 0,
    "effective_weight": 0, "slow_start_percent": None, "sessions": 12, "active": 2,
    "connect_failures": 3, "bytes_sent": 1024, "bytes_received": 4096,
    "health": {"last": "ok", "at": 4590}}, app[0]
assert app[1]["health"] == {"last": "failed", "at": 4590}
assert app[2]["health"] == {"last": "none", "at": None}
odd = d["upstreams"]['a"p\\p\n\ufffd \u00e9']["servers"]
assert odd[0]["state"] == "draining" and odd[0]["address"] == "[::1]:80"
)");
}

TEST(StatsRenderTest, JsonOfAnEmptySnapshotParses) {
  if (!have("python3")) GTEST_SKIP() << "python3 is not installed";
  check_json(render_json(Snapshot{}), R"(
assert d["workers"] == [] and d["proxies"] == {} and d["upstreams"] == {}
assert d["reloads"]["last"] == "none" and d["reloads"]["last_at"] is None
)");
}

TEST(StatsRenderTest, JsonEscapesEveryControlCharacter) {
  if (!have("python3")) GTEST_SKIP() << "python3 is not installed";
  Snapshot s;
  std::string all;
  for (int c = 1; c < 0x80; ++c) all += static_cast<char>(c);
  s.proxies = {proxy(all, 1, 0)};
  // A cut sequence, an overlong "/", a surrogate: each bad byte one U+FFFD.
  s.version = "\xe2\x82 \xc0\xaf \xed\xa0\x80 \xf0\x9f\x98\x80";
  const std::string json = render_json(s);
  for (char c : json) EXPECT_FALSE(static_cast<unsigned char>(c) < 0x20 && c != '\n') << json;
  check_json(json, R"(
assert list(d["proxies"]) == ["".join(chr(c) for c in range(1, 0x80))], ascii(d["proxies"])
assert d["version"] == "\ufffd\ufffd \ufffd\ufffd \ufffd\ufffd\ufffd \U0001F600", ascii(d["version"])
)");
}

// One line of the exposition: "name{labels} value" or a comment.
struct Families {
  std::map<std::string, int> help, type;
  std::string problems;
};

Families parse_families(const std::string& text) {
  Families f;
  std::istringstream in(text);
  std::string line;
  std::string current;  // the family whose samples may follow
  while (std::getline(in, line)) {
    if (line.rfind("# HELP ", 0) == 0) {
      ++f.help[line.substr(7, line.find(' ', 7) - 7)];
    } else if (line.rfind("# TYPE ", 0) == 0) {
      current = line.substr(7, line.find(' ', 7) - 7);
      ++f.type[current];
    } else if (!line.empty()) {
      const std::string name = line.substr(0, line.find_first_of("{ "));
      if (name != current) f.problems += "sample outside its family: " + line + "\n";
    }
  }
  for (const auto& [name, n] : f.type) {
    if (n != 1 || f.help[name] != 1) f.problems += "HELP/TYPE not once: " + name + "\n";
  }
  return f;
}

TEST(StatsRenderTest, PrometheusHasEachFamilyOnceAndTheExpectedSamples) {
  const std::string text = render_prometheus(sample());
  const Families f = parse_families(text);
  EXPECT_EQ(f.problems, "") << text;
  for (const char* line : {
           "ferry_build_info{version=\"0.1.0\"} 1\n",
           "ferry_uptime_seconds 3600\n",
           "ferry_generation 2\n",
           "ferry_reloads_total{result=\"ok\"} 3\n",
           "ferry_reloads_total{result=\"failed\"} 1\n",
           "ferry_last_reload_successful 1\n",
           "ferry_worker_connections{worker=\"1240\",generation=\"2\"} 4\n",
           "ferry_worker_start_time_seconds{worker=\"1200\",generation=\"1\"} 1000\n",
           "ferry_proxy_accepted_total{proxy=\"web\"} 12\n",
           "ferry_proxy_handled_total{proxy=\"web\"} 10\n",
           "ferry_proxy_active_sessions{proxy=\"web\"} 2\n",
           "ferry_proxy_denied_total{proxy=\"web\"} 1\n",
           "ferry_proxy_limited_total{proxy=\"web\"} 2\n",
           "ferry_proxy_no_connections_total{proxy=\"web\"} 3\n",
           "ferry_proxy_received_bytes_total{proxy=\"web\"} 1024\n",
           "ferry_proxy_sent_bytes_total{proxy=\"web\"} 4096\n",
           "ferry_upstream_server_sessions_total{upstream=\"app\",server=\"127.0.0.1:9001\"} 12\n",
           "ferry_upstream_server_up{upstream=\"app\",server=\"127.0.0.1:9001\"} 1\n",
           "ferry_upstream_server_up{upstream=\"app\",server=\"127.0.0.1:9002\"} 0\n",
           "ferry_upstream_server_up{upstream=\"app\",server=\"127.0.0.1:9003\"} 1\n",
           "ferry_upstream_server_state{upstream=\"app\",server=\"127.0.0.1:9002\",state=\"down\"} "
           "1\n",
           "ferry_upstream_server_state{upstream=\"app\",server=\"127.0.0.1:9002\",state=\"up\"} "
           "0\n",
           "ferry_upstream_server_health_check_ok{upstream=\"app\",server=\"127.0.0.1:9002\"} 0\n",
           "ferry_upstream_server_health_check_timestamp_seconds{upstream=\"app\",server=\"127.0."
           "0.1:9001\"} 4590\n",
           "# TYPE ferry_proxy_accepted_total counter\n",
           "# TYPE ferry_proxy_active_sessions gauge\n",
       }) {
    EXPECT_NE(text.find(line), std::string::npos) << line << "\n" << text;
  }
  // Servers without a check result have no health samples.
  EXPECT_EQ(text.find("health_check_ok{upstream=\"app\",server=\"127.0.0.1:9003\"}"),
            std::string::npos);
  EXPECT_EQ(f.type.size(), f.help.size());
  EXPECT_EQ(f.type.size(), 28u);
}

int renders = 0;
std::string counted_json(const Snapshot& s) {
  ++renders;
  return render_json(s);
}

// A rendering is reused exactly while the snapshot is equal; a count, a worker or the clock's
// second that moved renders again, and each kind keeps its own.
TEST(StatsRenderTest, TheCacheRendersAgainOnlyWhenTheSnapshotChanged) {
  RenderCache cache;
  Snapshot s = sample();
  renders = 0;
  const std::string first = cache.get(counted_json, s);
  EXPECT_EQ(first, render_json(s));
  EXPECT_EQ(cache.get(counted_json, s), first);
  EXPECT_EQ(cache.get(render_prometheus, s), render_prometheus(s));
  EXPECT_EQ(cache.get(counted_json, s), first);
  EXPECT_EQ(renders, 1);
  s.proxies[0].handled += 1;
  EXPECT_EQ(cache.get(counted_json, s), render_json(s));
  EXPECT_EQ(renders, 2);
  s.now += 1;
  EXPECT_EQ(cache.get(counted_json, s), render_json(s));
  s.workers.pop_back();
  EXPECT_EQ(cache.get(counted_json, s), render_json(s));
  EXPECT_EQ(renders, 4);
}

TEST(StatsRenderTest, PrometheusEscapesLabelValues) {
  const std::string text = render_prometheus(sample());
  EXPECT_NE(text.find(R"(ferry_proxy_accepted_total{proxy="we\"b\\\nx"} 5)"
                      "\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("ferry_upstream_server_up{upstream=\"a\\\"p\\\\p\\n\xef\xbf\xbd "
                      "\xc3\xa9\",server=\"[::1]:80\"} 0\n"),
            std::string::npos)
      << text;
  // No raw newline inside a sample: every line starts a sample or a comment of ours.
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) EXPECT_EQ(line.rfind("ferry_", 0) == 0 || line[0] == '#', true);
}

void check_promtool(const std::string& text) {
  const Run r = run("promtool check metrics", text);
  EXPECT_EQ(r.status, 0) << r.output << "\n" << text;
}

TEST(StatsRenderTest, PromtoolAcceptsTheMetrics) {
  if (!have("promtool")) {
    GTEST_SKIP() << "promtool is not installed (Debian package prometheus)";
  }
  check_promtool(render_prometheus(sample()));
  check_promtool(render_prometheus(Snapshot{}));
}

TEST(StatsRenderTest, RendersWhatATableHolds) {
  if (!have("python3")) GTEST_SKIP() << "python3 is not installed";
  const std::unique_ptr<StatsTable> stats = StatsTable::create("9.9", 77, 100);
  ASSERT_NE(stats, nullptr);
  conf::Config cfg;
  conf::Proxy web;
  web.name = "web";
  web.upstream_address = conf::Address{};
  web.upstream_address->text = "127.0.0.1:9001";
  cfg.proxies = {web};
  stats->register_config(cfg);
  stats->worker_started(0, 500, 1, 100);
  ProxyCounters* p = stats->proxy_counters(0, "web");
  ASSERT_NE(p, nullptr);
  stat_add(p->accepted, 3);
  stat_add(p->handled, 3);
  stat_add(stats->server_counters(0, "127.0.0.1:9001", "127.0.0.1:9001")->bytes_sent, 77);
  stats->fold(0);
  check_json(render_json(stats->snapshot(160)), R"(
assert d["proxies"]["web"]["accepted"] == 3 and d["proxies"]["web"]["handled"] == 3
assert d["upstreams"]["127.0.0.1:9001"]["servers"][0]["bytes_sent"] == 77
assert d["workers"] == [] and d["uptime_seconds"] == 60 and d["pid"] == 77
)");
  if (have("promtool")) check_promtool(render_prometheus(stats->snapshot(160)));
}

std::size_t columns(const std::string& line) {
  std::size_t n = 0;
  for (char c : line) n += (static_cast<unsigned char>(c) & 0xc0) != 0x80;
  return n;
}

TEST(StatsRenderTest, TheTableLinesUp) {
  const std::string table = render_table(sample());
  for (const char* text : {
           "ferry 0.1.0, master pid 1234, up 1h 0m, generation 2\n",
           "reloads: 3 ok, 1 failed; the last ok 10m 0s ago\n",
           "last reload error: ferry.conf:3: \"x\" is bad\\n\\tsee \\here\n",
           "we\"b\\\\nx (removed)",
           "a\"p\\p\\n\xef\xbf\xbd \xc3\xa9",
           "ok 10s ago",
       }) {
    EXPECT_NE(table.find(text), std::string::npos) << text << "\n" << table;
  }
  for (char c : table) EXPECT_FALSE(static_cast<unsigned char>(c) < 0x20 && c != '\n');

  // Each section: a header, then rows as wide as it is (the last column holds numbers or is
  // padded), separated by blank lines.
  std::istringstream in(table);
  std::string line;
  std::vector<std::vector<std::string>> sections(1);
  while (std::getline(in, line)) {
    if (line.empty()) {
      sections.emplace_back();
    } else {
      sections.back().push_back(line);
    }
  }
  ASSERT_EQ(sections.size(), 4u) << table;
  ASSERT_EQ(sections[1].size(), 3u);  // header, web, the odd one
  EXPECT_EQ(sections[1][0].rfind("PROXY", 0), 0u);
  for (const auto& l : sections[1]) EXPECT_EQ(columns(l), columns(sections[1][0])) << table;
  ASSERT_EQ(sections[2].size(), 5u);  // header, four servers
  EXPECT_NE(sections[2][2].find("down"), std::string::npos);
  ASSERT_EQ(sections[3].size(), 3u);  // header, two workers
  for (const auto& l : sections[3]) EXPECT_EQ(columns(l), columns(sections[3][0])) << table;
  EXPECT_NE(sections[3][1].find("1240"), std::string::npos);
  EXPECT_NE(sections[3][1].find("10m 0s"), std::string::npos);
}

}  // namespace
}  // namespace ferry::worker
