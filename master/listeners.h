// The master's listening sockets: one per configured listen address, opened before workers fork.
#pragma once

#include <memory>
#include <system_error>
#include <vector>

#include "conf/config.h"
#include "event/listening.h"

namespace ferry::master {

// Opens every proxy's listen addresses. On failure nothing stays open.
std::error_code open_listeners(const conf::Config& cfg,
                               std::vector<std::unique_ptr<event::Listening>>& out);

}  // namespace ferry::master
