// Unit tests of master/runtime_servers.cc: what each command does to the records, the rules of
// precedence at a reload, and the state file's lines read back (and bad ones skipped).
#include "master/runtime_servers.h"

#include <gtest/gtest.h>

#include "conf/values.h"

namespace ferry::master {
namespace {

using worker::AdminState;

conf::Server server(const std::string& address, int weight = 1) {
  conf::Server s;
  s.address = std::get<conf::Address>(conf::parse_address(address, false));
  s.weight = weight;
  return s;
}

conf::Config config(int b_weight = 1) {
  conf::Config cfg;
  conf::Upstream& u = cfg.upstreams.emplace_back();
  u.name = "app";
  u.servers.push_back(server("127.0.0.1:9001"));
  u.servers.push_back(server("127.0.0.1:9002", b_weight));
  return cfg;
}

const ServerName kA{"app", "127.0.0.1:9001"};
const ServerName kB{"app", "127.0.0.1:9002"};
const ServerName kC{"app", "127.0.0.1:9003"};

TEST(RuntimeServersTest, CommandsChangeTheRecordsAndRefuseWhatIsNotThere) {
  const conf::Config cfg = config();
  RuntimeServers rs;
  EXPECT_FALSE(rs.set_state(cfg, kB, AdminState::drain, false, 5));
  ASSERT_NE(rs.find(kB), nullptr);
  EXPECT_EQ(rs.find(kB)->state, AdminState::drain);
  EXPECT_EQ(*rs.set_state(cfg, {"app", "127.0.0.1:1"}, AdminState::drain, false, 5),
            "upstream \"app\" has no server \"127.0.0.1:1\"");
  EXPECT_EQ(*rs.set_state(cfg, {"nope", "x"}, AdminState::drain, false, 5),
            "no upstream named \"nope\"");
  EXPECT_TRUE(rs.set_state(cfg, kB, AdminState::drain, true, 5));  // --kill: maint only
  EXPECT_TRUE(rs.set_weight(cfg, kA, 0));
  EXPECT_TRUE(rs.set_weight(cfg, kA, 1001));
  EXPECT_FALSE(rs.set_weight(cfg, kA, 3));
  EXPECT_EQ(rs.find(kA)->config_weight, 1);
  // Back to ready at the configured weight: the record goes (nothing to say).
  EXPECT_FALSE(rs.set_state(cfg, kB, AdminState::ready, false, 9));
  EXPECT_EQ(rs.find(kB), nullptr);
  // maint --kill: a new epoch each time.
  EXPECT_FALSE(rs.set_state(cfg, kB, AdminState::maint, true, 9));
  const std::uint32_t first = rs.find(kB)->kill_epoch;
  EXPECT_FALSE(rs.kill(cfg, kB));
  EXPECT_GT(rs.find(kB)->kill_epoch, first);
}

TEST(RuntimeServersTest, AddAndRemove) {
  const conf::Config cfg = config();
  RuntimeServers rs;
  EXPECT_FALSE(rs.add(cfg, kC, 2, true, 3000, 7));
  ASSERT_NE(rs.find(kC), nullptr);
  EXPECT_TRUE(rs.find(kC)->added);
  EXPECT_EQ(rs.find(kC)->ready_since_ms, 7);
  EXPECT_TRUE(rs.add(cfg, kC, 1, false, 0, 8)) << "twice";
  EXPECT_TRUE(rs.add(cfg, kA, 1, false, 0, 8)) << "configured already";
  EXPECT_TRUE(rs.add(cfg, {"app", "db.example:0"}, 1, false, 0, 8)) << "no port";
  EXPECT_TRUE(rs.add(cfg, {"app", "db.example"}, 1, false, 0, 8)) << "no port";
  EXPECT_TRUE(rs.add(cfg, {"nope", "127.0.0.1:1"}, 1, false, 0, 8));
  // A host name: the workers resolve it (and TLS origination verifies it).
  EXPECT_FALSE(rs.add(cfg, {"app", "db.example:5432"}, 1, false, 0, 8));
  ASSERT_NE(rs.find({"app", "db.example:5432"}), nullptr);
  EXPECT_TRUE(rs.find({"app", "db.example:5432"})->added);
  RuntimeServers kept;
  std::vector<std::string> errors;
  kept.parse(rs.serialize(), errors);
  EXPECT_TRUE(errors.empty()) << errors.front();
  EXPECT_NE(kept.find({"app", "db.example:5432"}), nullptr) << "the state file keeps it";
  EXPECT_FALSE(rs.remove(cfg, {"app", "db.example:5432"}));
  EXPECT_FALSE(rs.remove(cfg, kC));
  EXPECT_EQ(rs.find(kC), nullptr) << "an added server removed is forgotten";
  EXPECT_FALSE(rs.remove(cfg, kA));
  EXPECT_EQ(rs.find(kA)->state, AdminState::removed) << "a configured one stays, removed";
  EXPECT_TRUE(rs.set_weight(cfg, kA, 2)) << "removed";
  EXPECT_FALSE(rs.set_state(cfg, kA, AdminState::ready, false, 9)) << "ready brings it back";
  EXPECT_EQ(rs.find(kA), nullptr);
}

TEST(RuntimeServersTest, AtAReloadAnEditedWeightWinsAndWhatIsGoneIsDropped) {
  RuntimeServers rs;
  const conf::Config before = config(1);
  ASSERT_FALSE(rs.set_weight(before, kA, 5));
  ASSERT_FALSE(rs.set_weight(before, kB, 7));
  ASSERT_FALSE(rs.set_state(before, kB, AdminState::drain, false, 1));
  ASSERT_FALSE(rs.add(before, kC, 2, false, 0, 1));
  // b's weight edited from 1 to 4: the configuration wins; a's untouched keeps 5.
  const auto notes = rs.reconcile(config(4));
  EXPECT_EQ(rs.find(kA)->weight, 5);
  EXPECT_EQ(rs.find(kB)->weight, 0);
  EXPECT_EQ(rs.find(kB)->state, AdminState::drain);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("weight 4 (edited since) wins over the runtime weight 7"),
            std::string::npos);
  // The configuration now lists c itself: its settings apply. An upstream gone: all dropped.
  conf::Config with_c = config(4);
  with_c.upstreams[0].servers.push_back(server("127.0.0.1:9003", 9));
  rs.reconcile(with_c);
  EXPECT_EQ(rs.find(kC), nullptr);
  conf::Config other;
  other.upstreams.emplace_back().name = "other";
  EXPECT_EQ(rs.reconcile(other).size(), 2u);
  EXPECT_TRUE(rs.servers().empty());
}

TEST(RuntimeServersTest, TheStateFileReadsBackAndBadLinesAreSkipped) {
  const conf::Config cfg = config();
  RuntimeServers rs;
  ASSERT_FALSE(rs.set_weight(cfg, kA, 5));
  ASSERT_FALSE(rs.set_state(cfg, kB, AdminState::maint, false, 1));
  ASSERT_FALSE(rs.add(cfg, kC, 3, true, 2500, 1));
  RuntimeServers back;
  std::vector<std::string> errors;
  back.parse(rs.serialize(), errors);
  EXPECT_TRUE(errors.empty());
  EXPECT_EQ(back.serialize(), rs.serialize());
  EXPECT_TRUE(back.find(kC)->backup);
  EXPECT_EQ(back.find(kC)->slow_start_ms, 2500);

  RuntimeServers bad;
  errors.clear();
  bad.parse(
      "# comment\n"
      "\n"
      "server app 127.0.0.1:9001 state=drain\n"
      "server app 127.0.0.1:9001 state=maint\n"  // twice: the first counts
      "server app\n"
      "frob app 127.0.0.1:1\n"
      "server app 127.0.0.1:9002 state=sleepy\n"
      "server app 127.0.0.1:9002 weight=-1\n"
      "added app 127.0.0.1:9003 weight=0\n"
      "added app not-an-address weight=1\n"
      "server app 127.0.0.1:9002 colour=red\n",
      errors);
  EXPECT_EQ(errors.size(), 8u);
  EXPECT_EQ(bad.servers().size(), 1u);
  EXPECT_EQ(bad.find(kA)->state, AdminState::drain);
}

TEST(RuntimeServersTest, ServerNamesParse) {
  EXPECT_EQ(parse_server_name("app/127.0.0.1:1")->server, "127.0.0.1:1");
  EXPECT_FALSE(parse_server_name("app"));
  EXPECT_FALSE(parse_server_name("/x"));
  EXPECT_FALSE(parse_server_name("app/"));
}

}  // namespace
}  // namespace ferry::master
