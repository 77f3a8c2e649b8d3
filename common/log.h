// Logging set-up: spdlog's default logger, to stderr in the foreground and to a
// file when running in the background. Code logs with spdlog::info(...) etc.
#pragma once

#include <string>

#include "common/status.h"

namespace cshm {

// level: trace, debug, info, warn, error, off. log_file empty: stderr only.
Status InitLogging(const std::string& level, const std::string& log_file, bool to_stderr);

}  // namespace cshm
