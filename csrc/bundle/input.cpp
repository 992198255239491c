// Opening untrusted input files without blocking (input.h).
#include "input.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../include/sentry/bundle.h"

namespace sentry {

OpenInput::~OpenInput() {
  if (fd >= 0) ::close(fd);
}

const char* file_kind(unsigned mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "not a regular file";
}

void open_input(const std::string& path, const std::string& what, OpenInput& out) {
  out.fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (out.fd < 0) throw FileError(errno, path);
  struct stat st;
  if (::fstat(out.fd, &st) != 0) throw FileError(errno, path);
  if (!S_ISREG(st.st_mode)) {
    throw FormatError(path + ": is " + file_kind(st.st_mode) + ", not a regular file (" + what +
                      ")");
  }
  out.size = static_cast<std::uint64_t>(st.st_size);
}

}  // namespace sentry
