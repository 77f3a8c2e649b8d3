// Every message parser, chosen by the first byte; a message that decodes must
// survive a re-encode and decode. Length fields must not make us allocate
// more than the input holds (run with -malloc_limit_mb).
#include <cstdint>
#include <string>

#include "meta/meta_rpc.h"
#include "net/auth.h"
#include "ownership/messages.h"
#include "store/inode_record.h"

namespace {

using namespace cshm;

// A namespace that knows nothing: ServeMetaRequest's dispatch still runs.
class NoMeta : public meta::MetaService {
 public:
  Result<meta::InodeRecord> Lookup(uint64_t, std::string_view, const meta::Caller&) override { return NotFound("x"); }
  void Forget(uint64_t, uint64_t, const meta::Caller&) override {}
  Result<meta::InodeRecord> GetAttr(uint64_t) override { return NotFound("x"); }
  Result<meta::InodeRecord> SetAttr(uint64_t, const meta::SetAttrRequest&) override { return NotFound("x"); }
  Result<meta::InodeRecord> NoteWrite(uint64_t, uint64_t, bool) override { return NotFound("x"); }
  Result<meta::InodeRecord> Mknod(uint64_t, std::string_view, uint32_t, uint64_t, const meta::Caller&) override {
    return NotFound("x");
  }
  Result<meta::InodeRecord> Mkdir(uint64_t, std::string_view, uint32_t, const meta::Caller&) override {
    return NotFound("x");
  }
  Result<meta::InodeRecord> Symlink(uint64_t, std::string_view, std::string_view, const meta::Caller&) override {
    return NotFound("x");
  }
  Result<meta::InodeRecord> Link(uint64_t, uint64_t, std::string_view, const meta::Caller&) override { return NotFound("x"); }
  Status Unlink(uint64_t, std::string_view, const meta::Caller&) override { return NotFound("x"); }
  Status Rmdir(uint64_t, std::string_view, const meta::Caller&) override { return NotFound("x"); }
  Status Rename(uint64_t, std::string_view, uint64_t, std::string_view, unsigned, const meta::Caller&) override { return NotFound("x"); }
  Result<std::string> Readlink(uint64_t) override { return NotFound("x"); }
  Result<std::vector<meta::ListedEntry>> ListDir(uint64_t) override { return NotFound("x"); }
  Status SetXattr(uint64_t, std::string_view, std::string_view, int) override { return NotFound("x"); }
  Result<std::string> GetXattr(uint64_t, std::string_view) override { return NotFound("x"); }
  Result<std::vector<std::string>> ListXattrs(uint64_t) override { return NotFound("x"); }
  Status RemoveXattr(uint64_t, std::string_view) override { return NotFound("x"); }
  Status SetOwner(uint64_t, uint32_t) override { return NotFound("x"); }
};

template <typename T>
void RoundTrip(std::string_view in) {
  auto m = T::Decode(in);
  if (!m.ok()) return;
  auto again = T::Decode(m->Encode());
  if (!again.ok()) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 16) {
    case 0: RoundTrip<ownership::FetchRequest>(in); break;
    case 1: {
      RoundTrip<ownership::FetchReply>(in);
      // The copy-free view accepts exactly what Decode accepts, and the same bytes.
      uint64_t size = 0;
      auto view = ownership::FetchReply::View(in, &size);
      auto full = ownership::FetchReply::Decode(in);
      if (view.ok() != full.ok() || (view.ok() && (*view != full->data || size != full->size))) __builtin_trap();
      break;
    }
    case 2:
      RoundTrip<ownership::WriteBackRequest>(in);
      RoundTrip<ownership::WriteBackReply>(in);
      break;
    case 3:
      RoundTrip<ownership::TruncateRequest>(in);
      RoundTrip<ownership::FallocateRequest>(in);
      break;
    case 4: RoundTrip<ownership::InvalidateRequest>(in); break;
    case 5: RoundTrip<ownership::LockMessage>(in); break;
    case 6: RoundTrip<ownership::LockReply>(in); break;
    case 7:
      RoundTrip<ownership::MigratePages>(in);
      RoundTrip<ownership::MigratePagesReply>(in);
      break;
    case 8: RoundTrip<ownership::MigrateInstall>(in); break;
    case 9: RoundTrip<ownership::ControlRequest>(in); break;
    case 10: RoundTrip<net::Hello>(in); RoundTrip<net::AuthRequest>(in); break;
    case 11: {
      auto r = store::InodeRecord::Decode(7, in);
      if (r.ok() && !store::InodeRecord::Decode(7, r->Encode()).ok()) __builtin_trap();
      break;
    }
    case 12: {
      NoMeta none;
      (void)meta::ServeMetaRequest(none, 1, in);
      RoundTrip<meta::MetaRequest>(in);
      RoundTrip<meta::NameChange>(in);
      break;
    }
    case 13: (void)ownership::DecodeU64(in); break;
    case 14:
      RoundTrip<meta::ReferenceSnapshot>(in);
      RoundTrip<ownership::NodeStatus>(in);
      break;
    case 15: {
      RoundTrip<ownership::SemRequest>(in);
      RoundTrip<ownership::SemReply>(in);
      RoundTrip<ownership::SemWake>(in);
      // A semaphore set's saved state (from the state dir): what loads saves
      // the same bytes again, and can be operated on.
      ownership::SemaphoreTable t;
      if (t.Load(1, in).ok()) {
        const std::string saved = t.Encode(1);
        ownership::SemaphoreTable again;
        if (!again.Load(1, saved).ok() || again.Encode(1) != saved) __builtin_trap();
        std::vector<ownership::SemCompleted> done;
        (void)t.Op(1, ownership::SemProcess{1, 2}, {ownership::SemOpBuf{0, -1, 0}}, 3, 0, &done);
        t.DropNode(1, 0, &done);
        t.Exited(ownership::SemProcess{2, 3}, 0, &done);
      }
      break;
    }
  }
  return 0;
}
