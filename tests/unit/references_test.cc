// Per-node reference counts and their replacement by a node's own table,
// with requests overtaking each other as they do on the metadata node's pools.
#include "meta/references.h"

#include <gtest/gtest.h>

#include <thread>

namespace cshm::meta {
namespace {

using namespace std::chrono_literals;
using State = NodeReferences::State;

TEST(NodeReferencesTest, CountsPerNodeAndSettlesOnlyWhenEveryNodeIsKnown) {
  NodeReferences r(0);
  r.Expect({1, 2});
  EXPECT_FALSE(r.Settled());
  r.Take(7, 0, 0);
  r.Take(7, 1, 10);
  EXPECT_EQ(r.Count(7), 2u);
  r.Drop(7, 1, 5, 11);  // more than it holds: clamps, never another node's
  EXPECT_EQ(r.Count(7), 1u);
  EXPECT_EQ(r.Holders(7), std::vector<uint32_t>{0});
  r.Asking(1);
  r.Register(1, ReferenceSnapshot{12, {}});
  EXPECT_EQ(r.state(1), State::kRegistered);
  EXPECT_FALSE(r.Settled());
  r.Gone(2);
  EXPECT_TRUE(r.Settled());
  r.Unknown(2);
  EXPECT_FALSE(r.Settled());
}

TEST(NodeReferencesTest, ARegistrationReplacesCountsAndKeepsDeltasThatOvertookIt) {
  NodeReferences r(0);
  r.Expect({1});
  r.Take(5, 1, 100);  // a count the node's table no longer has (a lost Forget)
  r.Take(5, 1, 101);
  r.Asking(1);
  // The node's table at 110: ino 5 once, ino 6 once. A lookup numbered 110,
  // sent after the snapshot, is applied before the snapshot arrives.
  r.Take(6, 1, 110);
  r.Register(1, ReferenceSnapshot{110, {{5, 1}, {6, 1}}});
  EXPECT_EQ(r.Count(5), 1u);
  EXPECT_EQ(r.Count(6), 2u);
  // A Forget numbered before the snapshot arrives late: it is in the table already.
  r.Drop(5, 1, 1, 105);
  EXPECT_EQ(r.Count(5), 1u);
  r.Drop(5, 1, 1, 111);
  EXPECT_EQ(r.Count(5), 0u);
  EXPECT_FALSE(r.Held(5));
}

TEST(NodeReferencesTest, AnOlderOrUnaskedSnapshotIsIgnored) {
  NodeReferences r(0);
  r.Expect({1});
  r.Register(1, ReferenceSnapshot{50, {{9, 1}}});  // nobody asked
  EXPECT_EQ(r.state(1), State::kUnknown);
  r.Asking(1);
  r.Register(1, ReferenceSnapshot{50, {{9, 1}}});
  r.Asking(1);
  r.Register(1, ReferenceSnapshot{40, {}});  // older than the table we have
  EXPECT_EQ(r.Count(9), 1u);
}

TEST(NodeReferencesTest, AGoneNodesReferencesNoLongerCount) {
  NodeReferences r(0);
  r.Expect({1});
  r.Take(3, 1, 1);
  r.Gone(1);
  EXPECT_FALSE(r.Held(3));
  EXPECT_TRUE(r.Settled());
}

TEST(NodeReferencesTest, SnapshotsSurviveTheCodecAndGarbageIsRefused) {
  ReferenceSnapshot s{77, {{1, 2}, {3, 4}}};
  auto d = ReferenceSnapshot::Decode(s.Encode());
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->seq, 77u);
  EXPECT_EQ(d->held, s.held);
  std::string enc = s.Encode();
  for (size_t n = 0; n < enc.size(); n++) EXPECT_FALSE(ReferenceSnapshot::Decode(enc.substr(0, n)).ok()) << n;
  std::string huge = ReferenceSnapshot{1, {}}.Encode();
  huge[8] = '\xff';  // claims 255 entries with no bytes for them
  EXPECT_FALSE(ReferenceSnapshot::Decode(huge).ok());
  EXPECT_FALSE(ReferenceSnapshot::Decode(ReferenceSnapshot{1, {{5, 0}}}.Encode()).ok());
}

TEST(HeldReferencesTest, ASnapshotWaitsForRequestsInFlightAndNumbersWhatItHolds) {
  HeldReferences h(1000);
  uint64_t a = h.Begin();
  EXPECT_EQ(a, 1000u);
  h.End(42);
  uint64_t b = h.Begin();  // in flight
  EXPECT_EQ(h.Snapshot(20ms).status().code(), Status::Code::kBusy);
  Result<ReferenceSnapshot> snap = Busy("not taken yet");
  std::thread later([&] { snap = h.Snapshot(5s); });
  std::this_thread::sleep_for(20ms);  // let it start waiting; the result does not depend on it
  h.End(0);                           // that request failed: it took nothing
  later.join();
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->seq, b + 1);
  const std::vector<std::pair<uint64_t, uint64_t>> want{{42, 1}};
  EXPECT_EQ(snap->held, want);
  EXPECT_EQ(h.Forget(42, 3), b + 1);
  EXPECT_EQ(h.Count(42), 0u);
  EXPECT_TRUE(h.Snapshot(1s)->held.empty());
}

}  // namespace
}  // namespace cshm::meta
