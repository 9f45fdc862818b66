// Ticket keys derived per period from the master's secret, and OpenSSL's ticket key callback
// that encrypts with the current period's and decrypts with the current or previous one's.
#include "worker/tls/ticket_keys.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#include <cstring>

#include "conf/openssl_ptr.h"
#include "conf/tls_check.h"

namespace ferry::worker::tls {
namespace {

// What a context's callback reads: held by the SSL_CTX (ex data), freed with it.
struct TicketUse {
  std::shared_ptr<const TicketKeys> keys;
  std::chrono::milliseconds lifetime;
};

void free_ticket_use(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
  delete static_cast<TicketUse*>(ptr);
}

int ticket_use_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, free_ticket_use);
  return index;
}

bool set_keys(const TicketKey& k, unsigned char* iv, EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac,
              bool encrypt) {
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY,
                                        const_cast<unsigned char*>(k.hmac.data()), k.hmac.size()),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_end()};
  if (EVP_MAC_CTX_set_params(mac, params) != 1) return false;
  return encrypt ? EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, k.aes.data(), iv) == 1
                 : EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, k.aes.data(), iv) == 1;
}

// OpenSSL's contract: encrypting, 1 = done, -1 = failed; decrypting, 1 = key found, 2 = found
// but the ticket should be renewed, 0 = no such key (a full handshake), -1 = failed.
int ticket_callback(SSL* ssl, unsigned char key_name[16], unsigned char* iv, EVP_CIPHER_CTX* cipher,
                    EVP_MAC_CTX* mac, int encrypt) {
  const auto* use =
      static_cast<const TicketUse*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ticket_use_index()));
  if (use == nullptr) return -1;
  const std::int64_t now = use->keys->period(use->lifetime);
  TicketKey k;
  if (encrypt == 1) {
    if (!use->keys->key(now, k)) return -1;
    if (RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1) return -1;
    std::memcpy(key_name, k.name.data(), k.name.size());
    return set_keys(k, iv, cipher, mac, true) ? 1 : -1;
  }
  for (const std::int64_t n : {now, now - 1}) {
    if (!use->keys->key(n, k)) return -1;
    if (std::memcmp(key_name, k.name.data(), k.name.size()) != 0) continue;
    if (!set_keys(k, iv, cipher, mac, false)) return -1;
    return n == now ? 1 : 2;
  }
  return 0;
}

}  // namespace

TicketKeys::TicketKeys(std::span<const unsigned char, kSecretSize> secret) {
  std::memcpy(secret_.data(), secret.data(), kSecretSize);
}

TicketKeys::~TicketKeys() {
  OPENSSL_cleanse(secret_.data(), secret_.size());
  OPENSSL_cleanse(cache_.data(), sizeof cache_);
}

std::shared_ptr<TicketKeys> TicketKeys::create() {
  std::array<unsigned char, kSecretSize> secret{};
  if (RAND_bytes(secret.data(), static_cast<int>(secret.size())) != 1) return nullptr;
  auto keys = std::make_shared<TicketKeys>(secret);
  OPENSSL_cleanse(secret.data(), secret.size());
  return keys;
}

std::shared_ptr<TicketKeys> TicketKeys::from_secret(
    std::span<const unsigned char, kSecretSize> secret) {
  return std::make_shared<TicketKeys>(secret);
}

std::int64_t TicketKeys::period(std::chrono::milliseconds lifetime) const {
  std::int64_t now_ms = fixed_now_ms_.load(std::memory_order_relaxed);
  if (now_ms == 0) {
    now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                 std::chrono::system_clock::now().time_since_epoch())
                 .count();
  }
  const std::int64_t length = lifetime.count() > 0 ? lifetime.count() : 1;
  return now_ms / length;
}

bool TicketKeys::key(std::int64_t n, TicketKey& out) const {
  const std::lock_guard lock(mutex_);
  for (const Cached& c : cache_) {
    if (c.period == n) {
      out = c.key;
      return true;
    }
  }
  const conf::EvpKdfPtr kdf(EVP_KDF_fetch(nullptr, "HKDF", nullptr));
  const conf::EvpKdfCtxPtr ctx(kdf ? EVP_KDF_CTX_new(kdf.get()) : nullptr);
  if (!ctx) return false;
  unsigned char info[24] = "ferry ticket key";
  for (int i = 0; i < 8; ++i) info[16 + i] = static_cast<unsigned char>(n >> (56 - 8 * i));
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
                                        const_cast<unsigned char*>(secret_.data()), secret_.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, sizeof info),
      OSSL_PARAM_construct_end()};
  unsigned char derived[16 + 32 + 32];
  if (EVP_KDF_derive(ctx.get(), derived, sizeof derived, params) != 1) return false;
  std::memcpy(out.name.data(), derived, 16);
  std::memcpy(out.aes.data(), derived + 16, 32);
  std::memcpy(out.hmac.data(), derived + 48, 32);
  OPENSSL_cleanse(derived, sizeof derived);
  // Replaces the older of the two.
  Cached& slot = cache_[0].period < cache_[1].period ? cache_[0] : cache_[1];
  slot = {n, out};
  return true;
}

void TicketKeys::set_now_for_test(std::chrono::system_clock::time_point t) {
  fixed_now_ms_.store(
      std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count(),
      std::memory_order_relaxed);
}

bool use_ticket_keys(SSL_CTX* ctx, std::shared_ptr<const TicketKeys> keys,
                     std::chrono::milliseconds lifetime, std::string& error) {
  const int index = ticket_use_index();
  auto use = std::make_unique<TicketUse>(TicketUse{std::move(keys), lifetime});
  if (index < 0 || SSL_CTX_set_ex_data(ctx, index, use.get()) != 1) {
    error = "cannot attach the ticket keys: " + conf::openssl_error();
    return false;
  }
  use.release();  // the context's now: free_ticket_use() deletes it with the context
  if (SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_callback) != 1) {
    error = "cannot set the ticket key callback: " + conf::openssl_error();
    return false;
  }
  return true;
}

}  // namespace ferry::worker::tls
