// The model listing, its check against the signed files, and the strict safetensors header
// reader (sentry/model_files.h), torch-free: the reference tool's listing rules (model_signing
// 1.1.1, docs/FORMAT.md §7) on directories built here, and hostile safetensors headers (lying
// offsets, overlaps, holes, duplicate keys, shapes that overflow, a FIFO as the model file),
// each refused with a message naming the file and tensor. (tests/test_model_files.py checks the
// same listing against the reference tool itself, and tests/test_safetensors_format.py the
// header reader against the safetensors package, through the Python shells over this code.)
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "sentry/model_files.h"

namespace {

using sentry::FormatError;
using sentry::ListOptions;
using Files = std::vector<std::string>;

class TempDir {
 public:
  TempDir() {
    char templ[] = "/tmp/sentry_model_files_XXXXXX";
    path = mkdtemp(templ);
  }
  ~TempDir() { (void)!system(("rm -rf '" + path + "'").c_str()); }
  std::string path;
};

void write(const std::string& path, const std::string& data) {
  const auto slash = path.rfind('/');
  (void)!system(("mkdir -p '" + path.substr(0, slash) + "'").c_str());
  std::ofstream(path, std::ios::binary) << data;
}

// A safetensors file: the 8-byte little-endian length, the JSON, the data region.
std::string safetensors(const std::string& json, const std::string& data,
                        std::uint64_t length = UINT64_MAX) {
  if (length == UINT64_MAX) length = json.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((length >> (8 * i)) & 0xFF);
  return out + json + data;
}

// The FormatError's message, or "" when none was thrown.
template <typename F>
std::string refusal(F&& f) {
  try {
    f();
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}

// ---------------------------------------------------------------------------------------------
// listing

TEST(ListModelFiles, EveryRegularFileAtAnyDepthSortedByCodePoint) {
  TempDir d;
  const std::string m = d.path + "/model";
  for (const char* f : {"b.bin", "a-b", "a.b", "a/b", "sub/deep/x", ".hidden", "sub/.gitignore"}) {
    write(m + "/" + f, "x");
  }
  (void)!system(("mkdir -p '" + m + "/empty'").c_str());
  EXPECT_EQ(sentry::list_model_files(m),
            (Files{".hidden", "a-b", "a.b", "a/b", "b.bin", "sub/.gitignore", "sub/deep/x"}));
}

TEST(ListModelFiles, GitPathsAtTheTopOnlyIgnoredByWholeComponents) {
  TempDir d;
  const std::string m = d.path + "/m";
  for (const char* f : {".git/HEAD", ".gitignore", ".github/w.yml", ".gitattributes", "x/.git/y",
                        "keep", "a/b/c", "a/bc"}) {
    write(m + "/" + f, "x");
  }
  EXPECT_EQ(sentry::list_model_files(m), (Files{"a/b/c", "a/bc", "keep", "x/.git/y"}));
  ListOptions o;
  o.ignore_paths = {"a/b", "./keep/"};
  EXPECT_EQ(sentry::list_model_files(m, o), (Files{"a/bc", "x/.git/y"}));
  o.ignore_git_paths = false;
  EXPECT_EQ(sentry::list_model_files(m, o).size(), 8u - 2u);
}

TEST(ListModelFiles, SignatureInsideTheDirectoryIsIgnored) {
  TempDir d;
  const std::string m = d.path + "/m";
  write(m + "/w.safetensors", "x");
  write(m + "/model.sig", "{}");
  ListOptions o;
  o.signature_path = m + "/model.sig";
  EXPECT_EQ(sentry::list_model_files(m, o), (Files{"w.safetensors"}));
  o.signature_path = d.path + "/elsewhere.sig";  // outside: nothing more ignored
  EXPECT_EQ(sentry::list_model_files(m, o), (Files{"model.sig", "w.safetensors"}));
}

TEST(ListModelFiles, SingleFileModelIsDot) {
  TempDir d;
  write(d.path + "/one.safetensors", "x");
  EXPECT_EQ(sentry::list_model_files(d.path + "/one.safetensors"), (Files{"."}));
}

TEST(ListModelFiles, SymbolicLinksRefusedUnlessAllowed) {
  TempDir d;
  const std::string m = d.path + "/m";
  write(m + "/real", "x");
  write(d.path + "/outside/f", "y");
  ASSERT_EQ(symlink("real", (m + "/link").c_str()), 0);
  ASSERT_EQ(symlink((d.path + "/outside").c_str(), (m + "/dirlink").c_str()), 0);
  try {
    sentry::list_model_files(m);
    FAIL() << "a symbolic link was listed";
  } catch (const sentry::OptionError& e) {
    EXPECT_NE(std::string(e.what()).find("is a symbolic link; symbolic links are refused unless "
                                         "allow_symlinks=True"),
              std::string::npos);
    ASSERT_EQ(e.parts.size(), 2u);
    EXPECT_TRUE(e.parts[1].option);
    EXPECT_EQ(e.parts[1].text, "allow_symlinks");
  }
  ListOptions o;
  o.allow_symlinks = true;
  // A link to a file is that file under its own name; a link to a directory is not followed.
  EXPECT_EQ(sentry::list_model_files(m, o), (Files{"link", "real"}));
  ASSERT_EQ(symlink("nowhere", (m + "/broken").c_str()), 0);
  EXPECT_NE(refusal([&] { sentry::list_model_files(m, o); }).find("broken is a broken symbolic link"),
            std::string::npos);
}

TEST(ListModelFiles, LinkInsideAnIgnoredDirectoryIsStillRefused) {
  TempDir d;
  const std::string m = d.path + "/m";
  write(m + "/.git/HEAD", "x");
  ASSERT_EQ(symlink("HEAD", (m + "/.git/link").c_str()), 0);
  EXPECT_NE(refusal([&] { sentry::list_model_files(m); }).find("is a symbolic link"),
            std::string::npos);
}

TEST(ListModelFiles, FifoRefusedWithoutBlocking) {
  TempDir d;
  const std::string m = d.path + "/m";
  write(m + "/w", "x");
  ASSERT_EQ(mkfifo((m + "/pipe").c_str(), 0600), 0);
  EXPECT_EQ(refusal([&] { sentry::list_model_files(m); }),
            m + "/pipe is not a regular file or directory (or a broken link); a model holds only "
                "files and directories");
}

TEST(ListModelFiles, MissingModelIsAFileError) {
  EXPECT_THROW(sentry::list_model_files("/nonexistent/sentry/model"), sentry::FileError);
}

TEST(EffectiveIgnorePaths, RelativeAbsoluteOutsideAndTheDirectoryItself) {
  TempDir d;
  const std::string m = d.path + "/m";
  write(m + "/x", "x");
  ListOptions o;
  o.ignore_paths = {"a/./b/", m + "/abs", d.path + "/outside", "../up", "c/../d"};
  o.signature_path = m + "/s.sig";
  o.ignore_git_paths = false;
  EXPECT_EQ(sentry::effective_ignore_paths(m, o), (Files{"a/b", "abs", "d", "s.sig"}));
  o.ignore_paths = {"."};
  EXPECT_NE(refusal([&] { sentry::effective_ignore_paths(m, o); })
                .find("ignore path '.' is the model directory itself"),
            std::string::npos);
  o.ignore_paths = {""};
  EXPECT_NE(refusal([&] { sentry::effective_ignore_paths(m, o); }).find("is not a non-empty path"),
            std::string::npos);
}

TEST(CheckModelFiles, MissingAndUnexpectedListedEmptyFileNoShard) {
  TempDir d;
  const std::string m = d.path + "/m";
  for (const char* f : {"a.bin", "c/d", "z"}) write(m + "/" + f, "x");
  write(m + "/empty", "");
  write(m + "/m.sig", "{}");  // the signature inside the directory: not the model's
  const std::string sig = m + "/m.sig";
  const Files signed_names = {"z", "a.bin", "b", "a.bin"};  // any order, repeats allowed
  ListOptions o;
  o.ignore_paths = {"c"};
  try {
    sentry::check_model_files(m, sig, signed_names, false, o);
    FAIL() << "no VerificationError";
  } catch (const sentry::VerificationError& e) {
    EXPECT_EQ(e.brief, m + ": the files do not match " + sig);
    EXPECT_EQ(e.missing, Files{"b"});
    EXPECT_EQ(e.unexpected, Files{"empty"});
    EXPECT_TRUE(e.changed.empty());
  }
  // The shards method cuts an empty file into no shards: it is no extra file.
  write(m + "/b", "x");
  EXPECT_EQ(sentry::check_model_files(m, sig, signed_names, true, o), (Files{"a.bin", "b", "z"}));
  EXPECT_THROW(sentry::check_model_files(m, sig, signed_names, false, o),
               sentry::VerificationError);
}

// ---------------------------------------------------------------------------------------------
// safetensors headers

TEST(SafetensorsHeader, GoodFileAbsoluteOffsetsAndPrefix) {
  TempDir d;
  const std::string path = d.path + "/ok.safetensors";
  const std::string json =
      R"({"__metadata__": {"k": "v"}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]},)"
      R"( "a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}, )"
      R"("e": {"dtype": "I64", "shape": [0, 9223372036854775807], "data_offsets": [6, 6]}}  )";
  write(path, safetensors(json, "ab1234"));
  const sentry::SafetensorsHeader h = sentry::read_safetensors_header(path);
  ASSERT_EQ(h.entries.size(), 3u);
  EXPECT_EQ(h.entries[0].name, "a");
  EXPECT_EQ(h.entries[0].offset, 8 + json.size());
  EXPECT_EQ(h.entries[1].name, "b");
  EXPECT_EQ(h.entries[1].length, 4u);
  EXPECT_EQ(h.entries[2].name, "e");  // empty tensors sort after those at the same offset
  EXPECT_EQ(h.data_start, 8 + json.size());
  EXPECT_EQ(h.file_size, 8 + json.size() + 6);
  EXPECT_EQ(h.prefix, safetensors(json, ""));
  ASSERT_EQ(h.metadata.size(), 1u);
  EXPECT_EQ(h.metadata[0], (std::pair<std::string, std::string>{"k", "v"}));
}

