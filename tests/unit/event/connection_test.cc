// Tests of event/connection: the pool is preallocated, LIFO, bounded, and advances generations.
#include "event/connection.h"

#include <fcntl.h>
#include <sys/socket.h>

#include <set>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/loop_helpers.h"

namespace ferry::event {
namespace {

TEST(ConnectionPoolTest, HandsOutEveryEntryOnceThenRefusesAndClosesTheFd) {
  ConnectionPool pool(4);
  EXPECT_EQ(pool.size(), 4U);
  std::set<Connection*> seen;
  std::vector<UniqueFd> peers;
  for (int i = 0; i < 4; ++i) {
    auto [fd, peer] = test::socket_pair();
    peers.push_back(std::move(peer));
    Connection* c = pool.get(std::move(fd));
    ASSERT_NE(c, nullptr);
    EXPECT_TRUE(c->fd.valid());
    EXPECT_EQ(c->read.data, c);
    EXPECT_EQ(c->write.data, c);
    EXPECT_TRUE(c->write.write);
    EXPECT_FALSE(c->read.write);
    seen.insert(c);
  }
  EXPECT_EQ(seen.size(), 4U);
  EXPECT_EQ(pool.free_count(), 0U);

  auto [fd, peer] = test::socket_pair();
  const int raw = fd.get();
  EXPECT_EQ(pool.get(std::move(fd)), nullptr);
  EXPECT_EQ(::fcntl(raw, F_GETFD), -1) << "the refused fd must be closed";
  EXPECT_EQ(errno, EBADF);
}

TEST(ConnectionPoolTest, FreeClosesTheFdAndTheEntryIsReusedFirst) {
  ConnectionPool pool(3);
  auto [a, a_peer] = test::socket_pair();
  auto [b, b_peer] = test::socket_pair();
  Connection* ca = pool.get(std::move(a));
  Connection* cb = pool.get(std::move(b));
  ASSERT_NE(ca, cb);
  const int raw = ca->fd.get();
  const std::uint32_t generation = ca->generation;
  ca->read.ready = true;
  ca->read.eof = true;
  pool.free(*ca);
  EXPECT_EQ(::fcntl(raw, F_GETFD), -1);
  EXPECT_EQ(pool.free_count(), 2U);

  auto [c, c_peer] = test::socket_pair();
  Connection* again = pool.get(std::move(c));
  EXPECT_EQ(again, ca);
  EXPECT_EQ(again->generation, generation + 1);
  EXPECT_FALSE(again->read.ready) << "flags of the previous owner leaked into the new one";
  EXPECT_FALSE(again->read.eof);
}

}  // namespace
}  // namespace ferry::event
