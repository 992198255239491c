// sentry_ops._C.loader: the Python binding of the verified loader (loader.h), used by
// sentry/loader.py. The load runs without the GIL.
#include "loader_bindings.h"

#include <torch/extension.h>

#include <tuple>

#include "loader.h"

namespace py = pybind11;
using namespace sentry::io;

namespace {

Digest digest_of(const py::bytes& raw, const std::string& what) {
  const std::string s = raw;
  if (s.size() != 32) throw std::invalid_argument(what + ": a digest must be 32 bytes");
  Digest d;
  std::copy(s.begin(), s.end(), d.begin());
  return d;
}

// (start, end, hash, digest)
using Range = std::tuple<uint64_t, uint64_t, std::string, py::bytes>;
// (name, dtype, shape, offset, length, digest or None)
using Tensor = std::tuple<std::string, std::string, std::vector<int64_t>, uint64_t, uint64_t,
                          std::optional<py::bytes>>;
// (path, name, prefix, expected_size, ranges, tensors)
using File = std::tuple<std::string, std::string, py::bytes, int64_t, std::vector<Range>,
                        std::vector<Tensor>>;

py::tuple load(const std::vector<File>& table, const std::string& device,
               const std::string& tensor_hash, size_t threads, size_t block_size,
               size_t pinned_bytes) {
  std::vector<FileToLoad> files;
  for (const auto& [path, name, prefix, expected_size, ranges, tensors] : table) {
    FileToLoad f;
    f.path = path;
    f.name = name;
    f.prefix = std::string(prefix);
    f.expected_size = expected_size;
    for (const auto& [start, end, hash, digest] : ranges)
      f.ranges.push_back({start, end, parse_file_hash(hash), digest_of(digest, name)});
    for (const auto& [tname, dtype, shape, offset, length, digest] : tensors) {
      TensorToLoad t{tname, dtype, shape, offset, length};
      if (digest) {
        t.has_digest = true;
        t.digest = digest_of(*digest, name + ": tensor '" + tname + "'");
      }
      f.tensors.push_back(std::move(t));
    }
    files.push_back(std::move(f));
  }
  LoadOptions options;
  options.device = at::Device(device);
  options.tensor_hash = parse_tree_hash(tensor_hash);
  options.threads = threads;
  options.block_size = block_size;
  options.pinned_bytes = pinned_bytes;
  NamedTensors loaded;
  try {
    py::gil_scoped_release release;
    loaded = load_files(files, options);
  } catch (const LoadMismatch& e) {
    return py::make_tuple(py::none(), e.files, e.tensors);
  } catch (const ReadError& e) {
    // The reader's error type (sentry_ops._C.io.ReadError, an OSError).
    const py::object type = py::module_::import("sentry_ops._C").attr("io").attr("ReadError");
    PyErr_SetString(type.ptr(), e.what());
    throw py::error_already_set();
  }
  py::list out;
  for (auto& [name, tensor] : loaded) out.append(py::make_tuple(name, tensor));
  return py::make_tuple(out, py::list(), py::list());
}

}  // namespace

void sentry_register_loader(py::module_& m) {
  py::module_ loader = m.def_submodule(
      "loader", "Verified loading of signed safetensors files (csrc/io/loader.h)");
  loader.def("load_files", &load, py::arg("files"), py::arg("device"),
             py::arg("tensor_hash") = "blake3", py::arg("threads") = 0,
             py::arg("block_size") = size_t(8) << 20, py::arg("pinned_bytes") = size_t(512) << 20,
             "Reads the files once, checks every signed digest, and returns ([(name, tensor)], "
             "[], []) when all match, or (None, changed files, [(file, tensor)] changed). "
             "files: [(path, name, prefix bytes, expected size or -1, [(start, end, hash, "
             "digest)], [(name, safetensors dtype, shape, offset, length, digest or None)])].");
}
