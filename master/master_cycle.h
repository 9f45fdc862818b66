// The master process (nginx's ngx_master_process_cycle): owns the configuration, the listening
// sockets and the signals; forks the workers, replaces the ones that die, reloads by starting a
// new generation and retiring the old one only once every new worker serves.
#pragma once

#include <string>

#include "conf/config.h"

namespace ferry::master {

// Runs until stopped; returns the process exit status.
int run_master(const std::string& conf_file, conf::Config config);

}  // namespace ferry::master
