// Source: @include expansion with a line map, loop detection and a depth bound.
#include "conf/source.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

namespace ferry::conf {
namespace {

std::string folder_of(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string join(const std::string& folder, const std::string& path) {
  if (!path.empty() && path[0] == '/') return path;
  if (folder == ".") return path;
  return folder + '/' + path;
}

// Reads a regular file of at most Source::kMaxBytes: a directory, a device (/dev/zero never
// ends) or a FIFO (its open could wait forever for a writer) is refused with a reason.
bool read_whole(const std::string& path, std::string& out, std::string& why) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd == -1) {
    why = std::generic_category().message(errno);
    return false;
  }
  struct stat st {};
  bool ok = false;
  if (::fstat(fd, &st) == -1) {
    why = std::generic_category().message(errno);
  } else if (S_ISDIR(st.st_mode)) {
    why = "it is a directory";
  } else if (!S_ISREG(st.st_mode)) {
    why = "not a regular file";
  } else if (st.st_size > static_cast<off_t>(Source::kMaxBytes)) {
    why = "larger than " + std::to_string(Source::kMaxBytes >> 20) + " MiB";
  } else {
    out.clear();
    // Room for the size fstat gave and one byte more, so that the end is seen; a file growing
    // while it is read gets more, up to one byte past the bound. (Not the bound at once: that
    // zero-filled 8 MiB for every file and include read.)
    constexpr std::size_t kCap = Source::kMaxBytes + 1;
    out.resize(static_cast<std::size_t>(st.st_size) + 1);
    std::size_t got = 0;
    ok = true;
    while (true) {
      if (got == out.size()) {
        if (out.size() == kCap) break;
        out.resize(std::min(kCap, out.size() * 2));
      }
      const ssize_t n = ::read(fd, out.data() + got, out.size() - got);
      if (n == 0) break;
      if (n == -1) {
        if (errno == EINTR) continue;
        why = std::generic_category().message(errno);
        ok = false;
        break;
      }
      got += static_cast<std::size_t>(n);
    }
    if (ok && got > Source::kMaxBytes) {
      why = "larger than " + std::to_string(Source::kMaxBytes >> 20) + " MiB";
      ok = false;
    }
    out.resize(ok ? got : 0);
    out.shrink_to_fit();
  }
  ::close(fd);
  return ok;
}

// The file name of an `@include "name"` line, as libconfig's scanner accepts it: optional
// blanks, the directive, blanks, a double-quoted name.
bool include_target(std::string_view line, std::string& target) {
  std::size_t i = line.find_first_not_of(" \t");
  constexpr std::string_view kDirective = "@include";
  if (i == std::string_view::npos || line.substr(i, kDirective.size()) != kDirective) return false;
  i += kDirective.size();
  const std::size_t quote = line.find_first_not_of(" \t", i);
  if (quote == i || quote == std::string_view::npos || line[quote] != '"') return false;
  const std::size_t end = line.find('"', quote + 1);
  if (end == std::string_view::npos) return false;
  target = std::string(line.substr(quote + 1, end - quote - 1));
  return true;
}

}  // namespace

Source Source::read_file(const std::string& path, std::vector<ConfigError>& errors) {
  Source src;
  src.main_file_ = path;
  std::string content;
  std::string why;
  if (!read_whole(path, content, why)) {
    errors.push_back({path, 0, "", "cannot read the configuration file: " + why});
    return src;
  }
  std::vector<std::string> stack{path};
  src.expand(content, path, folder_of(path), stack, errors);
  return src;
}

Source Source::from_text(std::string_view text, const std::string& name, const std::string& folder,
                         std::vector<ConfigError>& errors) {
  Source src;
  src.main_file_ = name;
  std::vector<std::string> stack{name};
  src.expand(text, name, folder, stack, errors);
  return src;
}

std::pair<std::string, int> Source::origin(int line) const {
  if (line < 1 || static_cast<std::size_t>(line) > lines_.size()) {
    return {main_file_, line < 0 ? 0 : line};
  }
  const auto& [file, local] = lines_[static_cast<std::size_t>(line - 1)];
  return {files_[file], static_cast<int>(local)};
}

void Source::expand(std::string_view content, const std::string& name, const std::string& folder,
                    std::vector<std::string>& stack, std::vector<ConfigError>& errors) {
  const auto file_index = static_cast<std::uint32_t>(files_.size());
  files_.push_back(name);
  std::uint32_t line_no = 0;
  std::size_t pos = 0;
  while (pos < content.size()) {
    std::size_t end = content.find('\n', pos);
    if (end == std::string_view::npos) end = content.size();
    const std::string_view line = content.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;

    std::string target;
    if (!include_target(line, target)) {
      text_.append(line);
      text_.push_back('\n');
      lines_.emplace_back(file_index, line_no);
      continue;
    }
    const std::string path = join(folder, target);
    const int here = static_cast<int>(line_no);
    if (stack.size() >= kMaxIncludeDepth) {
      errors.push_back({name, here, "@include",
                        "\"" + target + "\" nests includes deeper than " +
                            std::to_string(kMaxIncludeDepth) + " levels"});
    } else if (std::find(stack.begin(), stack.end(), path) != stack.end()) {
      errors.push_back({name, here, "@include", "\"" + target + "\" includes itself (loop)"});
    } else {
      std::string included;
      std::string why;
      if (!read_whole(path, included, why)) {
        errors.push_back({name, here, "@include", "cannot read \"" + path + "\": " + why});
      } else if (text_.size() + included.size() > kMaxBytes) {
        errors.push_back({name, here, "@include",
                          "\"" + target + "\" makes the configuration larger than " +
                              std::to_string(kMaxBytes >> 20) + " MiB"});
      } else {
        stack.push_back(path);
        expand(included, path, folder_of(path), stack, errors);
        stack.pop_back();
      }
    }
    // The directive line itself becomes an empty line of the including file, so that an error
    // reported on it still points somewhere sensible.
    text_.push_back('\n');
    lines_.emplace_back(file_index, line_no);
  }
}

}  // namespace ferry::conf
