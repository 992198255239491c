// The strict safetensors header reader (sentry/model_files.h), over the strict JSON reader.
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "../include/sentry/model_files.h"
#include "input.h"
#include "strict_json.h"

namespace sentry {

namespace {

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

// Exactly n bytes at `offset`; a file that ends first changed after it was opened.
std::string pread_exact(int fd, std::size_t n, std::uint64_t offset, const std::string& path) {
  std::string data(n, '\0');
  std::size_t done = 0;
  while (done < n) {
    const ssize_t got = ::pread(fd, data.data() + done, n - done, static_cast<off_t>(offset + done));
    if (got > 0) {
      done += static_cast<std::size_t>(got);
    } else if (got == 0) {
      throw FormatError(path + ": the file changed while it was read: it ended at byte " +
                        std::to_string(offset + done) + " while its header was read");
    } else if (errno != EINTR) {
      throw FileError(errno, path);
    }
  }
  return data;
}

}  // namespace

std::uint64_t safetensors_byte_length(std::string_view dtype,
                                      const std::vector<std::int64_t>& shape) {
  const int bits = safetensors_dtype_bits(dtype);
  if (bits == 0) throw FormatError("unknown safetensors dtype " + json::repr(dtype));
  bool empty = false;
  for (std::int64_t d : shape) {
    if (d < 0) {
      throw FormatError("shape " + shape_text(shape) +
                        ": dimensions must be non-negative integers");
    }
    empty = empty || d == 0;
  }
  if (empty) return 0;
  // Elements times bits, refused past 2^64 - 1 bits (a length no file can hold).
  unsigned __int128 numel = 1;
  const unsigned __int128 limit = ~std::uint64_t(0);
  for (std::int64_t d : shape) {
    numel *= static_cast<std::uint64_t>(d);
    if (numel > limit) {
      throw FormatError(std::string(dtype) + " " + shape_text(shape) +
                        ": more than 2^64 elements");
    }
  }
  const unsigned __int128 total_bits = numel * static_cast<unsigned>(bits);
  if (total_bits % 8) {
    throw FormatError(std::string(dtype) + " " + shape_text(shape) + ": " +
                      std::to_string(static_cast<std::uint64_t>(numel)) + " elements of " +
                      std::to_string(bits) + " bits do not end on a byte boundary");
  }
  if (total_bits / 8 > limit) {
    throw FormatError(std::string(dtype) + " " + shape_text(shape) + ": more than 2^64 bytes");
  }
  return static_cast<std::uint64_t>(total_bits / 8);
}

SafetensorsHeader parse_safetensors_header(std::string_view text, std::uint64_t data_size,
                                           const std::string& source) {
  auto fail = [&](const std::string& problem, const std::string* tensor = nullptr) {
    std::string where = source + ": ";
    if (tensor) where += "tensor '" + *tensor + "': ";
    throw FormatError(where + problem);
  };
  json::SiteParser<struct HeaderSite> parser(text.size());
  const std::string unnamed;  // the Reader keeps a reference: named below, as Python does
  const json::Reader reader(unnamed);
  json::element doc;
  try {
    doc = reader.parse(parser.get(), text, "header");
  } catch (const FormatError& e) {
    const std::string problem = e.what();
    if (problem == "header is not UTF-8") fail(problem);
    fail("header is not valid JSON: " + problem);
  }
  json::object obj;
  if (doc.get_object().get(obj) != simdjson::SUCCESS) {
    fail(std::string("header must be a JSON object, got ") + json::type_name(doc));
  }
  SafetensorsHeader out;
  out.path = source;
  static constexpr std::array<std::string_view, 3> kKeys = {"data_offsets", "dtype", "shape"};
  for (auto member : obj) {
    const std::string name(member.key);
    const json::element info = member.value;
    if (name == "__metadata__") {
      if (info.is_null()) continue;  // the safetensors package accepts null
      json::object meta;
      if (info.get_object().get(meta) != simdjson::SUCCESS) {
        fail(std::string("__metadata__ must be an object of strings, got ") +
             json::type_name(info));
      }
      out.metadata.clear();
      for (auto kv : meta) {
        std::string_view value;
        if (kv.value.get_string().get(value) != simdjson::SUCCESS) {
          fail("__metadata__['" + std::string(kv.key) + "'] must be a string, got " +
               json::type_name(kv.value));
        }
        out.metadata.emplace_back(std::string(kv.key), std::string(value));
      }
      continue;
    }
    if (name.empty()) fail("empty tensor name");
    json::object entry;
    if (info.get_object().get(entry) != simdjson::SUCCESS) {
      fail(std::string("entry must be an object, got ") + json::type_name(info), &name);
    }
    std::array<std::optional<json::element>, 3> found{};
    std::vector<std::string> unknown;
    for (auto field : entry) {
      const auto it = std::find(kKeys.begin(), kKeys.end(), field.key);
      if (it == kKeys.end()) {
        unknown.emplace_back(field.key);
      } else {
        found[it - kKeys.begin()] = field.value;
      }
    }
    std::string missing;
    for (std::size_t k = 0; k < kKeys.size(); ++k) {  // kKeys is sorted, as Python lists them
      if (!found[k]) missing += (missing.empty() ? "" : ", ") + std::string(kKeys[k]);
    }
    if (!missing.empty()) fail("missing " + missing, &name);
    if (!unknown.empty()) {
      std::sort(unknown.begin(), unknown.end());
      std::string listed;
      for (const auto& u : unknown) listed += (listed.empty() ? "" : ", ") + u;
      fail("unknown field(s) " + listed, &name);
    }
    const json::element dtype_value = *found[1], shape_value = *found[2], offsets_value = *found[0];
    std::string_view dtype;
    if (dtype_value.get_string().get(dtype) != simdjson::SUCCESS ||
        safetensors_dtype_bits(dtype) == 0) {
      fail("unknown dtype " + json::repr(dtype_value), &name);
    }
    std::vector<std::int64_t> shape;
    json::array dims;
    bool shape_ok = shape_value.get_array().get(dims) == simdjson::SUCCESS;
    if (shape_ok) {
      for (json::element d : dims) {
        const std::optional<std::uint64_t> v = json::non_negative_integer(d);
        // Below 2^63 (a torch size); a larger dimension could only name an empty tensor.
        if (!v || *v > static_cast<std::uint64_t>(INT64_MAX)) {
          shape_ok = false;
          break;
        }
        shape.push_back(static_cast<std::int64_t>(*v));
      }
    }
    if (!shape_ok) {
      fail("shape must be a list of non-negative integers, got " + json::repr(shape_value), &name);
    }
    json::array offsets;
    std::optional<std::uint64_t> begin, end;
    if (offsets_value.get_array().get(offsets) == simdjson::SUCCESS && offsets.size() == 2) {
      begin = json::non_negative_integer(offsets.at(0).value_unsafe());
      end = json::non_negative_integer(offsets.at(1).value_unsafe());
    }
    if (!begin || !end) {
      fail("data_offsets must be [begin, end] non-negative integers, got " +
               json::repr(offsets_value), &name);
    }
    const std::string range = "data_offsets [" + std::to_string(*begin) + ", " +
                              std::to_string(*end) + "]";
    if (*begin > *end) fail(range + ": begin is after end", &name);
    if (*end > data_size) {
      fail(range + " run past the data region (" + std::to_string(data_size) + " bytes)", &name);
    }
    std::uint64_t expected = 0;
    try {
      expected = safetensors_byte_length(dtype, shape);
    } catch (const FormatError& e) {
      fail(e.what(), &name);
    }
    if (*end - *begin != expected) {
      fail(std::to_string(*end - *begin) + " bytes in data_offsets, but " + std::string(dtype) +
               " " + shape_text(shape) + " takes " + std::to_string(expected), &name);
    }
    out.entries.push_back({name, std::string(dtype), std::move(shape), *begin, *end - *begin});
  }
  // The tensors must tile the data region: sorted by offset, each starts where the last ended.
  std::sort(out.entries.begin(), out.entries.end(), [](const auto& a, const auto& b) {
    return std::tie(a.offset, a.length, a.name) < std::tie(b.offset, b.length, b.name);
  });
  std::uint64_t position = 0;
  const std::string* previous = nullptr;
  for (const auto& e : out.entries) {
    if (e.offset < position) {
      fail("overlaps tensor '" + *previous + "' (starts at " + std::to_string(e.offset) + ", '" +
               *previous + "' ends at " + std::to_string(position) + ")", &e.name);
    }
    if (e.offset > position) {
      fail(std::to_string(e.offset - position) + " bytes between the previous tensor and this " +
               "one are not covered by any tensor", &e.name);
    }
    position = e.offset + e.length;
    previous = &e.name;
  }
  if (position != data_size) {
    fail("the data region has " + std::to_string(data_size - position) +
         " bytes after the last tensor that no tensor covers");
  }
  return out;
}

SafetensorsHeader read_safetensors_header_fd(int fd, const std::string& path) {
  struct stat st;
  if (::fstat(fd, &st) != 0) throw FileError(errno, path);
  const std::uint64_t size = static_cast<std::uint64_t>(st.st_size);
  if (size < 8) {
    throw FormatError(path + ": " + std::to_string(size) +
                      " bytes is too short for a safetensors file");
  }
  const std::string length = pread_exact(fd, 8, 0, path);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(length[i]);
  if (n > kMaxSafetensorsHeader) {
    throw FormatError(path + ": header length " + std::to_string(n) + " is larger than the " +
                      std::to_string(kMaxSafetensorsHeader) + "-byte limit");
  }
  if (n > size - 8) {
    throw FormatError(path + ": header length " + std::to_string(n) +
                      " runs past the end of the file (" + std::to_string(size) + " bytes)");
  }
  const std::string json = pread_exact(fd, n, 8, path);
  SafetensorsHeader out = parse_safetensors_header(json, size - 8 - n, path);
  out.data_start = 8 + n;
  out.file_size = size;
  for (auto& e : out.entries) e.offset += out.data_start;
  out.prefix = length + json;
  return out;
}

SafetensorsHeader read_safetensors_header(const std::string& path) {
  OpenInput input;
  open_input(path, "safetensors file", input);
  return read_safetensors_header_fd(input.fd, path);
}

}  // namespace sentry
