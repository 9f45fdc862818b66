// Table-driven test of configuration errors: every file under configs/invalid/ ends with
// "# expect: [FILE:]LINE SETTING -- phrase" lines; `ferry -t` on it must exit 1 and print, for
// each, a line that starts with "FILE:LINE: SETTING: " and contains the phrase.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/process.h"
#include "tests/support/shipped_configs.h"

namespace ferry::test {
namespace {

namespace fs = std::filesystem;

const fs::path kDir = fs::path(source_root()) / "tests/integration/configs/invalid";

struct Expectation {
  std::string prefix;  // "FILE:LINE: SETTING: "
  std::string phrase;
};

std::vector<std::string> case_names() {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(kDir)) {
    if (entry.is_regular_file() && entry.path().extension() == ".conf") {
      names.push_back(entry.path().stem().string());
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<Expectation> expectations(const fs::path& file) {
  std::vector<Expectation> out;
  std::ifstream in(file);
  std::string line;
  constexpr std::string_view kTag = "# expect: ";
  while (std::getline(in, line)) {
    if (line.rfind(kTag, 0) != 0) continue;
    const std::string spec = line.substr(kTag.size());
    const auto dash = spec.find(" -- ");
    const auto space = spec.find(' ');
    if (dash == std::string::npos || space == std::string::npos || space > dash) {
      ADD_FAILURE() << file << ": malformed expectation: " << line;
      continue;
    }
    std::string where = spec.substr(0, space);
    const std::string setting = spec.substr(space + 1, dash - space - 1);
    std::string path = file.string();
    if (const auto colon = where.rfind(':'); colon != std::string::npos) {
      path = (kDir / where.substr(0, colon)).string();
      where = where.substr(colon + 1);
    }
    out.push_back({path + ":" + where + ": " + (setting == "-" ? "" : setting + ": "),
                   spec.substr(dash + 4)});
  }
  return out;
}

class InvalidConfigTest : public ::testing::TestWithParam<std::string> {};

TEST_P(InvalidConfigTest, IsRejectedWithFileLineAndSetting) {
  const fs::path file = kDir / (GetParam() + ".conf");
  const auto expected = expectations(file);
  ASSERT_FALSE(expected.empty()) << file << " has no # expect: lines";

  const Finished f = run_program({ferry_binary(), "-t", "-c", file.string()});
  EXPECT_EQ(f.exit_code, 1) << f.err;
  EXPECT_NE(f.err.find("ferry: configuration file " + file.string() + " test failed"),
            std::string::npos)
      << f.err;

  std::vector<std::string> lines;
  std::istringstream err(f.err);
  for (std::string l; std::getline(err, l);) lines.push_back(l);
  for (const Expectation& e : expected) {
    const bool found = std::any_of(lines.begin(), lines.end(), [&](const std::string& l) {
      return l.rfind(e.prefix, 0) == 0 && l.find(e.phrase, e.prefix.size()) != std::string::npos;
    });
    EXPECT_TRUE(found) << "expected a line starting with \"" << e.prefix << "\" containing \""
                       << e.phrase << "\"; ferry printed:\n"
                       << f.err;
  }
}

INSTANTIATE_TEST_SUITE_P(Configs, InvalidConfigTest, ::testing::ValuesIn(case_names()),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

TEST(InvalidConfigTableTest, HasAtLeastFortyCases) { EXPECT_GE(case_names().size(), 40U); }

}  // namespace
}  // namespace ferry::test
