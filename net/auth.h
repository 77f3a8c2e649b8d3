// Peer authentication: challenge-response over the cluster's shared secret
// with HMAC-SHA256 (OpenSSL libcrypto).
//
//   server -> client  Hello  {server id, server nonce, server incarnation}
//   client -> server  Auth   {client id, client nonce, client incarnation,
//                             HMAC(secret, "cshm-client" sn cn client server)}
//   server -> client  Welcome{HMAC(secret, "cshm-server" cn sn server client)}
//
// Fresh nonces on both sides make a recorded handshake useless on a new
// connection; binding both ids into the MACs stops a proof for one pair of
// nodes from being used for another. Nothing but the handshake is accepted on
// a connection before it completes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace cshm::net {

constexpr size_t kNonceSize = 32;

std::string RandomNonce();
std::string ClientProof(std::string_view secret, std::string_view server_nonce, std::string_view client_nonce,
                        uint32_t client, uint32_t server);
std::string ServerProof(std::string_view secret, std::string_view server_nonce, std::string_view client_nonce,
                        uint32_t client, uint32_t server);
// Constant-time comparison.
bool ProofEquals(std::string_view a, std::string_view b);

struct Hello {
  uint32_t node = 0;
  std::string nonce;
  uint64_t incarnation = 0;
  std::string Encode() const;
  static Result<Hello> Decode(std::string_view in);
};

struct AuthRequest {
  uint32_t node = 0;
  std::string nonce;
  uint64_t incarnation = 0;
  std::string proof;
  std::string Encode() const;
  static Result<AuthRequest> Decode(std::string_view in);
};

}  // namespace cshm::net
