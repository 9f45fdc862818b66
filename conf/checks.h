// Checks across settings, made once each group is read: names given twice, listen addresses
// that collide (equal, or one the wildcard of the other's family on the same port).
#pragma once

#include "conf/config.h"
#include "conf/reader.h"

namespace ferry::conf {

// Each group of `list` (proxies, upstreams) has a name no other has; `what` names them in
// the error.
void check_unique_names(Reader& r, const Setting& list, const char* what);
// No two listen addresses of the proxies and the status endpoint collide; takes them resolved.
void check_listen_addresses(Reader& r, const Setting& root, const Config& cfg);

}  // namespace ferry::conf
