// Little-endian byte encoding shared by the store records and (later) the wire
// codec. ByteReader never reads past its input: every Get* returns false once
// the input is exhausted and the reader stays failed (sticky), so a decoder can
// check ok() once at the end.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace cshm {

class ByteWriter {
 public:
  explicit ByteWriter(std::string* out) : out_(out) {}
  void PutU8(uint8_t v) { out_->push_back(static_cast<char>(v)); }
  void PutU16(uint16_t v) { PutLE(v); }
  void PutU32(uint32_t v) { PutLE(v); }
  void PutU64(uint64_t v) { PutLE(v); }
  void PutI64(int64_t v) { PutLE(static_cast<uint64_t>(v)); }
  // Length-prefixed (u32) bytes.
  void PutBytes(std::string_view s) {
    PutU32(static_cast<uint32_t>(s.size()));
    out_->append(s);
  }

 private:
  template <typename T>
  void PutLE(T v) {
    char b[sizeof(T)];
    for (size_t i = 0; i < sizeof(T); i++) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
    out_->append(b, sizeof(T));
  }
  std::string* out_;
};

class ByteReader {
 public:
  explicit ByteReader(std::string_view in) : in_(in) {}
  bool GetU8(uint8_t* v) { return GetLE(v); }
  bool GetU16(uint16_t* v) { return GetLE(v); }
  bool GetU32(uint32_t* v) { return GetLE(v); }
  bool GetU64(uint64_t* v) { return GetLE(v); }
  bool GetI64(int64_t* v) {
    uint64_t u;
    if (!GetLE(&u)) return false;
    *v = static_cast<int64_t>(u);
    return true;
  }
  // Length-prefixed bytes; fails (without allocating) if the length exceeds
  // what is left of the input.
  bool GetBytes(std::string* s) {
    std::string_view v;
    if (!GetView(&v)) return false;
    s->assign(v);
    return true;
  }
  // The same, as a view into the input (valid while the input is): no copy.
  bool GetView(std::string_view* s) {
    uint32_t n;
    if (!GetU32(&n) || n > in_.size() - pos_) return Fail();
    *s = in_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  bool ok() const { return ok_; }
  bool AtEnd() const { return ok_ && pos_ == in_.size(); }

 private:
  bool Fail() {
    ok_ = false;
    return false;
  }
  template <typename T>
  bool GetLE(T* v) {
    if (!ok_ || in_.size() - pos_ < sizeof(T)) return Fail();
    T r = 0;
    for (size_t i = 0; i < sizeof(T); i++)
      r |= static_cast<T>(static_cast<uint8_t>(in_[pos_ + i])) << (8 * i);
    pos_ += sizeof(T);
    *v = r;
    return true;
  }
  std::string_view in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

// Big-endian u64 for RocksDB keys, so that keys sort by number.
inline void PutKeyU64(std::string* out, uint64_t v) {
  for (int i = 7; i >= 0; i--) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
inline uint64_t GetKeyU64(std::string_view in) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8 && i < in.size(); i++) v = (v << 8) | static_cast<uint8_t>(in[i]);
  return v;
}

}  // namespace cshm
