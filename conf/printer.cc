// to_text(): the effective configuration, every group printed by its schema table.
#include "conf/printer.h"

#include "conf/schema.h"
#include "conf/writer.h"

namespace ferry::conf {

std::string to_text(const Config& cfg) {
  Writer w(cfg);
  w.line("# ferry: effective configuration (defaults filled in)");
  print_root(w, cfg);
  return w.take();
}

}  // namespace ferry::conf
