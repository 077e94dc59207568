// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// An output file that appears whole or not at all: written to a temporary
// file in the same directory, renamed over the destination only by
// commit(). An error, an exception, Ctrl-C or SIGTERM removes the
// temporary file, so a failed run never leaves a partial matrix behind.
// Shared by the two commands, convmat and convmat-onnx (POSIX).
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

namespace convmat_tools {

/// An output file could not be created, written or renamed (the message
/// names the file and the system's reason).
class file_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

/// Temporary files to remove if a signal ends the process. Fixed-size
/// and written before the handler can see it, so the handler only reads.
struct PendingFiles {
  static constexpr int capacity = 4;
  std::array<char[4096], capacity> paths{};
  std::array<volatile sig_atomic_t, capacity> used{};
};

inline PendingFiles& pending_files() {
  static PendingFiles files;
  return files;
}

extern "C" inline void remove_pending_and_exit(int signal_number) {
  auto& files = pending_files();
  for (int i = 0; i < PendingFiles::capacity; ++i)
    if (files.used[i]) ::unlink(files.paths[i]);
  // Re-raise with the default action so the exit status says "killed by signal".
  ::signal(signal_number, SIG_DFL);
  ::raise(signal_number);
}

constexpr std::array<int, 4> cleanup_signals{SIGINT, SIGTERM, SIGHUP, SIGPIPE};

/// Holds the cleanup signals back for its lifetime, so a file cannot exist
/// on disk unknown to the handler (between mkstemp() and its registration, a
/// SIGTERM would otherwise leave the temporary behind), and files committed
/// together are renamed with no signal in between. A signal that arrives
/// meanwhile is delivered when the block ends.
class CleanupSignalsBlocked {
 public:
  CleanupSignalsBlocked() {
    sigset_t block;
    sigemptyset(&block);
    for (int s : cleanup_signals) sigaddset(&block, s);
    ::pthread_sigmask(SIG_BLOCK, &block, &previous_);
  }
  CleanupSignalsBlocked(const CleanupSignalsBlocked&) = delete;
  CleanupSignalsBlocked& operator=(const CleanupSignalsBlocked&) = delete;
  ~CleanupSignalsBlocked() { ::pthread_sigmask(SIG_SETMASK, &previous_, nullptr); }

 private:
  sigset_t previous_;
};

inline void install_signal_cleanup() {
  static bool installed = false;
  if (installed) return;
  installed = true;
  for (int s : cleanup_signals) {
    struct sigaction current {};
    // A signal the caller ignores (nohup, a background job's SIGINT) stays ignored.
    if (::sigaction(s, nullptr, &current) == 0 && current.sa_handler == SIG_IGN) continue;
    ::signal(s, remove_pending_and_exit);
  }
}

inline std::string parent_directory(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

inline std::string file_name(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace detail

/// A file written under a temporary name ("DIR/.NAME.convmat-XXXXXX") and
/// renamed to its final path by commit(); destroyed uncommitted, it is removed.
class OutputFile {
 public:
  explicit OutputFile(std::string path) : path_(std::move(path)) {
    detail::install_signal_cleanup();
    temp_ = detail::parent_directory(path_) + "/." + detail::file_name(path_) + ".convmat-XXXXXX";
    const int slot = free_slot();
    int fd = -1, error = 0;
    {
      const detail::CleanupSignalsBlocked blocked;  // created and registered as one step
      fd = ::mkstemp(temp_.data());
      error = errno;
      if (fd >= 0) register_pending(slot);
    }
    if (fd < 0)
      throw file_error("cannot create '" + path_ + "': " + std::strerror(error) + " (in directory '" +
                      detail::parent_directory(path_) + "')");
    ::fchmod(fd, 0644 & ~current_umask());
    file_ = ::fdopen(fd, "wb");
    if (!file_) {
      error = errno;
      ::close(fd);
      discard();
      throw file_error("cannot write '" + path_ + "': " + std::strerror(error));
    }
    std::setvbuf(file_, nullptr, _IOFBF, 1 << 20);
  }
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;
  ~OutputFile() { discard(); }

  /// The final path.
  const std::string& path() const { return path_; }

  /// Appends `size` bytes; file_error if the disk is full or the write fails.
  void write(const void* data, std::size_t size) {
    if (size != 0 && std::fwrite(data, 1, size, file_) != size) fail_write();
  }
  void write(const std::string& text) { write(text.data(), text.size()); }

  /// Flushes, closes and renames the file to its final path.
  void commit() {
    close();
    publish();
  }

  /// Flushes and closes the temporary file (where a full disk shows), or
  /// file_error; publish() then renames it. commit() does both;
  /// commit_together() closes every file before it renames any.
  void close() {
    if (!file_) return;
    std::FILE* file = file_;
    file_ = nullptr;
    if (std::fflush(file) != 0) {
      const int error = errno;
      std::fclose(file);
      errno = error;
      fail_write();
    }
    if (std::fclose(file) != 0) fail_write();
  }
  void publish() {
    if (file_) throw file_error("internal error: '" + path_ + "' published before it was closed");
    if (std::rename(temp_.c_str(), path_.c_str()) != 0)
      throw file_error("cannot rename '" + temp_ + "' to '" + path_ + "': " + std::strerror(errno));
    unregister_pending();
    committed_ = true;
  }

 private:
  static mode_t current_umask() {
    const mode_t mask = ::umask(0);
    ::umask(mask);
    return mask;
  }

  [[noreturn]] void fail_write() { throw file_error("cannot write '" + path_ + "': " + std::strerror(errno)); }

  /// The signal handler's slot this file will take, or file_error: a file
  /// the handler cannot remove is not created.
  int free_slot() const {
    auto& files = detail::pending_files();
    if (temp_.size() >= sizeof(files.paths[0]))
      throw file_error("cannot create '" + path_ + "': its path is longer than " +
                       std::to_string(sizeof(files.paths[0]) - 1) + " bytes");
    for (int i = 0; i < detail::PendingFiles::capacity; ++i)
      if (!files.used[i]) return i;
    throw file_error("cannot create '" + path_ + "': " + std::to_string(detail::PendingFiles::capacity) +
                     " output files are open already");
  }
  void register_pending(int slot) {
    auto& files = detail::pending_files();
    std::memcpy(files.paths[slot], temp_.c_str(), temp_.size() + 1);
    std::atomic_signal_fence(std::memory_order_release);  // the path before the flag
    files.used[slot] = 1;
    slot_ = slot;
  }
  void unregister_pending() {
    if (slot_ >= 0) detail::pending_files().used[slot_] = 0;
    slot_ = -1;
  }

  void discard() {
    if (committed_) return;
    if (file_) std::fclose(file_);
    file_ = nullptr;
    ::unlink(temp_.c_str());
    unregister_pending();
  }

  std::string path_, temp_;
  std::FILE* file_ = nullptr;
  int slot_ = -1;
  bool committed_ = false;
};

/// Commits files that belong together (a model and its external data):
/// every one is closed first, so a full disk leaves all of them
/// uncommitted, then all are renamed with the cleanup signals held back.
template <class... Files>
void commit_together(Files&... files) {
  (files.close(), ...);
  const detail::CleanupSignalsBlocked blocked;
  (files.publish(), ...);
}

}  // namespace convmat_tools
