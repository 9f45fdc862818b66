// A pass over the configuration text before libconfig sees it, for what libconfig 1.5 gets wrong
// silently or dangerously: NUL bytes (the text would end there), bytes that are not UTF-8,
// nesting deep enough to exhaust its parser, groups big enough to take it minutes, and integers
// it wraps to 32 bits.
#pragma once

#include <vector>

#include "conf/error.h"
#include "conf/source.h"

namespace ferry::conf {

// Settings in one group (ferry's largest has about 20).
inline constexpr int kMaxMembers = 1000;
// Groups, lists and arrays nested deeper than this are refused (ferry's own settings need four).
inline constexpr int kMaxNesting = 64;

// Appends one error per problem (at most a few of each kind) with the file and line it is on;
// true when the text is fit to be handed to libconfig.
bool check_lexical(const Source& src, std::vector<ConfigError>& errors);

}  // namespace ferry::conf
