// sentry_ops._C.bundle: Python bindings of the bundle reader (sentry/bundle.h) and of
// sentry::verify_model (sentry/sentry.h). Sentry's Python layer (sentry/bundle.py,
// sentry/signing.py) is a thin shell over these: reading bundles and statements lives here only.
//
// sentry::FormatError becomes sentry_ops._C.bundle.FormatError (a ValueError);
// sentry::VerificationError becomes sentry_ops._C.bundle.VerificationError with args
// (brief message, changed, missing, unexpected); a file that cannot be opened becomes OSError
// (FileNotFoundError, PermissionError, ...). sentry/bundle.py maps them to sentry.errors.
#include "bindings.h"

#include <torch/extension.h>

#include <cstring>

#include "../crypto/bindings.h"
#include "../include/sentry/sentry.h"
#include "../ops/verify_model.h"
#include "statement.h"

namespace py = pybind11;
using sentry::bindings::fs_list;
using sentry::bindings::fs_text;
using sentry::bindings::str_list;
using sentry::bindings::text;
using sentry::bindings::view;

namespace {

std::string hex(const sentry::Digest& d) {
  static const char* kHex = "0123456789abcdef";
  std::string out(64, '0');
  for (int i = 0; i < 32; ++i) {
    out[2 * i] = kHex[d[i] >> 4];
    out[2 * i + 1] = kHex[d[i] & 15];
  }
  return out;
}

// A strictly read JSON value as the Python objects json.loads would give.
py::object to_python(simdjson::dom::element value) {
  using T = simdjson::dom::element_type;
  switch (value.type()) {
    case T::OBJECT: {
      py::dict out;
      const simdjson::dom::object obj = value.get_object().value_unsafe();
      for (auto member : obj) {
        out[text(member.key)] = to_python(member.value);
      }
      return std::move(out);
    }
    case T::ARRAY: {
      py::list out;
      const simdjson::dom::array arr = value.get_array().value_unsafe();
      for (auto item : arr) out.append(to_python(item));
      return std::move(out);
    }
    case T::STRING: return text(value.get_string().value_unsafe());
    case T::INT64: return py::int_(value.get_int64().value_unsafe());
    case T::UINT64: return py::int_(value.get_uint64().value_unsafe());
    case T::DOUBLE: return py::float_(value.get_double().value_unsafe());
    case T::BOOL: return py::bool_(value.get_bool().value_unsafe());
    case T::NULL_VALUE: return py::none();
  }
  return py::none();
}

py::dict bundle_dict(const sentry::Bundle& b) {
  py::dict out;
  out["payload"] = py::bytes(b.payload);
  out["payload_type"] = text(b.payload_type);
  out["signature"] = py::bytes(b.signature);
  out["public_key_hint"] = b.public_key_hint.empty() ? py::object(py::none()) : text(b.public_key_hint);
  py::list chain;
  for (const auto& der : b.certificate_chain) chain.append(py::bytes(der));
  out["certificate_chain"] = chain;
  out["tlog_entries"] = str_list(b.tlog_entries);
  return out;
}

py::dict tensors_dict(const sentry::Statement& st);

py::dict statement_dict(const sentry::Statement& st) {
  py::dict out;
  out["model_name"] = st.model_name ? py::object(text(*st.model_name)) : py::object(py::none());
  out["root_hex"] = hex(st.root);
  out["method"] = st.method;
  out["hash_type"] = st.hash_type;
  out["allow_symlinks"] = st.allow_symlinks;
  out["ignore_paths"] = str_list(st.ignore_paths);
  py::list resources;
  for (const auto& r : st.resources) {
    resources.append(py::make_tuple(text(r.name), r.algorithm, hex(r.digest)));
  }
  out["resources"] = resources;
  if (st.method == "shards") {
    out["shard_size"] = st.shard_size;
    py::dict by_file;  // {path: [(start, end, digest hex)]}, files in the order first listed
    for (const auto& shard : st.shards) {
      const py::str path = text(shard.path);
      if (!by_file.contains(path)) by_file[path] = py::list();
      by_file[path].cast<py::list>().append(py::make_tuple(shard.start, shard.end, hex(shard.digest)));
    }
    out["shards"] = by_file;
  }
  out["tensors"] = st.has_tensors ? py::object(tensors_dict(st)) : py::object(py::none());
  return out;
}

// {"hash_type", "entries": [{name, dtype, shape, digest[, file, offset, length]}]}
py::dict tensors_dict(const sentry::Statement& st) {
  {
    py::list entries;
    for (const auto& e : st.tensors) {
      py::dict d;
      d["name"] = text(e.name);
      d["dtype"] = e.dtype;
      d["shape"] = py::cast(e.shape);
      d["digest"] = hex(e.digest);
      if (e.has_location) {
        d["file"] = text(e.file);
        d["offset"] = e.offset;
        d["length"] = e.length;
      }
      entries.append(d);
    }
    py::dict tensors;
    tensors["hash_type"] = st.tensor_hash_type;
    tensors["entries"] = entries;
    return tensors;
  }
}

py::dict timings_dict(const std::vector<std::pair<std::string, double>>& timings) {
  py::dict out;
  for (const auto& [name, ms] : timings) out[py::str(name)] = ms;
  return out;
}

py::tuple signed_tuple(sentry::SignedStatement&& s) {
  return py::make_tuple(statement_dict(s.statement), bundle_dict(s.bundle), std::move(s.key),
                        timings_dict(s.timings_ms));
}

// Names and tensors from Python sequences (TypeError naming the entry that is neither).
sentry::NamedTensors named(const py::sequence& names, const py::sequence& tensors) {
  const std::size_t count = py::len(names);
  if (count != py::len(tensors)) throw std::invalid_argument("names and tensors differ in length");
  sentry::NamedTensors out;
  out.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    const py::object name = names[i], tensor = tensors[i];
    if (!py::isinstance<py::str>(name)) {
      throw py::type_error("names[" + std::to_string(i) + "] is not a str");
    }
    if (!THPVariable_Check(tensor.ptr())) {
      throw py::type_error("tensors[" + std::to_string(i) + "] is not a torch.Tensor");
    }
    out.emplace_back(name.cast<std::string>(), THPVariable_Unpack(tensor.ptr()));
  }
  return out;
}

