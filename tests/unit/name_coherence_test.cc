// NameCoherence (fs/name_coherence.h) with a fake network: who is told, who
// is waited for, and for how long.
#include "fs/name_coherence.h"

#include <gtest/gtest.h>

#include <map>
#include <vector>

namespace cshm::fs {
namespace {

using Clock = meta::NameGrants::Clock;

struct Net {
  std::vector<uint32_t> called, sent;
  std::map<uint32_t, bool> answers;  // a node not in it never answers
  int local_drops = 0;
  std::vector<uint32_t> unconfirmed;

  NameCoherence Make(uint32_t self, std::vector<uint32_t> peers, meta::NameGrants* grants) {
    NameCoherence::Env e;
    e.self = self;
    e.peers = std::move(peers);
    e.grants = grants;
    e.call = [this](uint32_t node, std::string payload, std::function<void(bool)> done, std::chrono::milliseconds) {
      EXPECT_TRUE(meta::NameChange::Decode(payload).ok());
      called.push_back(node);
      auto a = answers.find(node);
      if (a != answers.end()) done(a->second);
    };
    e.send = [this](uint32_t node, std::string) { sent.push_back(node); };
    e.drop_local = [this](const meta::NameChange&) { local_drops++; };
    e.unconfirmed = [this](uint32_t node) { unconfirmed.push_back(node); };
    return NameCoherence(std::move(e));
  }
};

meta::NameChange ChangeBy(uint32_t by) {
  meta::NameChange c;
  c.by = by;
  c.dirs = {1};
  c.names = {{1, "f"}};
  return c;
}

TEST(NameCoherenceTest, NodesThatMayHoldTheNameAreWaitedForTheOthersToldTheMakerLeftOut) {
  meta::NameGrants grants;
  grants.Granted(1, 60000);
  grants.Granted(2, 60000);  // node 3 asked nothing lately
  Net net;
  net.answers = {{1, true}};
  NameCoherence names = net.Make(0, {1, 2, 3}, &grants);
  names.Changed(ChangeBy(2));  // node 2's kernel made it
  EXPECT_LT(Clock::now(), grants.Until(1)) << "waited although every node that may hold it confirmed";
  EXPECT_EQ(net.called, std::vector<uint32_t>{1});
  EXPECT_EQ(net.sent, std::vector<uint32_t>{3});
  EXPECT_EQ(net.local_drops, 1);  // the metadata node's own kernel, which did not make it
  meta::NameChange created = ChangeBy(2);
  created.names.clear();  // a creation: the directory's attributes only
  names.Changed(created);
  EXPECT_EQ(net.sent, std::vector<uint32_t>{3}) << "an idle node was woken for a directory's attributes";
  EXPECT_EQ(net.called, (std::vector<uint32_t>{1, 1}));
  net.called = {1};

  net.answers[2] = true;
  names.Changed(ChangeBy(0));  // made through the metadata node's own kernel
  EXPECT_EQ(net.local_drops, 2);  // the creation's only
  EXPECT_EQ(net.called, (std::vector<uint32_t>{1, 1, 2}));
  EXPECT_TRUE(net.unconfirmed.empty());
}

TEST(NameCoherenceTest, ANodeThatCannotConfirmIsWaitedForUntilItsWindowCloses) {
  meta::NameGrants grants;
  grants.Granted(1, 100);
  Net net;
  net.answers = {{1, false}};  // unreachable: the call fails at once
  NameCoherence names = net.Make(0, {1}, &grants);
  names.Changed(ChangeBy(0));
  EXPECT_GE(Clock::now(), grants.Until(1)) << "returned while node 1's kernel may still hold the name";
  EXPECT_EQ(net.unconfirmed, std::vector<uint32_t>{1});

  meta::NameGrants silent_grants;
  silent_grants.Granted(1, 100);
  Net silent;  // never answers at all
  NameCoherence silent_names = silent.Make(0, {1}, &silent_grants);
  silent_names.Changed(ChangeBy(0));
  EXPECT_GE(Clock::now(), silent_grants.Until(1));
  EXPECT_EQ(silent.unconfirmed, std::vector<uint32_t>{1});
}

}  // namespace
}  // namespace cshm::fs
