// The configuration files the project ships as valid: packaging/*.conf, packaging/etc/*.conf and
// tests/integration/configs/valid/*.conf (their include fragments are not listed).
#pragma once

#include <string>
#include <vector>

namespace ferry::test {

std::string source_root();
std::vector<std::string> shipped_valid_configs();

}  // namespace ferry::test