struct Hostile {
  const char* name;
  std::string file;
  std::string message;  // what the error says after "PATH: "
};

std::string t(const char* dtype, const char* shape, const char* offsets) {
  return std::string(R"({"dtype": ")") + dtype + R"(", "shape": )" + shape +
         R"(, "data_offsets": )" + offsets + "}";
}

TEST(SafetensorsHeader, HostileHeadersAreRefusedNamingFileAndTensor) {
  const std::vector<Hostile> cases = {
      {"too short", std::string("\x01\x00\x00", 3), "3 bytes is too short for a safetensors file"},
      {"huge length", safetensors("{}", "", 100'000'001),
       "header length 100000001 is larger than the 100000000-byte limit"},
      {"length past end", safetensors("{}", "", 50),
       "header length 50 runs past the end of the file (10 bytes)"},
      {"lying offsets", safetensors(R"({"a": )" + t("U8", "[2]", "[0, 2]") + "}", "a"),
       "tensor 'a': data_offsets [0, 2] run past the data region (1 bytes)"},
      {"offsets past 2^64", safetensors(R"({"a": )" + t("U8", "[2]", "[0, 18446744073709551616]") + "}", "ab"),
       "header is not valid JSON: "},
      {"reversed", safetensors(R"({"a": )" + t("U8", "[0]", "[2, 0]") + "}", "ab"),
       "tensor 'a': data_offsets [2, 0]: begin is after end"},
      {"overlap",
       safetensors(R"({"a": )" + t("U8", "[2]", "[0, 2]") + R"(, "b": )" + t("U8", "[2]", "[1, 3]") + "}", "abc"),
       "tensor 'b': overlaps tensor 'a' (starts at 1, 'a' ends at 2)"},
      {"hole",
       safetensors(R"({"a": )" + t("U8", "[1]", "[0, 1]") + R"(, "b": )" + t("U8", "[1]", "[2, 3]") + "}", "abc"),
       "tensor 'b': 1 bytes between the previous tensor and this one are not covered by any tensor"},
      {"trailing", safetensors(R"({"a": )" + t("U8", "[2]", "[0, 2]") + "}", "abc"),
       "the data region has 1 bytes after the last tensor that no tensor covers"},
      {"duplicate key",
       safetensors(R"({"a": )" + t("U8", "[1]", "[0, 1]") + R"(, "a": )" + t("U8", "[1]", "[1, 2]") + "}", "ab"),
       "header is not valid JSON: header: duplicate key 'a' in a JSON object"},
      {"overflowing shape",
       safetensors(R"({"a": )" + t("F32", "[4294967296, 1073741824]", "[0, 4]") + "}", "abcd"),
       "tensor 'a': F32 [4294967296, 1073741824]: more than 2^64 bytes"},
      {"shape past 2^64 elements",
       safetensors(R"({"a": )" + t("U8", "[9223372036854775807, 9223372036854775807]", "[0, 1]") + "}", "a"),
       "tensor 'a': U8 [9223372036854775807, 9223372036854775807]: more than 2^64 elements"},
      {"wrong length", safetensors(R"({"a": )" + t("U8", "[3]", "[0, 2]") + "}", "ab"),
       "tensor 'a': 2 bytes in data_offsets, but U8 [3] takes 3"},
      {"sub-byte", safetensors(R"({"a": )" + t("F4", "[3]", "[0, 2]") + "}", "ab"),
       "tensor 'a': F4 [3]: 3 elements of 4 bits do not end on a byte boundary"},
      {"negative dim", safetensors(R"({"a": )" + t("U8", "[-2]", "[0, 2]") + "}", "ab"),
       "tensor 'a': shape must be a list of non-negative integers, got [-2]"},
      {"float dim", safetensors(R"({"a": )" + t("U8", "[2.0]", "[0, 2]") + "}", "ab"),
       "tensor 'a': shape must be a list of non-negative integers, got [2.0]"},
      {"unknown dtype", safetensors(R"({"a": )" + t("F128", "[2]", "[0, 2]") + "}", "ab"),
       "tensor 'a': unknown dtype 'F128'"},
      {"unknown field", safetensors(R"({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1], "z": 1, "y": 2}})", "a"),
       "tensor 'a': unknown field(s) y, z"},
      {"missing fields", safetensors(R"({"a": {"shape": [1]}})", "a"),
       "tensor 'a': missing data_offsets, dtype"},
      {"empty name", safetensors(R"({"": )" + t("U8", "[1]", "[0, 1]") + "}", "a"), "empty tensor name"},
      {"not an object", safetensors("[1, 2]", ""), "header must be a JSON object, got list"},
      {"NaN", safetensors(R"({"__metadata__": {"a": NaN}})", ""),
       "header is not valid JSON: __metadata__.a: NaN is not valid JSON"},
      {"not UTF-8", safetensors("{\"\xff\": 1}", ""), "header is not UTF-8"},
      {"metadata value", safetensors(R"({"__metadata__": {"k": 1}})", ""),
       "__metadata__['k'] must be a string, got int"},
      {"entry not object", safetensors(R"({"a": [1]})", ""), "tensor 'a': entry must be an object, got list"},
  };
  TempDir d;
  for (const Hostile& c : cases) {
    const std::string path = d.path + "/bad.safetensors";
    write(path, c.file);
    const std::string got = refusal([&] { sentry::read_safetensors_header(path); });
    EXPECT_EQ(got.substr(0, path.size() + 2 + c.message.size()), path + ": " + c.message)
        << c.name;
  }
}

TEST(SafetensorsHeader, FifoAsModelFileIsRefusedWithoutBlocking) {
  TempDir d;
  const std::string path = d.path + "/w.safetensors";
  ASSERT_EQ(mkfifo(path.c_str(), 0600), 0);
  EXPECT_EQ(refusal([&] { sentry::read_safetensors_header(path); }),
            path + ": is a FIFO (named pipe), not a regular file (safetensors file)");
}

TEST(SafetensorsHeader, ByteLength) {
  EXPECT_EQ(sentry::safetensors_byte_length("F6_E2M3", {4}), 3u);
  EXPECT_EQ(sentry::safetensors_byte_length("F32", {0, INT64_MAX, INT64_MAX}), 0u);
  EXPECT_THROW(sentry::safetensors_byte_length("F32", {-1}), FormatError);
  EXPECT_THROW(sentry::safetensors_byte_length("X", {1}), FormatError);
}

}  // namespace
