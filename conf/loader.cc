// Loading the configuration: the text checked for what libconfig would misread, parsed, then
// walked by the schema (conf/schema.cc); libconfig++'s exceptions stop here.
#include "conf/loader.h"

#include <libconfig.h++>

#include "conf/lexical.h"
#include "conf/reader.h"
#include "conf/schema.h"
#include "conf/source.h"

namespace ferry::conf {
namespace {

LoadResult load(const Source& src, std::vector<ConfigError> errors,
                HostNames names = HostNames::resolve) {
  LoadResult result;
  result.errors = std::move(errors);
  // What libconfig would misread or choke on is reported instead of parsed.
  if (!check_lexical(src, result.errors)) return result;
  libconfig::Config lc;
  try {
    lc.readString(src.text());
  } catch (const libconfig::ParseException& e) {
    const auto [file, line] = src.origin(e.getLine());
    result.errors.push_back({file, line, "", std::string(e.getError())});
    return result;
  }
  Config cfg;
  try {
    Reader reader(src, result.errors, result.warnings, names);
    read_root(reader, lc.getRoot(), cfg);
  } catch (const libconfig::ConfigException& e) {
    // Every access above checks the type first; this is a bug, not a user error.
    result.errors.push_back({src.main_file(), 0, "", std::string("internal error: ") + e.what()});
  }
  if (result.errors.empty()) result.config = std::move(cfg);
  return result;
}

}  // namespace

LoadResult load_file(const std::string& path, HostNames names) {
  std::vector<ConfigError> errors;
  const Source src = Source::read_file(path, errors);
  if (!errors.empty() && src.text().empty()) {
    LoadResult result;
    result.errors = std::move(errors);
    return result;
  }
  return load(src, std::move(errors), names);
}

LoadResult load_text(std::string_view text, const std::string& name, const std::string& folder) {
  std::vector<ConfigError> errors;
  const Source src = Source::from_text(text, name, folder, errors);
  return load(src, std::move(errors));
}

}  // namespace ferry::conf
