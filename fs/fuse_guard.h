// Guard: runs the body of one FUSE callback so that no exception crosses
// into libfuse (C code, which cannot unwind): one that escapes the body is
// logged and the request answered with EIO, unless the body had answered it
// already, which libfuse would do a second time on a request its first reply
// freed (issue 15, item 12: a READ answered spliced from a file, then an
// exception).
//
// `reply_error(errno)` answers the request (fuse_reply_err in fuse_ops.cc);
// `replied`, if not null, is true once the body answered.
#pragma once

#include <spdlog/spdlog.h>

#include <cerrno>
#include <exception>

namespace cshm::fs {

template <typename Body, typename ReplyError>
void GuardRequest(const char* op, Body&& body, ReplyError&& reply_error, const bool* replied = nullptr) {
  try {
    body();
    return;
  } catch (const std::exception& e) {
    spdlog::error("{}: internal error: {}", op, e.what());
  } catch (...) {
    spdlog::error("{}: internal error", op);
  }
  if (replied == nullptr || !*replied) reply_error(EIO);
}

}  // namespace cshm::fs
