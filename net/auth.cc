#include "net/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <stdexcept>

#include "common/bytes.h"

namespace cshm::net {
namespace {

std::string Mac(std::string_view secret, std::string_view label, std::string_view n1, std::string_view n2,
                uint32_t a, uint32_t b) {
  std::string msg(label);
  msg.append(n1).append(n2);
  ByteWriter w(&msg);
  w.PutU32(a);
  w.PutU32(b);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

}  // namespace

std::string RandomNonce() {
  std::string n(kNonceSize, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(n.data()), static_cast<int>(n.size())) != 1)
    throw std::runtime_error("RAND_bytes failed");
  return n;
}

std::string ClientProof(std::string_view secret, std::string_view server_nonce, std::string_view client_nonce,
                        uint32_t client, uint32_t server) {
  return Mac(secret, "cshm-client", server_nonce, client_nonce, client, server);
}

std::string ServerProof(std::string_view secret, std::string_view server_nonce, std::string_view client_nonce,
                        uint32_t client, uint32_t server) {
  return Mac(secret, "cshm-server", client_nonce, server_nonce, server, client);
}

bool ProofEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string Hello::Encode() const {
  std::string out;
  ByteWriter w(&out);
  w.PutU32(node);
  w.PutBytes(nonce);
  w.PutU64(incarnation);
  return out;
}

Result<Hello> Hello::Decode(std::string_view in) {
  Hello h;
  ByteReader r(in);
  r.GetU32(&h.node);
  r.GetBytes(&h.nonce);
  r.GetU64(&h.incarnation);
  if (!r.AtEnd() || h.nonce.size() != kNonceSize) return Invalid("malformed hello");
  return h;
}

std::string AuthRequest::Encode() const {
  std::string out;
  ByteWriter w(&out);
  w.PutU32(node);
  w.PutBytes(nonce);
  w.PutU64(incarnation);
  w.PutBytes(proof);
  return out;
}

Result<AuthRequest> AuthRequest::Decode(std::string_view in) {
  AuthRequest a;
  ByteReader r(in);
  r.GetU32(&a.node);
  r.GetBytes(&a.nonce);
  r.GetU64(&a.incarnation);
  r.GetBytes(&a.proof);
  if (!r.AtEnd() || a.nonce.size() != kNonceSize) return Invalid("malformed auth request");
  return a;
}

}  // namespace cshm::net
