// Model directories by the reference tool's rules (sentry/model_files.h), ported from
// sentry/model_files.py, which is now a shell over this. Paths are handled as Python's posixpath
// handles them (normpath, abspath, realpath, relpath), so that both agree on every input.
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>

#include "../include/sentry/model_files.h"
#include "input.h"
#include "strict_json.h"

namespace sentry {

namespace {

std::vector<std::string> split(const std::string& path) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= path.size()) {
    const std::size_t slash = std::min(path.find('/', start), path.size());
    out.push_back(path.substr(start, slash - start));
    start = slash + 1;
  }
  return out;
}

// posixpath.normpath
std::string normpath(const std::string& path) {
  if (path.empty()) return ".";
  std::size_t leading = 0;
  while (leading < path.size() && path[leading] == '/') ++leading;
  const std::string initial = leading == 0 ? "" : leading == 2 ? "//" : "/";
  std::vector<std::string> parts;
  for (const std::string& c : split(path)) {
    if (c.empty() || c == ".") continue;
    if (c != ".." || (initial.empty() && parts.empty()) || (!parts.empty() && parts.back() == "..")) {
      parts.push_back(c);
    } else if (!parts.empty()) {
      parts.pop_back();
    }
  }
  std::string out = initial;
  for (std::size_t i = 0; i < parts.size(); ++i) out += (i ? "/" : "") + parts[i];
  return out.empty() ? "." : out;
}

std::string current_directory() {
  std::vector<char> buf(PATH_MAX);
  while (!::getcwd(buf.data(), buf.size())) {
    if (errno != ERANGE) throw FileError(errno, ".");
    buf.resize(buf.size() * 2);
  }
  return buf.data();
}

bool is_absolute(const std::string& p) { return !p.empty() && p[0] == '/'; }

std::string join(const std::string& a, const std::string& b) {
  if (is_absolute(b) || a.empty()) return b;
  return a.back() == '/' ? a + b : a + "/" + b;
}

// posixpath.abspath
std::string abspath(const std::string& path) {
  return normpath(is_absolute(path) ? path : join(current_directory(), path));
}

// posixpath._joinrealpath (not strict): symbolic links resolved as far as the path exists.
std::pair<std::string, bool> join_realpath(std::string path, std::string rest,
                                           std::map<std::string, std::optional<std::string>>& seen) {
  if (is_absolute(rest)) {
    rest = rest.substr(1);
    path = "/";
  }
  while (!rest.empty()) {
    const std::size_t slash = rest.find('/');
    const std::string name = rest.substr(0, slash);
    rest = slash == std::string::npos ? "" : rest.substr(slash + 1);
    if (name.empty() || name == ".") continue;
    if (name == "..") {
      if (!path.empty()) {
        const std::size_t cut = path.rfind('/');
        std::string head = cut == std::string::npos ? "" : path.substr(0, cut + 1);
        const std::string tail = cut == std::string::npos ? path : path.substr(cut + 1);
        if (!head.empty() && head.find_first_not_of('/') != std::string::npos) {
          while (head.back() == '/') head.pop_back();
        }
        path = tail == ".." ? join(join(head, ".."), "..") : head;
      } else {
        path = "..";
      }
      continue;
    }
    const std::string next = join(path, name);
    struct stat st;
    if (::lstat(next.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) {
      path = next;
      continue;
    }
    auto it = seen.find(next);
    if (it != seen.end()) {
      if (it->second) {
        path = *it->second;
        continue;
      }
      return {join(next, rest), false};  // a loop
    }
    seen[next] = std::nullopt;
    std::vector<char> target(PATH_MAX + 1);
    const ssize_t n = ::readlink(next.c_str(), target.data(), target.size() - 1);
    if (n < 0) throw FileError(errno, next);
    auto [resolved, ok] = join_realpath(path, std::string(target.data(), n), seen);
    if (!ok) return {join(resolved, rest), false};
    path = resolved;
    seen[next] = path;
  }
  return {path, true};
}

// os.path.realpath
std::string realpath(const std::string& path) {
  std::map<std::string, std::optional<std::string>> seen;
  return abspath(join_realpath("", path, seen).first);
}

// os.path.relpath of two absolute, normalised paths.
std::string relpath(const std::string& path, const std::string& start) {
  auto components = [](const std::string& p) {
    std::vector<std::string> out;
    for (const std::string& c : split(p)) {
      if (!c.empty()) out.push_back(c);
    }
    return out;
  };
  const auto a = components(path), b = components(start);
  std::size_t common = 0;
  while (common < a.size() && common < b.size() && a[common] == b[common]) ++common;
  std::string out;
  for (std::size_t i = common; i < b.size(); ++i) out += out.empty() ? ".." : "/..";
  for (std::size_t i = common; i < a.size(); ++i) out += (out.empty() ? "" : "/") + a[i];
  return out.empty() ? "." : out;
}

// `path` relative to `root_real` (both absolute), or none when outside it.
std::optional<std::string> relative_inside(const std::string& root_real, const std::string& path) {
  const std::string rel = relpath(realpath(path), root_real);
  if (rel == ".." || rel.rfind("../", 0) == 0 || is_absolute(rel)) return std::nullopt;
  return rel;
}

bool ignored(const std::string& rel, const std::vector<std::string>& paths) {
  for (const std::string& p : paths) {
    if (rel == p || (rel.size() > p.size() && rel.compare(0, p.size(), p) == 0 &&
                     rel[p.size()] == '/')) {
      return true;
    }
  }
  return false;
}

[[noreturn]] void refuse_link(const std::string& path) {
  throw OptionError({{path + " is a symbolic link; symbolic links are refused unless ", false, ""},
                     {"allow_symlinks", true, "allow_symlinks=True"}});
}

[[noreturn]] void refuse_special(
    const std::string& path, const std::string& what = "not a regular file or directory (or a broken link)") {
  throw FormatError(path + " is " + what + "; a model holds only files and directories");
}

}  // namespace

