// The lexical pre-scan: strings and comments skipped as libconfig's scanner skips them, brackets
// counted, integer literals range-checked as libconfig 1.5 would (mis)read them.
#include "conf/lexical.h"

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace ferry::conf {
namespace {

constexpr int kMaxReportsPerKind = 1;  // the first of each kind is enough to find the rest

// Length of the UTF-8 sequence at text[i] (0 when it is not valid UTF-8: overlong forms,
// surrogates and code points above U+10FFFF included).
std::size_t utf8_length(std::string_view text, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  std::size_t n = 0;
  unsigned min = 0;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
    min = 0x80;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    min = 0x800;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    min = 0x10000;
  } else {
    return 0;
  }
  if (i + n > text.size()) return 0;
  unsigned cp = c & (0x7F >> n);
  for (std::size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return 0;
    cp = cp << 6 | (b(i + k) & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
bool is_name_char(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '-' ||
         c == '*';
}

class Scanner {
 public:
  Scanner(const Source& src, std::vector<ConfigError>& errors)
      : src_(src), text_(src.text()), errors_(errors) {}

  bool run() {
    while (i_ < text_.size()) step();
    return fit_;
  }

 private:
  void step() {
    const char c = text_[i_];
    if (c == '\n') {
      ++line_;
      ++i_;
    } else if (c == '\0') {
      report(nul_reports_, "a NUL byte (the file is binary, not configuration text)");
      ++i_;
    } else if (static_cast<unsigned char>(c) >= 0x80) {
      const std::size_t n = utf8_length(text_, i_);
      if (n == 0) report(utf8_reports_, "bytes that are not UTF-8 text");
      i_ += n == 0 ? 1 : n;
    } else if (c == '#' || (c == '/' && next_is('/'))) {
      while (i_ < text_.size() && text_[i_] != '\n') scan_byte();
    } else if (c == '/' && next_is('*')) {
      i_ += 2;
      while (i_ < text_.size() && !(text_[i_] == '*' && next_is('/'))) scan_byte();
      i_ += 2;
    } else if (c == '"') {
      ++i_;
      while (i_ < text_.size() && text_[i_] != '"') {
        if (text_[i_] == '\\' && i_ + 1 < text_.size() && text_[i_ + 1] != '\n') ++i_;
        scan_byte();
      }
      ++i_;
    } else if (c == '=' || c == ':') {
      // A setting: groups (the file itself is one) look names up one by one, so libconfig
      // takes quadratic time over a group with very many members.
      if (depth_ <= kMaxNesting && ++members_.back() == kMaxMembers + 1) {
        fit_ = false;
        add("more than " + std::to_string(kMaxMembers) + " settings in one group");
      }
      ++i_;
    } else if (c == '{' || c == '(' || c == '[') {
      if (depth_ < kMaxNesting) members_.push_back(0);
      if (++depth_ == kMaxNesting + 1) {
        fit_ = false;
        add("groups, lists and arrays nested deeper than " + std::to_string(kMaxNesting) +
            " levels");
      }
      ++i_;
    } else if (c == '}' || c == ')' || c == ']') {
      if (depth_ > 0 && depth_-- <= kMaxNesting) members_.pop_back();
      ++i_;
    } else if (is_digit(c) ||
               ((c == '-' || c == '+') && i_ + 1 < text_.size() && is_digit(text_[i_ + 1]))) {
      number();
    } else if (is_name_char(c)) {
      while (i_ < text_.size() && is_name_char(text_[i_])) ++i_;
    } else {
      ++i_;
    }
  }

  // A byte inside a comment or a string: only NULs, bad UTF-8 and line ends matter there.
  void scan_byte() {
    const char c = text_[i_];
    if (c == '\n') ++line_;
    if (c == '\0') report(nul_reports_, "a NUL byte (the file is binary, not configuration text)");
    if (static_cast<unsigned char>(c) >= 0x80) {
      const std::size_t n = utf8_length(text_, i_);
      if (n == 0) report(utf8_reports_, "bytes that are not UTF-8 text");
      i_ += n == 0 ? 1 : n;
      return;
    }
    ++i_;
  }

  // libconfig 1.5 takes a decimal or hex integer without the L suffix as a 32-bit int, wrapping
  // what does not fit (4294967298 reads as 2), and clamps one with the suffix to 64 bits.
  void number() {
    const std::size_t start = i_;
    if (text_[i_] == '-' || text_[i_] == '+') ++i_;
    const bool hex = text_[i_] == '0' && i_ + 2 < text_.size() &&
                     (text_[i_ + 1] == 'x' || text_[i_ + 1] == 'X') && is_hex(text_[i_ + 2]);
    if (hex) i_ += 2;
    const std::size_t digits = i_;
    while (i_ < text_.size() && (hex ? is_hex(text_[i_]) : is_digit(text_[i_]))) ++i_;
    if (!hex && i_ < text_.size() && (text_[i_] == '.' || text_[i_] == 'e' || text_[i_] == 'E')) {
      // A float: libconfig reads it with strtod, which saturates rather than wraps.
      while (i_ < text_.size() && (is_name_char(text_[i_]) || text_[i_] == '.' ||
                                   ((text_[i_] == '-' || text_[i_] == '+') &&
                                    (text_[i_ - 1] == 'e' || text_[i_ - 1] == 'E')))) {
        ++i_;
      }
      return;
    }
    const std::string literal(text_.substr(start, i_ - start));
    bool wide = false;
    if (i_ < text_.size() && text_[i_] == 'L') {
      wide = true;
      ++i_;
      if (i_ < text_.size() && text_[i_] == 'L') ++i_;
    }
    errno = 0;
    char* end = nullptr;
    bool fits = true;
    if (hex) {
      const unsigned long long v = std::strtoull(text_.data() + digits, &end, 16);
      fits = errno != ERANGE && (wide ? v <= LLONG_MAX : v <= INT_MAX);
    } else {
      const long long v = std::strtoll(literal.c_str(), &end, 10);
      fits = errno != ERANGE && (wide || (v >= INT_MIN && v <= INT_MAX));
    }
    if (!fits) {
      add(std::string(text_.substr(start, i_ - start)) +
          (wide ? " is out of the 64-bit integer range"
                : " is out of the 32-bit integer range (-2147483648 to 2147483647; a "
                  "larger value needs the L suffix, e.g. 4294967296L)"));
    }
  }

  bool next_is(char c) const { return i_ + 1 < text_.size() && text_[i_ + 1] == c; }

  void report(int& count, const std::string& what) {
    fit_ = false;
    if (count++ < kMaxReportsPerKind) add("contains " + what);
  }
  void add(const std::string& message) {
    fit_ = false;
    const auto [file, line] = src_.origin(line_);
    errors_.push_back({file, line, "", message});
  }

  const Source& src_;
  std::string_view text_;
  std::vector<ConfigError>& errors_;
  std::size_t i_ = 0;
  int line_ = 1;
  int depth_ = 0;
  std::vector<int> members_{0};  // settings seen in each open group, the file's first
  int nul_reports_ = 0;
  int utf8_reports_ = 0;
  bool fit_ = true;
};

}  // namespace

bool check_lexical(const Source& src, std::vector<ConfigError>& errors) {
  return Scanner(src, errors).run();
}

}  // namespace ferry::conf
