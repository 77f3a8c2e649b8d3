// Frame headers from a hostile peer: never crash, never accept a length over
// the limit, never read past the input.
#include <cstdint>
#include <string>

#include "net/frame_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cshm::net;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  FrameHeader h;
  std::string why;
  DecodeResult r = DecodeHeader(in, &h, &why);
  if (r == DecodeResult::kGood) {
    if (h.length > kMaxPayload) __builtin_trap();
    // Re-encoding a good header gives back its fields (the 18 bytes before
    // the reserved field and the length).
    std::string again;
    EncodeFrame(h, "", &again);
    if (in.substr(0, 18) != std::string_view(again).substr(0, 18)) __builtin_trap();
  }
  if (r == DecodeResult::kNeedMore && size >= kHeaderSize) __builtin_trap();
  return 0;
}
