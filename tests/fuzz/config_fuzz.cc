// Fuzz target: the configuration loader (conf/loader.h), file text → Config or errors. A loaded
// Config must print (ferry -T) to text that loads back to an equal Config.
//
// Kept inside a sandbox: includes resolve in a private temporary folder holding two fixtures, and
// inputs whose @include names a path outside it are skipped (an include of /dev/zero or a FIFO
// would read forever); host names are resolved by the stub below, never by DNS.
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "conf/loader.h"
#include "conf/printer.h"
#include "tests/fuzz/fuzz_check.h"

// Replaces libc's resolver for the whole executable: "localhost" is 127.0.0.1, every other
// name is unknown. The result is one block, as freeaddrinfo() frees it.
extern "C" int getaddrinfo(const char* node, const char* /*service*/, const addrinfo* /*hints*/,
                           addrinfo** res) {
  if (node == nullptr || std::strcmp(node, "localhost") != 0) return EAI_NONAME;
  struct Block {
    addrinfo info;
    sockaddr_in sin;
  };
  auto* block = static_cast<Block*>(std::calloc(1, sizeof(Block)));
  if (block == nullptr) return EAI_MEMORY;
  block->sin.sin_family = AF_INET;
  block->sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  block->info.ai_family = AF_INET;
  block->info.ai_socktype = SOCK_STREAM;
  block->info.ai_addrlen = sizeof block->sin;
  block->info.ai_addr = reinterpret_cast<sockaddr*>(&block->sin);
  *res = &block->info;
  return 0;
}

namespace {

// The folder includes are taken from, removed when the process exits.
class IncludeFolder {
 public:
  IncludeFolder() {
    std::string pattern = (std::filesystem::temp_directory_path() / "ferry-fuzz-XXXXXX").string();
    FUZZ_CHECK(::mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
    write("part.conf", "worker_processes = 2;\nlog = { level = \"debug\"; };\n");
    write("self.conf", "@include \"self.conf\"\n");
  }
  ~IncludeFolder() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  IncludeFolder(const IncludeFolder&) = delete;
  IncludeFolder& operator=(const IncludeFolder&) = delete;

  [[nodiscard]] const std::string& path() const noexcept { return path_; }

 private:
  void write(const std::string& name, std::string_view text) {
    std::ofstream out(path_ + '/' + name, std::ios::binary);
    out << text;
    FUZZ_CHECK(out.good());
  }

  std::string path_;
};

// Whether every "@include" in the text names a file inside the include folder: a plain name,
// no '/', not "." or "..". Looser than the loader's own reading of the directive, so nothing it
// would follow escapes.
bool includes_stay_inside(std::string_view text) {
  constexpr std::string_view kDirective = "@include";
  for (std::size_t at = text.find(kDirective); at != std::string_view::npos;
       at = text.find(kDirective, at + 1)) {
    const std::size_t quote = text.find('"', at + kDirective.size());
    if (quote == std::string_view::npos) return true;
    const std::size_t end = text.find('"', quote + 1);
    const std::string_view name = text.substr(
        quote + 1, end == std::string_view::npos ? std::string_view::npos : end - quote - 1);
    if (name.find('/') != std::string_view::npos || name.empty() || name == "." || name == "..") {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  static const IncludeFolder folder;
  const std::string_view text(reinterpret_cast<const char*>(bytes), size);
  if (!includes_stay_inside(text)) return 0;

  const ferry::conf::LoadResult first = ferry::conf::load_text(text, "fuzz.conf", folder.path());
  FUZZ_CHECK(first.config.has_value() == first.errors.empty());
  for (const auto& e : first.errors) FUZZ_CHECK(!e.message.empty());
  if (!first.config) return 0;

  const std::string dumped = ferry::conf::to_text(*first.config);
  const ferry::conf::LoadResult second = ferry::conf::load_text(dumped, "dumped.conf", ".");
  if (!second.config) {
    for (const auto& e : second.errors) {
      std::fprintf(stderr, "%s\n", e.to_string().c_str());
    }
    std::fprintf(stderr, "--- dumped ---\n%s", dumped.c_str());
  }
  FUZZ_CHECK(second.config.has_value());
  FUZZ_CHECK(*second.config == *first.config);
  FUZZ_CHECK(ferry::conf::to_text(*second.config) == dumped);
  return 0;
}
