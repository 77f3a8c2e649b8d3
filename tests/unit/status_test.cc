#include "common/status.h"

#include <gtest/gtest.h>

#include <cerrno>

namespace cshm {
namespace {

TEST(Status, MapsEveryCodeToItsErrno) {
  struct Case {
    Status s;
    int err;
  } cases[] = {
      {Status::Ok(), 0},           {NotFound("x"), ENOENT},   {Exists("x"), EEXIST},
      {NotDir("x"), ENOTDIR},      {IsDir("x"), EISDIR},      {NotEmpty("x"), ENOTEMPTY},
      {NotPermitted("x"), EPERM},  {AccessDenied("x"), EACCES}, {NoSpace("x"), ENOSPC},
      {Invalid("x"), EINVAL},      {NameTooLong("x"), ENAMETOOLONG}, {NoData("x"), ENODATA},
      {RangeError("x"), ERANGE},        {NotSupported("x"), EOPNOTSUPP}, {TooBig("x"), EFBIG},
      {ArgTooBig("x"), E2BIG},     {IoError("x"), EIO},       {Corruption("x"), EIO},
      {Unavailable("x"), EIO},     {TimedOut("x"), EIO},      {Status::FromErrno(EROFS, "x"), EROFS},
      {WouldBlock("x"), EAGAIN},   {Interrupted("x"), EINTR},
  };
  for (const Case& c : cases) EXPECT_EQ(c.s.ToErrno(), c.err) << c.s.ToString();
}

TEST(Status, FromErrnoSaysWhatAndHint) {
  Status s = Status::FromErrno(EACCES, "opening /x", "try /y");
  EXPECT_EQ(s.message(), "opening /x: Permission denied; try /y");
  EXPECT_EQ(s.Annotate("start").message(), "start: opening /x: Permission denied; try /y");
}

Result<int> Half(int v) {
  if (v % 2) return Invalid("odd");
  return v / 2;
}
Result<int> Quarter(int v) {
  CSHM_ASSIGN_OR_RETURN(int h, Half(v));
  return Half(h);
}

TEST(Result, PropagatesTheFirstError) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_EQ(Quarter(6).status().code(), Status::Code::kInvalid);
  EXPECT_TRUE(Quarter(8).status().ok());
}

}  // namespace
}  // namespace cshm
