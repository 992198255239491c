// Python bindings of the model listing and its check against a signature's files, the
// safetensors header reader (sentry/model_files.h) and sentry::load_verified (sentry/sentry.h),
// in sentry_ops._C.bundle. sentry/model_files.py, sentry/safetensors_format.py and
// sentry/loader.py are shells over these.
//
// Paths go in as bytes (os.fsencode) and come back decoded as os.fsdecode would. OptionError
// becomes sentry_ops._C.bundle.OptionError with the message's parts as args, an option as a
// tuple (keyword, Python spelling); the other errors as in bindings.cpp.
#include <torch/extension.h>

#include "../crypto/bindings.h"
#include "../include/sentry/sentry.h"
#include "bindings.h"

namespace py = pybind11;
using sentry::bindings::fs_list;
using sentry::bindings::fs_text;
using sentry::bindings::text;

namespace {

sentry::ListOptions list_options(const std::vector<std::string>& ignore_paths,
                                 const std::optional<std::string>& signature_path,
                                 bool ignore_git_paths, bool allow_symlinks) {
  return {ignore_paths, signature_path, ignore_git_paths, allow_symlinks};
}

// (entries [(name, dtype, shape, offset, length)], metadata, data_start, file_size, prefix)
py::tuple header_tuple(const sentry::SafetensorsHeader& h) {
  py::list entries;
  for (const auto& e : h.entries) {
    entries.append(py::make_tuple(text(e.name), e.dtype, py::tuple(py::cast(e.shape)),
                                  e.offset, e.length));
  }
  py::dict metadata;
  for (const auto& [k, v] : h.metadata) metadata[text(k)] = text(v);
  return py::make_tuple(entries, metadata, h.data_start, h.file_size, py::bytes(h.prefix));
}

}  // namespace

void sentry_register_load(py::module_& b) {
  static PyObject* option_error =
      PyErr_NewException("sentry_ops._C.bundle.OptionError", PyExc_ValueError, nullptr);
  b.attr("OptionError") = py::handle(option_error);
  // Registered after bindings.cpp's translators, so tried before its FormatError's.
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const sentry::OptionError& e) {
      py::list parts;
      for (const auto& part : e.parts) {
        if (part.option) {
          parts.append(py::make_tuple(part.text, part.python.empty() ? part.text : part.python));
        } else {
          parts.append(fs_text(part.text));
        }
      }
      PyErr_SetObject(option_error, py::tuple(parts).ptr());
    }
  });

  b.def(
      "effective_ignore_paths",
      [](const std::string& model_dir, const std::vector<std::string>& ignore_paths,
         const std::optional<std::string>& signature_path, bool ignore_git_paths) {
        return fs_list(sentry::effective_ignore_paths(
            model_dir, list_options(ignore_paths, signature_path, ignore_git_paths, false)));
      },
      py::arg("model_dir"), py::arg("ignore_paths"), py::arg("signature_path"),
      py::arg("ignore_git_paths"));
  b.def(
      "list_files",
      [](const std::string& model_dir, const std::vector<std::string>& ignore_paths,
         const std::optional<std::string>& signature_path, bool ignore_git_paths,
         bool allow_symlinks) {
        std::vector<std::string> files;
        {
          py::gil_scoped_release release;
          files = sentry::list_model_files(
              model_dir, list_options(ignore_paths, signature_path, ignore_git_paths, allow_symlinks));
        }
        return fs_list(files);
      },
      py::arg("model_dir"), py::arg("ignore_paths"), py::arg("signature_path"),
      py::arg("ignore_git_paths"), py::arg("allow_symlinks"));
  b.def(
      "check_model_files",
      [](const std::string& model_dir, const std::string& signature_path,
         const std::vector<std::string>& signed_names, bool shards,
         const std::vector<std::string>& ignore_paths, bool ignore_git_paths,
         bool allow_symlinks) {
        std::vector<std::string> files;
        {
          py::gil_scoped_release release;
          files = sentry::check_model_files(
              model_dir, signature_path, signed_names, shards,
              list_options(ignore_paths, std::nullopt, ignore_git_paths, allow_symlinks));
        }
        return fs_list(files);
      },
      py::arg("model_dir"), py::arg("signature_path"), py::arg("signed_names"), py::arg("shards"),
      py::arg("ignore_paths"), py::arg("ignore_git_paths"), py::arg("allow_symlinks"),
      "sentry::check_model_files: the signed files present, in listing order; "
      "VerificationError listing the missing and unexpected ones.");
  b.def(
      "read_header",
      [](const std::string& path, std::optional<int> fd) {
        return header_tuple(fd ? sentry::read_safetensors_header_fd(*fd, path)
                               : sentry::read_safetensors_header(path));
      },
      py::arg("path"), py::arg("fd") = py::none(),
      "(entries [(name, dtype, shape, offset, length)], metadata, data_start, file_size, "
      "prefix) of a safetensors file's header, strictly checked.");
  b.def(
      "load_verified",
      [](const std::string& model_path, const std::string& signature_path,
         const sentry::Trust& trust, const std::optional<py::bytes>& data,
         const std::string& device, std::optional<at::ScalarType> dtype,
         const std::optional<std::vector<std::string>>& files,
         const std::vector<std::string>& ignore_paths, size_t threads, size_t block_size,
         size_t pinned_bytes) {
        sentry::LoadVerifiedOptions o;
        o.device = at::Device(device);
        o.dtype = dtype;
        o.files = files;
        o.ignore_paths = ignore_paths;
        o.threads = threads;
        o.block_size = block_size;
        o.pinned_bytes = pinned_bytes;
        std::vector<std::string> warnings;
        o.on_warning = [&](const std::string& w) { warnings.push_back(w); };
        std::string bytes = data ? std::string(*data) : std::string();
        sentry::NamedTensors state;
        {
          py::gil_scoped_release release;
          state = data ? sentry::load_verified_data(model_path, bytes, signature_path, trust, o)
                       : sentry::load_verified(model_path, signature_path, trust, o);
        }
        py::list out;
        for (auto& [name, tensor] : state) out.append(py::make_tuple(text(name), tensor));
        return py::make_tuple(out, fs_list(warnings));
      },
      py::arg("model_path"), py::arg("signature_path"), py::arg("trust"), py::arg("data"),
      py::arg("device"), py::arg("dtype"), py::arg("files"), py::arg("ignore_paths"),
      py::arg("threads"), py::arg("block_size"), py::arg("pinned_bytes"),
      "sentry::load_verified: ([(name, tensor)] sorted by name, [warning]).");
}
