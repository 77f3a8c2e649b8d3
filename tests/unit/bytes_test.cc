#include "common/bytes.h"

#include <gtest/gtest.h>

namespace cshm {
namespace {

TEST(Bytes, RoundTrips) {
  std::string buf;
  ByteWriter w(&buf);
  w.PutU8(7);
  w.PutU32(0xdeadbeef);
  w.PutU64(0x0102030405060708ull);
  w.PutI64(-5);
  w.PutBytes("hello");
  ByteReader r(buf);
  uint8_t a;
  uint32_t b;
  uint64_t c;
  int64_t d;
  std::string e;
  ASSERT_TRUE(r.GetU8(&a) && r.GetU32(&b) && r.GetU64(&c) && r.GetI64(&d) && r.GetBytes(&e));
  EXPECT_EQ(a, 7);
  EXPECT_EQ(b, 0xdeadbeef);
  EXPECT_EQ(c, 0x0102030405060708ull);
  EXPECT_EQ(d, -5);
  EXPECT_EQ(e, "hello");
  EXPECT_TRUE(r.AtEnd());
}

TEST(Bytes, TruncatedInputFailsAndStaysFailed) {
  std::string buf;
  ByteWriter(&buf).PutU64(1);
  ByteReader r(std::string_view(buf).substr(0, 5));
  uint64_t v;
  EXPECT_FALSE(r.GetU64(&v));
  uint8_t b;
  EXPECT_FALSE(r.GetU8(&b));  // sticky
  EXPECT_FALSE(r.ok());
}

TEST(Bytes, LengthFieldLargerThanInputIsRejected) {
  std::string buf;
  ByteWriter w(&buf);
  w.PutU32(0xffffffff);  // claims 4 GiB follow
  buf += "abc";
  ByteReader r(buf);
  std::string s;
  EXPECT_FALSE(r.GetBytes(&s));
  EXPECT_TRUE(s.empty());
}

TEST(Bytes, KeysSortNumerically) {
  std::string a, b;
  PutKeyU64(&a, 255);
  PutKeyU64(&b, 256);
  EXPECT_LT(a, b);
  EXPECT_EQ(GetKeyU64(b), 256u);
}

}  // namespace
}  // namespace cshm
