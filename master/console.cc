// print_error(): stderr lines with the journal's "<3>" prefix when stderr is the journal.
#include "master/console.h"

#include <cstdio>

#include "worker/logging.h"

namespace ferry::master {

namespace {

void print_lines(std::string_view text, const char* priority) {
  const bool journal = worker::stderr_is_journal();
  while (!text.empty()) {
    const std::size_t end = text.find('\n');
    const std::string_view line = text.substr(0, end);
    std::fprintf(stderr, "%s%.*s\n", journal ? priority : "", static_cast<int>(line.size()),
                 line.data());
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
}

}  // namespace

void print_error(std::string_view text) { print_lines(text, "<3>"); }
void print_warning(std::string_view text) { print_lines(text, "<4>"); }

}  // namespace ferry::master
