#include "net/auth.h"

#include <gtest/gtest.h>

namespace cshm::net {
namespace {

TEST(Auth, ProofsBindSecretNoncesAndBothIds) {
  const std::string sn = RandomNonce(), cn = RandomNonce();
  EXPECT_NE(sn, cn);
  const std::string p = ClientProof("secret-aaaaaaaaaa", sn, cn, 1, 0);
  EXPECT_TRUE(ProofEquals(p, ClientProof("secret-aaaaaaaaaa", sn, cn, 1, 0)));
  EXPECT_FALSE(ProofEquals(p, ClientProof("secret-bbbbbbbbbb", sn, cn, 1, 0)));
  EXPECT_FALSE(ProofEquals(p, ClientProof("secret-aaaaaaaaaa", RandomNonce(), cn, 1, 0)));  // replay
  EXPECT_FALSE(ProofEquals(p, ClientProof("secret-aaaaaaaaaa", sn, cn, 2, 0)));             // other id
  EXPECT_FALSE(ProofEquals(p, ServerProof("secret-aaaaaaaaaa", sn, cn, 1, 0)));             // reflection
}

TEST(Auth, MessagesRoundTripAndRejectTruncation) {
  AuthRequest a{3, RandomNonce(), 77, "proof"};
  auto d = AuthRequest::Decode(a.Encode());
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->node, 3u);
  EXPECT_EQ(d->incarnation, 77u);
  EXPECT_EQ(d->proof, "proof");
  std::string enc = a.Encode();
  for (size_t n = 0; n < enc.size(); n++) EXPECT_FALSE(AuthRequest::Decode(enc.substr(0, n)).ok()) << n;
  Hello h{1, RandomNonce(), 5};
  EXPECT_TRUE(Hello::Decode(h.Encode()).ok());
  EXPECT_FALSE(Hello::Decode("garbage").ok());
}

}  // namespace
}  // namespace cshm::net
