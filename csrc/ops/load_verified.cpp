// sentry::load_verified (include/sentry/sentry.h): a signed model's safetensors tensors, read
// once and checked on the way to their device. The orchestration of sentry/loader.py, which is
// now a shell over it: open the bundle, check the file list, read and check each header against
// the signed tensor table, build the loader's table (csrc/io/loader.h), run it.
#include <algorithm>
#include <cerrno>
#include <iostream>
#include <map>
#include <set>

#include <sys/stat.h>

#include "../include/sentry/sentry.h"
#include "../io/loader.h"

namespace sentry {

namespace {

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string joined(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) out += (i ? sep : "") + items[i];
  return out;
}

at::Device checked_device(at::Device device) {
  if (device.is_cpu()) return device;
  if (!device.is_cuda()) {
    throw FormatError("device " + device.str() + ": load_verified loads to 'cpu' or 'cuda'");
  }
  if (!at::globalContext().hasCUDA()) {
    throw FormatError("device " + device.str() + ": this torch has no CUDA GPU; use device='cpu'");
  }
  const auto& hooks = at::detail::getCUDAHooks();
  const int count = hooks.deviceCount();
  const int index = device.has_index() ? device.index() : hooks.getCurrentDevice();
  if (index >= count) {
    throw FormatError("device " + device.str() + ": there are only " + std::to_string(count) +
                      " GPUs");
  }
  return at::Device(at::kCUDA, static_cast<at::DeviceIndex>(index));
}

// The signed ranges of each file: none for a whole-file digest (filled in once its size is
// known), the shards of the shards method.
std::map<std::string, std::vector<const Shard*>> signed_files(const Statement& st,
                                                                     const std::string& source) {
  std::map<std::string, std::vector<const Shard*>> out;
  if (st.method == "shards") {
    for (const Shard& s : st.shards) out[s.path].push_back(&s);
  } else if (st.method == "files") {
    if (st.hash_type != "sha256" && st.hash_type != "blake3") {
      throw VerificationError(source + ": unknown file hash '" + st.hash_type + "'");
    }
    for (const Resource& r : st.resources) out[r.name];
  } else {
    throw MethodError({{source + ": this signature covers tensors in memory (method " + st.method +
                        "), not files; load the model, then check it with "},
                       {"verify_model", true}});
  }
  return out;
}

std::vector<io::SignedRange> ranges_of(const Statement& st, const std::string& rel,
                                       const std::vector<const Shard*>& shards, uint64_t size) {
  std::vector<io::SignedRange> out;
  if (st.method == "files") {
    for (const Resource& r : st.resources) {
      if (r.name == rel) out.push_back({0, size, io::parse_file_hash(st.hash_type), r.digest});
    }
    return out;
  }
  for (const Shard* s : shards) out.push_back({s->start, s->end, io::FileHash::kSha256, s->digest});
  return out;
}

// A tensor's dtype torch holds in whole bytes, or FormatError naming the file and tensor.
void check_loadable(const std::string& path, const SafetensorsEntry& e) {
  try {
    (void)io::scalar_type_of(e.dtype);
  } catch (const std::invalid_argument&) {
    throw FormatError(path + ": tensor '" + e.name + "': safetensors dtype " + e.dtype +
                      " has no torch dtype of one element; load_verified cannot load it "
                      "(verify_files checks its bytes)");
  }
}

using Layout = std::tuple<std::string, std::string, std::vector<int64_t>, uint64_t, uint64_t>;

NamedTensors load(const std::string& model_path, const std::string& signature_path,
                  const Statement& st, const LoadVerifiedOptions& options) {
  const at::Device device = checked_device(options.device);
  const auto signed_ = signed_files(st, signature_path);
  // The files present must be the signed ones, nothing missing and nothing else.
  std::vector<std::string> signed_names;
  for (const auto& [name, _] : signed_) signed_names.push_back(name);
  ListOptions list;
  list.ignore_paths = options.ignore_paths;
  list.ignore_paths.insert(list.ignore_paths.end(), st.ignore_paths.begin(), st.ignore_paths.end());
  list.allow_symlinks = st.allow_symlinks;
  std::vector<std::string> files =
      check_model_files(model_path, signature_path, signed_names, st.method == "shards", list);
  if (options.files) {
    std::vector<std::string> unknown;
    for (const std::string& f : *options.files) {
      if (!std::binary_search(files.begin(), files.end(), f)) unknown.push_back(f);
    }
    if (!unknown.empty()) {
      throw FormatError(signature_path + ": signs no file " + joined(unknown, ", ") + " (file=)");
    }
    std::vector<std::string> chosen;
    for (const std::string& f : files) {
      if (std::find(options.files->begin(), options.files->end(), f) != options.files->end()) {
        chosen.push_back(f);
      }
    }
    files = std::move(chosen);
  }

  // Sentry's tensor table, by file.
  std::map<std::string, std::vector<const TensorEntry*>> tensor_table;
  for (const TensorEntry& e : st.tensors) {
    if (e.has_location) tensor_table[e.file].push_back(&e);
  }
  std::vector<io::FileToLoad> table;
  std::vector<std::pair<std::string, std::string>> unreadable;  // (file, FormatError text)
  std::map<std::string, std::vector<std::string>> owner;
  for (const std::string& rel : files) {
    const std::string path = model_file_path(model_path, rel);
    std::optional<SafetensorsHeader> header;
    if (ends_with(path, ".safetensors")) {
      try {
        header = read_safetensors_header(path);
      } catch (const FileError&) {
        throw;
      } catch (const FormatError& e) {
        unreadable.emplace_back(rel, e.what());
      }
      if (header) {
        for (const auto& e : header->entries) check_loadable(path, e);
      }
    }
    io::FileToLoad f;
    f.path = path;
    f.name = rel;
    const auto signed_tensors = tensor_table.find(rel);
    if (header && signed_tensors != tensor_table.end()) {  // every byte checked by the table
      std::vector<Layout> listed, on_disk;
      for (const TensorEntry* e : signed_tensors->second) {
        listed.emplace_back(e->name, e->dtype, e->shape, e->offset, e->length);
      }
      for (const auto& e : header->entries) {
        on_disk.emplace_back(e.name, e.dtype, e.shape, e.offset, e.length);
      }
      std::sort(listed.begin(), listed.end());
      std::sort(on_disk.begin(), on_disk.end());
      if (listed != on_disk) {
        throw VerificationError(path + ": its safetensors header does not describe the tensors " +
                                    signature_path + " lists",
                                {rel});
      }
      std::map<std::string, const Digest*> digests;
      for (const TensorEntry* e : signed_tensors->second) digests[e->name] = &e->digest;
      for (const auto& e : header->entries) {
        f.tensors.push_back({e.name, e.dtype, e.shape, e.offset, e.length, true, *digests[e.name]});
      }
    } else if (header) {  // the file's own digest checks the tensors too
      f.ranges = ranges_of(st, rel, signed_.at(rel), header->file_size);
      for (const auto& e : header->entries) {
        f.tensors.push_back({e.name, e.dtype, e.shape, e.offset, e.length, false, {}});
      }
    } else {
      struct stat sb;
      if (::stat(path.c_str(), &sb) != 0) throw FileError(errno, path);
      // The loader refuses a file that then has another size.
      f.ranges = ranges_of(st, rel, signed_.at(rel), static_cast<uint64_t>(sb.st_size));
    }
    if (header) {
      f.prefix = header->prefix;
      f.expected_size = static_cast<int64_t>(header->file_size);
    }
    for (const auto& t : f.tensors) owner[t.name].push_back(rel);
    table.push_back(std::move(f));
  }
  std::vector<std::string> repeated;
  for (const auto& [name, where] : owner) {
    if (where.size() > 1 && repeated.size() < 4) {
      repeated.push_back("'" + name + "' (" + joined(where, " and ") + ")");
    }
  }
  if (!repeated.empty()) {
    const bool more = repeated.size() > 3;
    if (more) repeated.pop_back();
    throw FormatError(model_path + ": tensors of the same name are in several files: " +
                      joined(repeated, ", ") + (more ? ", ..." : "") +
                      "; name the files to load (file=)");
  }

  io::LoadOptions load;
  load.device = device;
  load.tensor_hash = io::parse_tree_hash(st.has_tensors ? st.tensor_hash_type : "blake3");
  load.threads = options.threads;
  load.block_size = options.block_size;
  load.pinned_bytes = options.pinned_bytes;
  NamedTensors state;
  try {
    state = io::load_files(table, load);
  } catch (const io::LoadMismatch& e) {
    std::set<std::string> where(e.files.begin(), e.files.end());
    std::vector<std::string> changed_files = e.files, changed_tensors;
    for (const auto& [file, tensor] : e.tensors) {
      where.insert(file);
      changed_tensors.push_back(tensor);
    }
    std::sort(changed_files.begin(), changed_files.end());
    std::sort(changed_tensors.begin(), changed_tensors.end());
    changed_files.insert(changed_files.end(), changed_tensors.begin(), changed_tensors.end());
    throw VerificationError(model_path + ": " + joined({where.begin(), where.end()}, ", ") +
                                " differ(s) from " + signature_path,
                            changed_files);
  } catch (const io::ReadError& e) {
    throw FormatError(e.what());
  }
  for (const auto& [rel, problem] : unreadable) {  // their bytes are the signed ones
    if (tensor_table.count(rel)) {
      throw FormatError(problem + " (yet " + signature_path + " lists tensors in it)");
    }
    const std::string warning = problem + "; checked as a plain file, not loaded";
    if (options.on_warning) {
      options.on_warning(warning);
    } else {
      std::cerr << "sentry: warning: " << warning << "\n";
    }
  }
  if (state.empty()) {
    throw FormatError(model_path + ": the signed files hold no safetensors tensors to load");
  }
  std::sort(state.begin(), state.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  if (options.dtype) {
    for (auto& [name, tensor] : state) {
      if (tensor.is_floating_point()) tensor = tensor.to(*options.dtype);
    }
  }
  return state;
}

}  // namespace

NamedTensors load_verified(const std::string& model_path, const std::string& signature_path,
                           const Trust& trust, const LoadVerifiedOptions& options) {
  checked_device(options.device);  // before the bundle is read
  const SignedStatement opened = open_bundle(signature_path, trust);
  return load(model_path, signature_path, opened.statement, options);
}

NamedTensors load_verified_data(const std::string& model_path, std::string_view bundle_data,
                                const std::string& signature_path, const Trust& trust,
                                const LoadVerifiedOptions& options) {
  checked_device(options.device);
  const SignedStatement opened = open_bundle_data(bundle_data, signature_path, trust);
  return load(model_path, signature_path, opened.statement, options);
}

}  // namespace sentry
