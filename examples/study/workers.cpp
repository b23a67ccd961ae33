#include "workers.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <stdexcept>

extern char** environ;

namespace tram::study {

namespace fs = std::filesystem;

namespace {

constexpr int kReplyDescriptor = 3;  // the worker's end of the reply pipe

std::string system_error(const std::string& what) { return what + ": " + std::strerror(errno); }

void write_all(int descriptor, const std::string& text, const std::string& what) {
  size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = ::write(descriptor, text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw std::runtime_error(system_error(what));
    written += static_cast<size_t>(n);
  }
}

}  // namespace

WorkerProcess::WorkerProcess(const std::vector<std::string>& argv, const fs::path& log) : log_(log) {
  // A worker that died must show up as a failed write, not kill the driver.
  ::signal(SIGPIPE, SIG_IGN);
  int tasks[2], replies[2];
  if (::pipe2(tasks, O_CLOEXEC) != 0) throw std::runtime_error(system_error("pipe"));
  if (::pipe2(replies, O_CLOEXEC) != 0) {
    ::close(tasks[0]);
    ::close(tasks[1]);
    throw std::runtime_error(system_error("pipe"));
  }
  // dup2 clears close-on-exec on the copies: the worker keeps exactly stdin
  // (tasks), stdout/stderr (the log) and descriptor 3 (replies).
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, tasks[0], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, replies[1], kReplyDescriptor);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::vector<char*> args;
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  const int error = posix_spawn(&pid_, argv.at(0).c_str(), &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(tasks[0]);
  ::close(replies[1]);
  to_worker_ = tasks[1];
  from_worker_ = replies[0];
  if (error != 0) {
    ::close(to_worker_);
    ::close(from_worker_);
    throw std::runtime_error("cannot start " + argv.at(0) + " (log " + log.string() + "): " + std::strerror(error));
  }
}

WorkerProcess::~WorkerProcess() {
  if (to_worker_ >= 0) ::close(to_worker_);
  if (from_worker_ >= 0) ::close(from_worker_);
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
}

void WorkerProcess::send(const std::string& line) {
  if (to_worker_ < 0) throw std::logic_error("WorkerProcess::send after close_input");
  write_all(to_worker_, line + "\n", "sending a task to the worker logging to " + log_.string());
}

void WorkerProcess::close_input() {
  if (to_worker_ >= 0) ::close(to_worker_);
  to_worker_ = -1;
}

std::optional<std::string> WorkerProcess::read_reply() {
  // Byte by byte: a reply is one short write by the worker, so once poll()
  // has seen it the whole line is there.
  std::string line;
  while (true) {
    char byte = 0;
    const ssize_t n = ::read(from_worker_, &byte, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw std::runtime_error(system_error("reading the worker logging to " + log_.string()));
    if (n == 0) return std::nullopt;
    if (byte == '\n') return line;
    line += byte;
  }
}

int WorkerProcess::wait() {
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0) {
    if (errno != EINTR) throw std::runtime_error(system_error("waitpid"));
  }
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

size_t wait_for_reply(const std::vector<WorkerProcess*>& workers) {
  if (workers.empty()) throw std::logic_error("wait_for_reply: no worker");
  std::vector<pollfd> descriptors;
  for (const auto* worker : workers) descriptors.push_back({worker->reply_descriptor(), POLLIN, 0});
  while (true) {
    const int ready = ::poll(descriptors.data(), descriptors.size(), -1);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) throw std::runtime_error(system_error("poll"));
    for (size_t i = 0; i < descriptors.size(); ++i) {
      if (descriptors[i].revents != 0) return i;  // a line, or the end (POLLHUP)
    }
  }
}

std::optional<std::string> next_task() {
  std::string line;
  if (!std::getline(std::cin, line)) return std::nullopt;
  return line;
}

void reply_to_driver(const std::string& line) {
  write_all(kReplyDescriptor, line + "\n", "replying to the study's driver");
}

void die_with_parent(pid_t driver) {
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  // The driver may have ended before the line above: then no signal comes.
  if (::getppid() != driver) std::_Exit(1);
}

fs::path this_program() {
  // POSIX, not std::filesystem::read_symlink: the LibTorch wheel exports its
  // own copies of some std::filesystem functions.
  std::vector<char> path(4096);
  const ssize_t length = ::readlink("/proc/self/exe", path.data(), path.size() - 1);
  if (length <= 0) throw std::runtime_error(system_error("readlink /proc/self/exe"));
  return std::string(path.data(), static_cast<size_t>(length));
}

std::string tail_of_file(const fs::path& file, size_t lines) {
  std::ifstream in(file);
  std::deque<std::string> last;
  for (std::string line; std::getline(in, line);) {
    last.push_back(line);
    if (last.size() > lines) last.pop_front();
  }
  std::string text;
  for (const auto& line : last) text += line + "\n";
  return text;
}

}  // namespace tram::study