std::string model_file_path(const std::string& model_dir, const std::string& rel) {
  return rel == "." ? model_dir : join(model_dir, rel);
}

std::vector<std::string> effective_ignore_paths(const std::string& model_dir,
                                                const ListOptions& options) {
  const std::string root_real = realpath(model_dir);
  std::set<std::string> out;
  for (const std::string& p : options.ignore_paths) {
    if (p.empty()) throw FormatError("ignore path " + json::repr(p) + " is not a non-empty path");
    std::string rel;
    if (is_absolute(p)) {
      const auto inside = relative_inside(root_real, p);
      if (!inside) continue;
      rel = *inside;
    } else {
      rel = normpath(p);
      if (rel == ".." || rel.rfind("../", 0) == 0) continue;
    }
    if (rel == ".") throw FormatError("ignore path " + json::repr(p) + " is the model directory itself");
    out.insert(rel);
  }
  if (options.signature_path) {
    const auto rel = relative_inside(root_real, abspath(*options.signature_path));
    if (rel && *rel != ".") out.insert(*rel);
  }
  if (options.ignore_git_paths) out.insert(git_paths().begin(), git_paths().end());
  return {out.begin(), out.end()};
}

std::vector<std::string> list_model_files(const std::string& model_dir,
                                          const ListOptions& options) {
  const std::vector<std::string> skip = effective_ignore_paths(model_dir, options);
  struct stat st;
  if (::lstat(model_dir.c_str(), &st) != 0) throw FileError(errno, model_dir);
  if (S_ISLNK(st.st_mode)) {
    if (!options.allow_symlinks) refuse_link(model_dir);
    if (::stat(model_dir.c_str(), &st) != 0) {
      if (errno == ENOENT) refuse_special(model_dir);
      throw FileError(errno, model_dir);
    }
  }
  if (S_ISREG(st.st_mode)) return {"."};
  if (!S_ISDIR(st.st_mode)) refuse_special(model_dir);

  std::vector<std::string> files;
  std::vector<std::pair<std::string, std::string>> pending = {{"", model_dir}};  // (prefix, dir)
  while (!pending.empty()) {
    const auto [prefix, directory] = pending.back();
    pending.pop_back();
    DIR* dir = ::opendir(directory.c_str());
    if (!dir) throw FileError(errno, directory);
    std::vector<std::string> names;
    errno = 0;
    while (const dirent* entry = ::readdir(dir)) {
      const std::string name = entry->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    const int read_error = errno;
    ::closedir(dir);
    if (read_error) throw FileError(read_error, directory);
    for (const std::string& name : names) {
      const std::string rel = prefix + name;
      const std::string path = join(directory, name);
      struct stat entry;
      if (::lstat(path.c_str(), &entry) != 0) throw FileError(errno, path);
      if (S_ISLNK(entry.st_mode)) {
        if (!options.allow_symlinks) refuse_link(path);
        struct stat target;
        if (::stat(path.c_str(), &target) != 0) refuse_special(path, "a broken symbolic link");
        if (S_ISREG(target.st_mode)) {
          if (!ignored(rel, skip)) files.push_back(rel);
        } else if (!S_ISDIR(target.st_mode)) {  // links to directories: not followed
          refuse_special(path);
        }
      } else if (S_ISDIR(entry.st_mode)) {
        pending.emplace_back(rel + "/", path);  // ignored ones too: their links are refused
      } else if (S_ISREG(entry.st_mode)) {
        if (!ignored(rel, skip)) files.push_back(rel);
      } else {
        refuse_special(path);
      }
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<std::string> check_model_files(const std::string& model_dir,
                                           const std::string& signature_path,
                                           const std::vector<std::string>& signed_names,
                                           bool shards, ListOptions options) {
  options.signature_path = signature_path;
  const std::vector<std::string> present = list_model_files(model_dir, options);
  const std::set<std::string> signed_set(signed_names.begin(), signed_names.end());
  const std::set<std::string> present_set(present.begin(), present.end());
  std::vector<std::string> missing, unexpected, files;
  for (const std::string& name : signed_set) {
    if (!present_set.count(name)) missing.push_back(name);
  }
  for (const std::string& f : present) {
    if (signed_set.count(f)) {
      files.push_back(f);
      continue;
    }
    struct stat sb;
    const bool empty = ::stat(model_file_path(model_dir, f).c_str(), &sb) == 0 && sb.st_size == 0;
    if (!(shards && empty)) unexpected.push_back(f);
  }
  if (!missing.empty() || !unexpected.empty()) {
    throw VerificationError(model_dir + ": the files do not match " + signature_path, {},
                            std::move(missing), std::move(unexpected));
  }
  return files;
}

}  // namespace sentry
