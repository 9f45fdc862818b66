// Listing the shipped valid configurations from the source tree.
#include "tests/support/shipped_configs.h"

#include <algorithm>
#include <filesystem>

namespace ferry::test {

std::string source_root() { return FERRY_SOURCE_ROOT; }

std::vector<std::string> shipped_valid_configs() {
  namespace fs = std::filesystem;
  const fs::path root(FERRY_SOURCE_ROOT);
  std::vector<std::string> files;
  for (const fs::path& dir :
       {root / "packaging", root / "packaging/etc", root / "tests/integration/configs/valid"}) {
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (entry.path().extension() == ".conf") files.push_back(entry.path().string());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace ferry::test