py::dict verified_dict(const sentry::VerifiedModel& v) {
  py::dict out;
  out["model_name"] = text(v.model_name);
  out["method"] = v.method;
  out["hash_type"] = v.hash_type;
  out["names"] = str_list(v.names);
  out["key_hint"] = v.key_hint;
  out["timings_ms"] = timings_dict(v.timings_ms);
  return out;
}

using Files = std::optional<std::vector<std::string>>;

}  // namespace

void sentry_register_bundle(py::module_& m) {
  py::module_ b = m.def_submodule(
      "bundle", "Signature bundles: the strict reader of bundles and statements, and verify_model");

  auto& format_error =
      py::register_local_exception<sentry::FormatError>(b, "FormatError", PyExc_ValueError);
  (void)format_error;
  static PyObject* verification_error =
      PyErr_NewException("sentry_ops._C.bundle.VerificationError", PyExc_Exception, nullptr);
  b.attr("VerificationError") = py::handle(verification_error);
  static PyObject* method_error =
      PyErr_NewException("sentry_ops._C.bundle.MethodError", PyExc_Exception, nullptr);
  b.attr("MethodError") = py::handle(method_error);
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const sentry::MethodError& e) {
      // args: the message's parts, an option as a 1-tuple (keyword,)
      py::list parts;
      for (const auto& part : e.parts) {
        if (part.option) {
          parts.append(py::make_tuple(text(part.text)));
        } else {
          parts.append(text(part.text));
        }
      }
      PyErr_SetObject(method_error, py::tuple(parts).ptr());
    } catch (const sentry::VerificationError& e) {
      // Decoded as paths: the message and the lists name files (and UTF-8 tensor names).
      py::tuple args = py::make_tuple(fs_text(e.brief), fs_list(e.changed), fs_list(e.missing),
                                      fs_list(e.unexpected));
      PyErr_SetObject(verification_error, args.ptr());
    } catch (const sentry::FileError& e) {
      // OSError(errno, strerror, filename) is FileNotFoundError, PermissionError, ...
      py::tuple args = py::make_tuple(e.code().value(), std::strerror(e.code().value()), e.path);
      PyErr_SetObject(PyExc_OSError, args.ptr());
    }
  });

  py::class_<sentry::Trust>(b, "Trust", "How a bundle's signature is checked.")
      .def_static("public_key", &sentry::Trust::public_key, py::arg("key"))
      .def_static(
          "certificate_roots",
          [](const std::vector<py::bytes>& roots) {
            std::vector<std::string> der;
            for (const auto& r : roots) der.emplace_back(view(r));
            return sentry::Trust::certificate_roots(std::move(der));
          },
          py::arg("roots_der"))
      .def_static(
          "verified_keyless",
          [](const std::string& payload_type, const py::bytes& payload) {
            return sentry::Trust::verified_keyless(payload_type, std::string(view(payload)));
          },
          py::arg("payload_type"), py::arg("payload"),
          "A keyless bundle whose envelope sigstore-python verified, returning this payload.");

  b.def(
      "parse_bundle",
      [](const py::bytes& data, const std::string& source) {
        return bundle_dict(sentry::parse_bundle(view(data), source));
      },
      py::arg("data"), py::arg("source"), "The fields of a bundle's JSON, strictly read.");
  b.def(
      "parse_statement",
      [](const py::bytes& payload, const std::string& source) {
        return statement_dict(sentry::parse_statement(view(payload), source));
      },
      py::arg("payload"), py::arg("source"), "The fields of a validated statement.");
  b.def(
      "read_bundle_file", [](const std::string& path) { return py::bytes(sentry::read_bundle_file(path)); },
      py::arg("path"), "A bundle file's bytes (a regular file of at most 64 MiB).");
  b.def(
      "open_bundle",
      [](const std::string& path, const sentry::Trust& trust) {
        std::optional<sentry::SignedStatement> s;
        {
          py::gil_scoped_release release;
          s.emplace(sentry::open_bundle(path, trust));
        }
        return signed_tuple(std::move(*s));
      },
      py::arg("path"), py::arg("trust"),
      "Reads a bundle, checks its signature, parses its statement: (statement, bundle, key, "
      "timings_ms).");
  b.def(
      "open_bundle_data",
      [](const py::bytes& data, const std::string& source, const sentry::Trust& trust) {
        std::string_view d = view(data);
        std::optional<sentry::SignedStatement> s;
        {
          py::gil_scoped_release release;
          s.emplace(sentry::open_bundle_data(d, source, trust));
        }
        return signed_tuple(std::move(*s));
      },
      py::arg("data"), py::arg("source"), py::arg("trust"));
  // Both start opening the bundle (on a background thread) before converting the tensors.
  b.def(
      "verify_model",
      [](const py::sequence& names, const py::sequence& tensors, const std::string& path,
         const sentry::Trust& trust, const Files& files) {
        sentry::Task<sentry::OpenedBundle> opening(sentry::bundle_file_opener(path, trust));
        const sentry::NamedTensors state = named(names, tensors);
        std::optional<sentry::VerifiedModel> v;
        {
          py::gil_scoped_release release;
          v.emplace(sentry::verify_model_opening(state, path, files, opening));
        }
        return verified_dict(*v);
      },
      py::arg("names"), py::arg("tensors"), py::arg("path"), py::arg("trust"),
      py::arg("files") = py::none());
  b.def("set_background_threads", &sentry::set_background_threads, py::arg("threads"),
        "Threads for the host steps that overlap (sentry::set_background_threads); 0: none.");
  b.def("background_threads", &sentry::background_threads);
  b.def("clear_bundle_memo", &sentry::clear_bundle_memo,
        "Forgets the bundles verify_model remembers (sentry::open_bundle_memoised).");
  b.def(
      "verify_model_data",
      [](const py::sequence& names, const py::sequence& tensors, const py::bytes& data,
         const std::string& source, const sentry::Trust& trust, const Files& files) {
        sentry::Task<sentry::OpenedBundle> opening(
            sentry::bundle_data_opener(view(data), source, trust));
        const sentry::NamedTensors state = named(names, tensors);
        std::optional<sentry::VerifiedModel> v;
        {
          py::gil_scoped_release release;
          v.emplace(sentry::verify_model_opening(state, source, files, opening));
        }
        return verified_dict(*v);
      },
      py::arg("names"), py::arg("tensors"), py::arg("data"), py::arg("source"), py::arg("trust"),
      py::arg("files") = py::none());
  b.def(
      "expected_tensors",
      [](const std::string& source, const sentry::Trust& trust, const std::optional<py::bytes>& data,
         const Files& files) {
        std::optional<sentry::SignedStatement> s;
        std::vector<const sentry::TensorEntry*> table;
        {
          std::string_view d = data ? view(*data) : std::string_view();
          py::gil_scoped_release release;
          s.emplace(data ? sentry::open_bundle_data(d, source, trust)
                         : sentry::open_bundle(source, trust));
          table = sentry::expected_tensors(s->statement, source, files);
        }
        py::list rows;
        for (const sentry::TensorEntry* e : table) {
          rows.append(py::make_tuple(
              text(e->name), py::bytes(reinterpret_cast<const char*>(e->digest.data()), 32),
              e->dtype, py::tuple(py::cast(e->shape))));
        }
        return py::make_tuple(s->statement.tensor_hash_type, rows);
      },
      py::arg("source"), py::arg("trust"), py::arg("data") = py::none(),
      py::arg("files") = py::none(),
      "Opens a bundle (the file `source`, or `data` read from it), checks its signature and "
      "returns its table of expected tensor digests: (hash_type, [(name, digest, dtype, "
      "shape)]) sorted by name, of every file or of `files`.");
  b.def(
      "loads",
      [](const py::bytes& data, const std::string& source, const std::string& what) {
        simdjson::dom::parser parser;
        const sentry::json::Reader reader(source);
        return to_python(reader.parse(parser, view(data), what));
      },
      py::arg("data"), py::arg("source"), py::arg("what") = "JSON",
      "Strict JSON (UTF-8, no duplicate keys, no NaN) as Python objects.");
  b.def(
      "tensor_listing",
      [](const py::bytes& data, const std::string& source, const std::string& what) {
        simdjson::dom::parser parser;
        const sentry::json::Reader reader(source);
        const auto root = sentry::json::Field::root(what);
        const auto doc = reader.as_object(reader.parse(parser, view(data), what), root);
        const auto field = root.key("tensors");
        simdjson::dom::element listing;
        if (doc.at_key("tensors").get(listing) != simdjson::SUCCESS) reader.fail(field, "missing");
        sentry::Statement st;  // no method, no resources: names unique
        sentry::read_tensors(reader, listing, field, st);
        return tensors_dict(st);
      },
      py::arg("data"), py::arg("source"), py::arg("what"),
      "The 'tensors' listing of a JSON document other than a statement (a weight manifest), "
      "checked as predicate.tensors is, names unique: {hash_type, entries}.");
  b.def(
      "statement_envelope",
      [](const py::bytes& payload, const std::string& source, const std::string& predicate_type,
         const std::string& what) {
        simdjson::dom::parser parser;
        const sentry::json::Reader reader(source);
        const auto root = sentry::json::Field::root("statement");
        const auto parsed = reader.parse(parser, view(payload), "statement");
        const auto doc = reader.as_object(parsed, root);
        const sentry::StatementSubject subject =
            sentry::check_statement_envelope(reader, doc, predicate_type, what);
        return py::make_tuple(to_python(parsed), text(subject.name), text(subject.sha256_hex));
      },
      py::arg("payload"), py::arg("source"), py::arg("predicate_type"), py::arg("what"),
      "An in-toto Statement v1 checked up to its predicate: (document, subject name, subject "
      "sha256 hex).");
  b.def(
      "v02_pae", [](const py::bytes& payload) { return py::bytes(sentry::v02_pae(view(payload))); },
      py::arg("payload"), "What model_signing v0.2.0's key and certificate signers signed.");
  sentry_register_load(b);
}
