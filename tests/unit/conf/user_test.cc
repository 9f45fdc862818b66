// look_up_user: the ids of an account, a clear error for a missing one, and lookups from several
// threads at once (a reload reads the configuration on a thread) that each get their own answer.
#include "conf/user.h"

#include <gtest/gtest.h>
#include <pwd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

namespace ferry::conf {
namespace {

TEST(LookUpUserTest, FindsAnAccountsIds) {
  const auto root = look_up_user("root");
  ASSERT_TRUE(std::holds_alternative<UserIds>(root)) << std::get<std::string>(root);
  EXPECT_EQ(std::get<UserIds>(root).uid, 0u);
  EXPECT_EQ(std::get<UserIds>(root).gid, 0u);
}

// A buffer too small for the entry: getpwnam_r says ERANGE, and it is grown until the entry fits.
TEST(LookUpUserTest, GrowsTheBufferUntilTheEntryFits) {
  const auto root = look_up_user("root", 1);
  ASSERT_TRUE(std::holds_alternative<UserIds>(root)) << std::get<std::string>(root);
  EXPECT_EQ(std::get<UserIds>(root).uid, 0u);
}

TEST(LookUpUserTest, SaysWhenThereIsNoSuchUser) {
  const auto none = look_up_user("ferry-no-such-user");
  ASSERT_TRUE(std::holds_alternative<std::string>(none));
  EXPECT_EQ(std::get<std::string>(none), "no user named \"ferry-no-such-user\" on this system");
}

// getpwnam() answers in one buffer for the whole process: a lookup by another thread meanwhile
// changes the answer under its reader.
TEST(LookUpUserTest, ThreadsLookingUpAtOnceEachGetTheirOwnAnswer) {
  const std::vector<std::string> names = {"root", "daemon", "nobody"};
  std::vector<uid_t> expected;
  for (const std::string& name : names) {
    const auto ids = look_up_user(name);
    if (!std::holds_alternative<UserIds>(ids)) GTEST_SKIP() << "no user " << name << " here";
    expected.push_back(std::get<UserIds>(ids).uid);
  }
  std::atomic<int> wrong = 0;
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < names.size(); ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 3000; ++i) {
        const auto ids = look_up_user(names[t]);
        if (!std::holds_alternative<UserIds>(ids) || std::get<UserIds>(ids).uid != expected[t]) {
          ++wrong;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong, 0) << "answers that were another thread's";
}

}  // namespace
}  // namespace ferry::conf
