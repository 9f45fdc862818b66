// The effective configuration printed in libconfig syntax (ferry -T): every setting, defaults
// filled in, in a form that loads back to an equal Config.
#pragma once

#include <string>

#include "conf/config.h"

namespace ferry::conf {

std::string to_text(const Config& cfg);

}  // namespace ferry::conf
