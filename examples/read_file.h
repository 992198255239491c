// The examples' reader of small files (a public key's PEM).
#pragma once

#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

namespace example {

inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot be read");
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

}  // namespace example
