// Worker processes for the study's runs. LibTorch's global generator decides
// a run's initialisation, batch order and noise (seed_everything), so two
// runs cannot share a process at the same time; the driver keeps a few
// worker processes (the study binary in its worker mode), each bound to one
// experiment, and hands them runs one at a time over a pipe. A worker loads
// its experiment's data once and then computes run after run, as a
// one-process study would, so the records do not depend on how many workers
// there are.
//
// The protocol: the driver writes one line per task to the worker's stdin
// and closes it when there is no more work; the worker answers one line per
// task (and one when it is ready) on file descriptor 3. Its stdout and
// stderr go to a log file.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace tram::study {

// The driver's side of one worker.
class WorkerProcess {
 public:
  // Starts argv[0] (a path) with argv; throws naming the program when it
  // cannot.
  WorkerProcess(const std::vector<std::string>& argv, const std::filesystem::path& log);
  // Ends the worker if it is still running (SIGTERM) and reaps it, so that no
  // worker outlives the driver that would record its runs.
  ~WorkerProcess();
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  // One task line (without the newline). Throws when the worker is gone.
  void send(const std::string& line);
  // No more tasks: the worker finishes the one it has and exits.
  void close_input();
  // The next reply line; std::nullopt when the worker has closed its side
  // (it exited). Blocks until a whole line or the end.
  std::optional<std::string> read_reply();
  // Waits for the worker's end: its exit status, 128 + the signal when a
  // signal ended it. Call after read_reply() returned std::nullopt.
  int wait();

  int reply_descriptor() const { return from_worker_; }
  const std::filesystem::path& log() const { return log_; }

 private:
  pid_t pid_ = -1;
  int to_worker_ = -1, from_worker_ = -1;
  std::filesystem::path log_;
};

// Blocks until one of `workers` has a reply to read (or has ended); returns
// its index.
size_t wait_for_reply(const std::vector<WorkerProcess*>& workers);

// The worker's side: the next task line from the driver (std::nullopt when
// the driver has no more), and a reply to it.
std::optional<std::string> next_task();
void reply_to_driver(const std::string& line);

// Called first in a worker started by the process `driver`: the worker gets
// SIGTERM when the driver ends, even when the driver is killed with SIGKILL,
// and exits at once if the driver has already ended.
void die_with_parent(pid_t driver);

// The path of the running program (/proc/self/exe), for starting workers.
std::filesystem::path this_program();

// The last `lines` lines of a text file ("" when unreadable), for reporting
// a failed worker.
std::string tail_of_file(const std::filesystem::path& file, size_t lines);

}  // namespace tram::study
