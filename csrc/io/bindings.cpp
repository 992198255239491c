// sentry_ops._C.io: Python bindings of the reader of untrusted files (file_digests.h).
//
// Files come in as descriptors the caller opened (and keeps and closes); each is duplicated, so
// its size is fstat'ed here, at the start of the read. sentry::io::ReadError becomes
// sentry_ops._C.io.ReadError (an OSError); sentry/file_reader.py makes it a FormatError. The
// reading and hashing run without the GIL, on the reader's own threads.
#include "bindings.h"

#include <pybind11/stl.h>

#include <tuple>

#include "file_digests.h"

namespace py = pybind11;
using namespace sentry::io;

namespace {

// (fd, name, file_hash, prefix, expected_size, [(offset, length)], range_hash)
using Request = std::tuple<int, std::string, std::string, py::bytes, int64_t,
                           std::vector<std::pair<uint64_t, uint64_t>>, std::string>;

ReadOptions options(size_t threads, size_t block_size) {
  ReadOptions o;
  o.threads = threads;
  o.block_size = block_size;
  return o;
}

py::list digest(const std::vector<Request>& requests, size_t threads, size_t block_size) {
  std::vector<InputFile> files;
  std::vector<DigestRequest> wanted;
  for (const auto& [fd, name, file_hash, prefix, expected_size, ranges, range_hash] : requests) {
    files.push_back(InputFile::adopt(fd, name));
    DigestRequest r;
    r.file_hash = parse_file_hash(file_hash);
    r.prefix = std::string(prefix);
    r.expected_size = expected_size;
    for (const auto& [offset, length] : ranges) r.ranges.push_back({offset, length});
    r.range_hash = parse_tree_hash(range_hash);
    wanted.push_back(std::move(r));
  }
  std::vector<FileDigests> got;
  {
    py::gil_scoped_release release;
    got = digest_files(files, wanted, options(threads, block_size));
  }
  py::list out;
  for (size_t i = 0; i < got.size(); ++i) {
    py::list ranges;
    for (const Digest& d : got[i].ranges)
      ranges.append(py::bytes(reinterpret_cast<const char*>(d.data()), 32));
    const bool has_file = wanted[i].file_hash != FileHash::kNone;
    out.append(py::make_tuple(
        has_file ? py::object(py::bytes(reinterpret_cast<const char*>(got[i].file.data()), 32))
                 : py::object(py::none()),
        ranges));
  }
  return out;
}

void read_into(int fd, const std::string& name, py::buffer out, const py::bytes& prefix,
               size_t threads, size_t block_size) {
  py::buffer_info info = out.request(/*writable=*/true);
  if (info.itemsize != 1 || info.ndim != 1 || info.strides[0] != 1)
    throw std::invalid_argument("read_into: out must be a contiguous byte buffer");
  std::vector<InputFile> files;
  files.push_back(InputFile::adopt(fd, name));
  DigestRequest r;  // no digests: the size and prefix checks only
  r.prefix = std::string(prefix);
  r.expected_size = static_cast<int64_t>(info.size);
  ReadOptions o = options(threads, block_size);
  o.destinations = {static_cast<uint8_t*>(info.ptr)};
  py::gil_scoped_release release;
  FileDigester checks(files, {r});
  read_files(files, checks, o);
}

}  // namespace

void sentry_register_io(py::module_& m) {
  py::module_ io = m.def_submodule(
      "io", "Reading untrusted files with positional reads (no memory map), hashing as they pass");
  py::register_local_exception<ReadError>(io, "ReadError", PyExc_OSError);
  io.def("digest_files", &digest, py::arg("requests"), py::arg("threads") = 0,
         py::arg("block_size") = size_t(4) << 20,
         "Digests of files from one read each. requests: (fd, name, file_hash ('' for none, "
         "'sha256', 'blake3', 'sha256-tree'), prefix bytes the file must start with, expected "
         "size or -1, [(offset, length)] ascending byte ranges, range_hash ('blake3' or "
         "'sha256-tree')). Returns [(file digest bytes or None, [range digest bytes])].");
  io.def("read_into", &read_into, py::arg("fd"), py::arg("name"), py::arg("out"),
         py::arg("prefix") = py::bytes(), py::arg("threads") = 0,
         py::arg("block_size") = size_t(4) << 20,
         "Reads the whole file into `out`, a writable contiguous byte buffer of the size the file "
         "must have, checking that it starts with `prefix` and does not change while it is read.");
}
