#include "common/status.h"

#include <cerrno>
#include <cstring>

namespace cshm {

Status Status::FromErrno(int err, std::string_view what, std::string_view hint) {
  Status s(Code::kSystem, std::string(what) + ": " + std::strerror(err));
  if (!hint.empty()) s.message_ += "; " + std::string(hint);
  s.errno_ = err;
  return s;
}

int Status::ToErrno() const {
  switch (code_) {
    case Code::kOk: return 0;
    case Code::kNotFound: return ENOENT;
    case Code::kExists: return EEXIST;
    case Code::kNotDir: return ENOTDIR;
    case Code::kIsDir: return EISDIR;
    case Code::kNotEmpty: return ENOTEMPTY;
    case Code::kNotPermitted: return EPERM;
    case Code::kAccessDenied: return EACCES;
    case Code::kNoSpace: return ENOSPC;
    case Code::kInvalid: return EINVAL;
    case Code::kNameTooLong: return ENAMETOOLONG;
    case Code::kNoData: return ENODATA;
    case Code::kRange: return ERANGE;
    case Code::kNotSupported: return EOPNOTSUPP;
    case Code::kTooBig: return EFBIG;
    case Code::kTooManyLinks: return EMLINK;
    case Code::kArgTooBig: return E2BIG;
    case Code::kBusy: return EBUSY;
    case Code::kWouldBlock: return EAGAIN;
    case Code::kInterrupted: return EINTR;
    case Code::kMoved: return EIO;
    case Code::kIo:
    case Code::kCorruption:
    case Code::kUnavailable:
    case Code::kTimedOut: return EIO;
    case Code::kSystem: return errno_ != 0 ? errno_ : EIO;
  }
  return EIO;
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  return message_;
}

Status Status::Annotate(std::string_view context) const {
  if (ok()) return *this;
  Status s = *this;
  s.message_ = std::string(context) + ": " + message_;
  return s;
}

}  // namespace cshm
