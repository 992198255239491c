// unique_ptr owners of OpenSSL objects, each released by its own free function; shared by the
// signature crypto (keys.cpp, ecdsa.cpp, x509.cpp), the CPU ECDSA kernel and the C++ tests.
#pragma once
#include <memory>

namespace sentry {

template <class T, void (*Free)(T*)>
struct OpensslDeleter {
  void operator()(T* p) const { Free(p); }
};

// OpensslPtr<EVP_PKEY, EVP_PKEY_free> owns an EVP_PKEY*.
template <class T, void (*Free)(T*)>
using OpensslPtr = std::unique_ptr<T, OpensslDeleter<T, Free>>;

}  // namespace sentry
