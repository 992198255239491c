// Opening an untrusted input file (a bundle, a safetensors header) without ever blocking: the
// open is O_NONBLOCK, so a FIFO planted where a file should be neither hangs the open nor the
// read, and the type is checked on the opened descriptor, so a path swapped after a check is
// caught. Torch-free.
#pragma once

#include <cstdint>
#include <string>

namespace sentry {

// An open input file; closes its descriptor when it goes.
struct OpenInput {
  int fd = -1;
  std::uint64_t size = 0;  // fstat's when opened
  OpenInput() = default;
  OpenInput(const OpenInput&) = delete;
  OpenInput& operator=(const OpenInput&) = delete;
  ~OpenInput();
};

// "a directory", "a FIFO (named pipe)", ... for a file mode that is not a regular file's.
const char* file_kind(unsigned mode);

// Opens `path` for reading: FileError when it cannot be opened (missing, unreadable),
// FormatError "PATH: is a FIFO (named pipe), not a regular file (WHAT)" for anything but a
// regular file, as Sentry's Python open_input words it.
void open_input(const std::string& path, const std::string& what, OpenInput& out);

}  // namespace sentry
