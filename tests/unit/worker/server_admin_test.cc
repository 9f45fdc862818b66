// Unit tests of worker/upstream/server_admin.cc: the table the master publishes and the workers
// read, and what a reader makes of bytes it cannot trust.
#include "worker/upstream/server_admin.h"

#include <atomic>
#include <cstring>
#include <memory>
#include <thread>

#include <gtest/gtest.h>

namespace ferry::worker {
namespace {

struct Table {
  std::unique_ptr<unsigned char[]> memory{new unsigned char[ServerAdminTable::bytes()]()};
  ServerAdminTable* table = ServerAdminTable::create(memory.get());
};

AdminRecord record(const std::string& server, AdminState state, int weight) {
  AdminRecord r;
  r.upstream = "app";
  r.server = server;
  r.state = state;
  r.weight = weight;
  return r;
}

TEST(ServerAdminTableTest, WhatIsPublishedIsReadAndTheVersionGrows) {
  Table t;
  EXPECT_TRUE(t.table->read().empty());
  AdminRecord added = record("127.0.0.1:3", AdminState::ready, 2);
  added.added = true;
  added.backup = true;
  added.slow_start_ms = 1500;
  added.ready_since_ms = 99;
  added.kill_epoch = 4;
  ASSERT_TRUE(t.table->publish({record("127.0.0.1:1", AdminState::drain, 0), added}));
  EXPECT_EQ(t.table->version(), 1u);
  const auto read = t.table->read();
  ASSERT_EQ(read.size(), 2u);
  EXPECT_EQ(read[0].state, AdminState::drain);
  EXPECT_EQ(read[1].server, "127.0.0.1:3");
  EXPECT_TRUE(read[1].added && read[1].backup);
  EXPECT_EQ(read[1].slow_start_ms, 1500);
  EXPECT_EQ(read[1].ready_since_ms, 99);
  EXPECT_EQ(read[1].kill_epoch, 4u);
  // Fewer records: the rest are cleared.
  ASSERT_TRUE(t.table->publish({record("127.0.0.1:1", AdminState::maint, 3)}));
  EXPECT_EQ(t.table->version(), 2u);
  ASSERT_EQ(t.table->read().size(), 1u);
  EXPECT_EQ(t.table->read()[0].weight, 3);
  // What does not fit is refused whole.
  EXPECT_FALSE(t.table->publish(
      {record(std::string(ServerAdminTable::kNameBytes, 'x'), AdminState::ready, 0)}));
  EXPECT_EQ(t.table->read()[0].weight, 3);
}

TEST(ServerAdminTableTest, AReaderSurvivesGarbage) {
  Table t;
  ASSERT_TRUE(t.table->publish({record("127.0.0.1:1", AdminState::drain, 0)}));
  // Names without their NUL, a state out of range, a negative weight, a count past the end.
  std::memset(t.memory.get() + 16, 0xfe, ServerAdminTable::bytes() - 16);  // even sequences
  std::uint32_t count = 0xffffffffu;
  std::memcpy(t.memory.get() + 8, &count, sizeof count);
  const auto read = t.table->read();  // must not crash or overrun
  for (const AdminRecord& r : read) {
    EXPECT_LE(r.server.size(), ServerAdminTable::kNameBytes);
    EXPECT_GE(r.weight, 0);
    EXPECT_LE(static_cast<int>(r.state), static_cast<int>(AdminState::removed));
  }
}

TEST(ServerAdminTableTest, AReaderNeverSeesHalfAnUpdate) {
  Table t;
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int i = 0; !stop.load(); ++i) {
      const std::string name = i % 2 == 0 ? "127.0.0.1:1111" : "10.0.0.22:2";
      (void)t.table->publish(
          {record(name, i % 2 == 0 ? AdminState::drain : AdminState::maint, i % 2 == 0 ? 7 : 9)});
    }
  });
  for (int i = 0; i < 20000; ++i) {
    for (const AdminRecord& r : t.table->read()) {
      const bool even = r.server == "127.0.0.1:1111";
      ASSERT_TRUE(even || r.server == "10.0.0.22:2") << r.server;
      ASSERT_EQ(r.weight, even ? 7 : 9);
      ASSERT_EQ(r.state, even ? AdminState::drain : AdminState::maint);
    }
  }
  stop = true;
  writer.join();
}

}  // namespace
}  // namespace ferry::worker
