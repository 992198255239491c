// Registers sentry_ops._C.crypto (see bindings.cpp), and the conversions between Python and C++
// strings that the binding files of this layer and of the ones above it (csrc/bundle) share.
#pragma once

#include <pybind11/pybind11.h>

#include <string>
#include <string_view>
#include <vector>

void sentry_register_crypto(pybind11::module_& m);

namespace sentry::bindings {

// A view of a bytes object's buffer; valid while the object lives (bytes are immutable, so it
// may be read with the GIL released).
inline std::string_view view(const pybind11::bytes& b) {
  char* data = nullptr;
  Py_ssize_t size = 0;
  if (PyBytes_AsStringAndSize(b.ptr(), &data, &size) != 0) throw pybind11::error_already_set();
  return {data, static_cast<std::size_t>(size)};
}

// Each bytes object's contents.
inline std::vector<std::string> strings(const std::vector<pybind11::bytes>& items) {
  std::vector<std::string> out;
  out.reserve(items.size());
  for (const auto& b : items) out.emplace_back(view(b));
  return out;
}

// A new str reference from the C API, or the Python error it raised.
inline pybind11::str steal_str(PyObject* o) {
  if (!o) throw pybind11::error_already_set();
  return pybind11::reinterpret_steal<pybind11::str>(o);
}

// UTF-8 text (what JSON holds: names, fields) as str; UnicodeDecodeError if it is not UTF-8.
inline pybind11::str text(std::string_view s) {
  return steal_str(PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "strict"));
}

// A path (or a message naming one) as os.fsdecode gives it: bytes that are not UTF-8 become
// surrogates rather than an error.
inline pybind11::str fs_text(std::string_view s) {
  return steal_str(PyUnicode_DecodeFSDefaultAndSize(s.data(), static_cast<Py_ssize_t>(s.size())));
}

template <typename Decode>
pybind11::list decoded_list(const std::vector<std::string>& items, Decode decode) {
  pybind11::list out;
  for (const auto& s : items) out.append(decode(s));
  return out;
}

inline pybind11::list str_list(const std::vector<std::string>& items) {
  return decoded_list(items, text);
}

inline pybind11::list fs_list(const std::vector<std::string>& items) {
  return decoded_list(items, fs_text);
}

}  // namespace sentry::bindings
