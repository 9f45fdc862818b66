// A load's errors as text, one "FILE:LINE: SETTING: what" per line: what the conf tests compare.
#pragma once

#include <string>

#include "conf/loader.h"

namespace ferry::conf {

inline std::string errors_of(const LoadResult& r) {
  std::string out;
  for (const auto& e : r.errors) out += e.to_string() + "\n";
  return out;
}

}  // namespace ferry::conf
