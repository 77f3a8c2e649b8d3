// Status and Result<T>: expected failures as values (STYLE.md "Errors are values").
//
// A Status carries a Code and a human-readable message with the cause. The only
// place that turns a Status into an errno is ToErrno() in status.cc; FUSE
// callbacks, the shim and the CLI call it, nothing else invents errno values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace cshm {

class [[nodiscard]] Status {
 public:
  enum class Code : uint8_t {
    kOk = 0,
    kNotFound,        // ENOENT
    kExists,          // EEXIST
    kNotDir,          // ENOTDIR
    kIsDir,           // EISDIR
    kNotEmpty,        // ENOTEMPTY
    kNotPermitted,    // EPERM: the operation is never allowed for this caller
    kAccessDenied,    // EACCES: mode bits refuse it
    kNoSpace,         // ENOSPC
    kInvalid,         // EINVAL
    kNameTooLong,     // ENAMETOOLONG
    kNoData,          // ENODATA (missing xattr)
    kRange,           // ERANGE (buffer too small)
    kNotSupported,    // EOPNOTSUPP
    kTooBig,          // EFBIG
    kTooManyLinks,    // EMLINK
    kArgTooBig,       // E2BIG (e.g. an xattr value over 64 KiB)
    kBusy,            // EBUSY
    kWouldBlock,      // EAGAIN (a lock held elsewhere)
    kInterrupted,     // EINTR
    kMoved,           // EIO if it ever reaches a caller: a segment's owner changed (retry there)
    kIo,              // EIO: a local I/O error
    kCorruption,      // EIO: stored data does not decode
    kUnavailable,     // EIO: a peer or resource cannot be reached
    kTimedOut,        // EIO: a deadline passed
    kSystem,          // a raw errno from a system call, kept in errno_
  };

  Status() = default;
  static Status Ok() { return Status(); }
  static Status Error(Code code, std::string message) { return Status(code, std::move(message)); }
  // From a failed system call: keeps the errno (ToErrno returns it unchanged).
  // Message: "<what>: <strerror>[; <hint>]".
  static Status FromErrno(int err, std::string_view what, std::string_view hint = {});
  // A system error whose message is already written (e.g. received from a peer).
  static Status System(int err, std::string message) {
    Status s(Code::kSystem, std::move(message));
    s.errno_ = err;
    return s;
  }
  // The errno of a kSystem status (0 otherwise).
  int system_errno() const { return code_ == Code::kSystem ? errno_ : 0; }
  // kMoved with the node that serves the segment now (a typed field, kept
  // through Annotate and on the wire; the message is for people).
  static Status MovedTo(uint32_t node, std::string message) {
    Status s(Code::kMoved, std::move(message));
    s.errno_ = static_cast<int>(node) + 1;
    return s;
  }
  // That node; none for any other status, or a kMoved that names none.
  std::optional<uint32_t> moved_to() const {
    if (code_ != Code::kMoved || errno_ <= 0) return std::nullopt;
    return static_cast<uint32_t>(errno_ - 1);
  }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string ToString() const;
  int ToErrno() const;

  // Adds context in front of the message: "opening x: <message>".
  Status Annotate(std::string_view context) const;

 private:
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}
  Code code_ = Code::kOk;
  int errno_ = 0;  // kSystem: the errno; kMoved: the node + 1 (0: none)
  std::string message_;
};

#define CSHM_STATUS_CTOR(name, code) \
  inline Status name(std::string msg) { return Status::Error(Status::Code::code, std::move(msg)); }
CSHM_STATUS_CTOR(NotFound, kNotFound)
CSHM_STATUS_CTOR(Exists, kExists)
CSHM_STATUS_CTOR(NotDir, kNotDir)
CSHM_STATUS_CTOR(IsDir, kIsDir)
CSHM_STATUS_CTOR(NotEmpty, kNotEmpty)
CSHM_STATUS_CTOR(NotPermitted, kNotPermitted)
CSHM_STATUS_CTOR(AccessDenied, kAccessDenied)
CSHM_STATUS_CTOR(NoSpace, kNoSpace)
CSHM_STATUS_CTOR(Invalid, kInvalid)
CSHM_STATUS_CTOR(NameTooLong, kNameTooLong)
CSHM_STATUS_CTOR(NoData, kNoData)
CSHM_STATUS_CTOR(RangeError, kRange)
CSHM_STATUS_CTOR(NotSupported, kNotSupported)
CSHM_STATUS_CTOR(TooBig, kTooBig)
CSHM_STATUS_CTOR(TooManyLinks, kTooManyLinks)
CSHM_STATUS_CTOR(ArgTooBig, kArgTooBig)
CSHM_STATUS_CTOR(Busy, kBusy)
CSHM_STATUS_CTOR(WouldBlock, kWouldBlock)
CSHM_STATUS_CTOR(Interrupted, kInterrupted)
CSHM_STATUS_CTOR(IoError, kIo)
CSHM_STATUS_CTOR(Corruption, kCorruption)
CSHM_STATUS_CTOR(Unavailable, kUnavailable)
CSHM_STATUS_CTOR(TimedOut, kTimedOut)
#undef CSHM_STATUS_CTOR

// Result<T>: a T or a non-ok Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}  // NOLINT: must not be ok

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOkStatus;
    return ok() ? kOkStatus : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  // By value, so that `for (auto& x : *F())` does not dangle.
  T operator*() && { return std::move(value()); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace cshm

// Propagate a non-ok Status from an expression returning Status.
#define CSHM_RETURN_IF_ERROR(expr)         \
  do {                                     \
    ::cshm::Status _st = (expr);           \
    if (!_st.ok()) return _st;             \
  } while (0)

#define CSHM_CONCAT_INNER(a, b) a##b
#define CSHM_CONCAT(a, b) CSHM_CONCAT_INNER(a, b)
// Declare `lhs` from a Result<T> expression or return its Status.
#define CSHM_ASSIGN_OR_RETURN(lhs, expr) \
  CSHM_ASSIGN_OR_RETURN_IMPL(CSHM_CONCAT(_res_, __LINE__), lhs, expr)
#define CSHM_ASSIGN_OR_RETURN_IMPL(res, lhs, expr) \
  auto res = (expr);                               \
  if (!res.ok()) return res.status();              \
  lhs = std::move(res).value()
