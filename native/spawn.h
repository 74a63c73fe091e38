// Real OS processes: clone+exec, the child's set-up done the way libuv's uv__process_child_init
// does it, and exits
// watched through pidfds on one thread of our own (node-pty's reason: not the libuv threadpool).
#pragma once
#include <sys/resource.h>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace mp::spawn {

struct Options {
  std::string file;
  std::vector<std::string> argv;
  std::vector<std::string> env;  // "KEY=value"
  std::string cwd;               // empty: the parent's
  std::vector<int> cpus;         // empty: the parent's affinity
  // Our fds to hand on, in order: the i-th arrives as fd 3 + i. Every other fd is closed on exec.
  std::vector<int> pass_fds;
};

struct Spawned {
  pid_t pid;
  int pidfd;
};

// Starts a child (clone with CLONE_VM|CLONE_VFORK) and execs. All memory the child needs is
// prepared first; the child only makes raw syscalls. An exec (or chdir, or affinity) failure is reported back through a close-on-exec
// pipe and thrown here as SysFail, after the child has been reaped.
Spawned Spawn(const Options& options);

struct ExitStatus {
  bool exited;     // false: still running
  int code;        // exit code, or -signal as Python's exitcode
  int64_t user_us;
  int64_t system_us;
  int64_t max_rss_kib;
};

// Sets the CPU affinity of a running process (a warm child gets its `cpus` this way).
void SetAffinity(pid_t pid, const std::vector<int>& cpus);

// Reaps `pid` if it has exited (wait4 with WNOHANG).
ExitStatus TryReap(pid_t pid);

// Waits up to timeout_ms (< 0: for ever) for the pidfd to report an exit; true if it did.
bool WaitExit(int pidfd, int timeout_ms);

// One thread polls every watched pidfd and reports exits through `notify` (on that thread).
class ExitWatcher {
 public:
  explicit ExitWatcher(std::function<void()> notify);
  ~ExitWatcher();
  ExitWatcher(const ExitWatcher&) = delete;
  ExitWatcher& operator=(const ExitWatcher&) = delete;

  void Watch(int pidfd);
  void Unwatch(int pidfd);
  std::vector<int> Drain();  // pidfds that became readable

 private:
  void Run();
  std::function<void()> notify_;
  std::mutex mu_;
  std::vector<int> watched_;
  std::vector<int> done_;
  int control_fd_;  // eventfd that wakes the thread when the set changes
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace mp::spawn
