// A certificate authority for tests, made with OpenSSL's API: a CA and leaf certificates for
// given DNS names and IP addresses (ECDSA P-256 or RSA-2048), written as PEM files to a folder.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace ferry::test {

enum class KeyType { ecdsa, rsa };

// A leaf's two PEM files.
struct Issued {
  std::string cert_path;  // the leaf, then the CA (a chain, leaf first)
  std::string key_path;
};

// What a leaf certificate says.
struct LeafSpec {
  std::vector<std::string> dns;  // subjectAltName DNS names ("a.test", "*.b.test")
  std::vector<std::string> ips;  // subjectAltName IP addresses ("127.0.0.1", "::1")
  KeyType key = KeyType::ecdsa;
  std::string common_name;  // "" = the first DNS name, or the file name
  bool san = true;          // false: no subjectAltName at all (the CN names it)
  bool client = false;      // extendedKeyUsage clientAuth instead of serverAuth
  int days = 1;             // valid from an hour ago for this many days (negative: expired)
};

class TestCa {
 public:
  // A self-signed CA named `name`, its key of type `key`, written to DIR/NAME.pem.
  explicit TestCa(std::string dir, const std::string& name = "ca", KeyType key = KeyType::ecdsa);
  ~TestCa();
  TestCa(const TestCa&) = delete;
  TestCa& operator=(const TestCa&) = delete;

  // The CA's certificate (PEM), for `ca` / `client_ca`.
  [[nodiscard]] const std::string& cert_path() const noexcept { return cert_path_; }

  // A leaf signed by this CA, written to DIR/NAME.pem (the chain) and DIR/NAME.key.
  Issued issue(const std::string& name, const LeafSpec& spec);
  // A client certificate (clientAuth, no subjectAltName needed) whose CN is `name`.
  Issued issue_client(const std::string& name);
  Issued issue(const std::string& name, const std::vector<std::string>& dns,
               const std::vector<std::string>& ips = {}, KeyType key = KeyType::ecdsa);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string dir_;
  std::string cert_path_;
};

}  // namespace ferry::test
