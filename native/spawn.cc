#include "spawn.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "sysfail.h"

namespace mp::spawn {
namespace {

// The child runs on a stack of its own inside the parent's memory: sanitizer instrumentation
// (redzones, no-return hooks) would act on the parent's bookkeeping, so the code that runs there
// is left uninstrumented, as glibc's posix_spawn child is.
#define MP_CHILD_CODE __attribute__((no_sanitize("address", "undefined")))

// What the child reports through the error pipe when a step fails.
enum Step : int { kStepAffinity = 1, kStepFds = 2, kStepChdir = 3, kStepExec = 4 };

const char* StepSyscall(int step) {
  switch (step) {
    case kStepAffinity: return "sched_setaffinity";
    case kStepFds: return "dup2";
    case kStepChdir: return "chdir";
    default: return "execve";
  }
}

[[noreturn]] MP_CHILD_CODE void ChildFail(int pipe_fd, int step) {
  int report[2] = {step, errno};
  ssize_t ignored = write(pipe_fd, report, sizeof report);
  (void)ignored;
  _exit(127);
}

// The kernel's struct for rt_sigaction(2): the child calls the syscall itself, so that no libc
// (or sanitizer) wrapper touches memory it shares with the parent.
struct KernelSigaction {
  void (*handler)(int);
  unsigned long flags;
  void (*restorer)();
  uint64_t mask;
};

// Everything the child needs, prepared by the parent before the clone.
struct ChildArgs {
  const char* file;
  char* const* argv;
  char* const* envp;
  const char* cwd;
  const cpu_set_t* cpus;
  const int* pass_fds;
  int n_pass;
  int error_fd;
  pid_t parent;
};

// Runs in the child between clone and exec, on its own small stack, in the parent's memory
// (CLONE_VM) while the parent waits (CLONE_VFORK): raw syscalls only, nothing allocated, nothing
// of the parent's written.
[[noreturn]] MP_CHILD_CODE void ChildInit(const char* file, char* const* argv, char* const* envp, const char* cwd,
                            const cpu_set_t* cpus, const int* pass_fds, int n_pass, int error_fd,
                            pid_t parent) {
  // Default dispositions, then an empty mask (the parent blocked everything around the clone).
  KernelSigaction dfl = {SIG_DFL, 0, nullptr, 0};
  for (int sig = 1; sig < 65; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    syscall(SYS_rt_sigaction, sig, &dfl, nullptr, sizeof(uint64_t));
  }
  uint64_t none = 0;
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, nullptr, sizeof(uint64_t));

  // Die with the parent. The parent may have died before the prctl took effect: check.
  prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  if (getppid() != parent) _exit(127);

  if (cpus != nullptr && sched_setaffinity(0, sizeof(cpu_set_t), cpus) != 0) {
    ChildFail(error_fd, kStepAffinity);
  }

  // Inherit stdio: the parent's 0-2 may be close-on-exec (Node marks them so), as libuv also handles.
  for (int fd = 0; fd <= 2; ++fd) {
    int flags = fcntl(fd, F_GETFD);
    if (flags >= 0 && (flags & FD_CLOEXEC) != 0) fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
  }

  // Move the passed fds out of the way of their targets first, then into place (libuv's order).
  // (These are the child's own fd table: without CLONE_FILES the clone copied it.)
  int first_target = 3;
  int high = first_target + n_pass;
  if (error_fd < high) {
    int moved = fcntl(error_fd, F_DUPFD_CLOEXEC, high);
    if (moved < 0) _exit(127);
    error_fd = moved;
  }
  int moved_fds[256];
  for (int i = 0; i < n_pass; ++i) {
    moved_fds[i] = fcntl(pass_fds[i], F_DUPFD_CLOEXEC, high);
    if (moved_fds[i] < 0) ChildFail(error_fd, kStepFds);
  }
  for (int i = 0; i < n_pass; ++i) {
    if (dup2(moved_fds[i], first_target + i) < 0) ChildFail(error_fd, kStepFds);
  }
  // Everything else closes on exec; the error pipe closes too, which tells the parent exec worked.
  if (syscall(SYS_close_range, high, ~0U, 4 /* CLOSE_RANGE_CLOEXEC */) != 0) {
    for (int fd = high; fd < 65536; ++fd) {
      if (fd != error_fd) fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    fcntl(error_fd, F_SETFD, FD_CLOEXEC);
  }

  if (cwd != nullptr && chdir(cwd) != 0) ChildFail(error_fd, kStepChdir);
  execve(file, argv, envp);
  ChildFail(error_fd, kStepExec);
}

MP_CHILD_CODE int ChildMain(void* raw) {
  const ChildArgs* a = static_cast<const ChildArgs*>(raw);
  ChildInit(a->file, a->argv, a->envp, a->cwd, a->cpus, a->pass_fds, a->n_pass, a->error_fd, a->parent);
}

// The child's stack: ChildInit needs about 2 KiB; glibc's posix_spawn gives 32 KiB or more.
constexpr size_t kChildStack = 64 * 1024;

std::vector<char*> CStrings(const std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (const std::string& s : strings) out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

}  // namespace

Spawned Spawn(const Options& options) {
  if (options.pass_fds.size() > 256) throw SysFail{"dup2", EMFILE, ""};
  std::vector<char*> argv = CStrings(options.argv);
  std::vector<char*> envp = CStrings(options.env);
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  for (int cpu : options.cpus) CPU_SET(cpu, &cpus);
  const char* cwd = options.cwd.empty() ? nullptr : options.cwd.c_str();

  int error_pipe[2];
  if (pipe2(error_pipe, O_CLOEXEC) != 0) throw SysFail{"pipe2", errno, ""};

  // clone(CLONE_VM|CLONE_VFORK), as glibc's posix_spawn: unlike fork(), it does not copy the
  // parent's page tables, so starting a child costs the same with a 50 MB heap or a 5 GB one
  // (fork took 11 ms from a process with 300 MB resident). The error pipe's read end must not
  // reach the child: it is O_CLOEXEC, and the child closes nothing of ours before exec.
  void* stack = mmap(nullptr, kChildStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) {
    int err = errno;
    close(error_pipe[0]);
    close(error_pipe[1]);
    throw SysFail{"mmap", err, ""};
  }
  ChildArgs child_args{options.file.c_str(), argv.data(), envp.data(), cwd,
                       options.cpus.empty() ? nullptr : &cpus, options.pass_fds.data(),
                       static_cast<int>(options.pass_fds.size()), error_pipe[1], getpid()};
  // With every signal blocked, no handler of the parent's runs in the child before it resets them.
  sigset_t all, saved;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &saved);
  pid_t pid = clone(ChildMain, static_cast<char*>(stack) + kChildStack, CLONE_VM | CLONE_VFORK | SIGCHLD, &child_args);
  int clone_errno = errno;
  pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  munmap(stack, kChildStack);
  close(error_pipe[1]);
  if (pid < 0) {
    close(error_pipe[0]);
    throw SysFail{"clone", clone_errno, ""};
  }

  int report[2] = {0, 0};
  ssize_t got;
  do {
    got = read(error_pipe[0], report, sizeof report);
  } while (got < 0 && errno == EINTR);
  close(error_pipe[0]);
  if (got == static_cast<ssize_t>(sizeof report)) {
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    throw SysFail{StepSyscall(report[0]), report[1],
                  report[0] == kStepChdir ? options.cwd : options.file};
  }

  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    int err = errno;
    kill(pid, SIGKILL);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    throw SysFail{"pidfd_open", err, ""};
  }
  return Spawned{pid, pidfd};
}

void SetAffinity(pid_t pid, const std::vector<int>& cpus) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int cpu : cpus) CPU_SET(cpu, &set);
  if (sched_setaffinity(pid, sizeof set, &set) != 0) throw SysFail{"sched_setaffinity", errno, ""};
}

ExitStatus TryReap(pid_t pid) {
  int status = 0;
  struct rusage usage;
  memset(&usage, 0, sizeof usage);
  pid_t rc;
  do {
    rc = wait4(pid, &status, WNOHANG, &usage);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) throw SysFail{"wait4", errno, ""};
  ExitStatus out{false, 0, 0, 0, 0};
  if (rc == 0) return out;
  out.exited = true;
  out.code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  out.user_us = static_cast<int64_t>(usage.ru_utime.tv_sec) * 1000000 + usage.ru_utime.tv_usec;
  out.system_us = static_cast<int64_t>(usage.ru_stime.tv_sec) * 1000000 + usage.ru_stime.tv_usec;
  out.max_rss_kib = usage.ru_maxrss;
  return out;
}

bool WaitExit(int pidfd, int timeout_ms) {
  struct pollfd pfd = {pidfd, POLLIN, 0};
  for (;;) {
    int rc = poll(&pfd, 1, timeout_ms);
    if (rc > 0) return true;
    if (rc == 0) return false;
    if (errno != EINTR) throw SysFail{"poll", errno, ""};
  }
}

ExitWatcher::ExitWatcher(std::function<void()> notify) : notify_(std::move(notify)) {
  control_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (control_fd_ < 0) throw SysFail{"eventfd", errno, ""};
  thread_ = std::thread(&ExitWatcher::Run, this);
}

ExitWatcher::~ExitWatcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  uint64_t one = 1;
  ssize_t ignored = write(control_fd_, &one, sizeof one);
  (void)ignored;
  if (thread_.joinable()) thread_.join();
  close(control_fd_);
}

void ExitWatcher::Watch(int pidfd) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    watched_.push_back(pidfd);
  }
  uint64_t one = 1;
  ssize_t ignored = write(control_fd_, &one, sizeof one);
  (void)ignored;
}

void ExitWatcher::Unwatch(int pidfd) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    watched_.erase(std::remove(watched_.begin(), watched_.end(), pidfd), watched_.end());
    done_.erase(std::remove(done_.begin(), done_.end(), pidfd), done_.end());
  }
  uint64_t one = 1;
  ssize_t ignored = write(control_fd_, &one, sizeof one);
  (void)ignored;
}

std::vector<int> ExitWatcher::Drain() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<int> out;
  out.swap(done_);
  return out;
}

void ExitWatcher::Run() {
  std::vector<struct pollfd> fds;
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
      fds.clear();
      fds.push_back({control_fd_, POLLIN, 0});
      for (int fd : watched_) fds.push_back({fd, POLLIN, 0});
    }
    int rc = poll(fds.data(), fds.size(), -1);
    if (rc < 0) continue;
    if (fds[0].revents != 0) {
      uint64_t count;
      ssize_t ignored = read(control_fd_, &count, sizeof count);
      (void)ignored;
    }
    bool any = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (size_t i = 1; i < fds.size(); ++i) {
        if (fds[i].revents == 0) continue;
        auto it = std::find(watched_.begin(), watched_.end(), fds[i].fd);
        if (it == watched_.end()) continue;  // unwatched meanwhile
        watched_.erase(it);
        done_.push_back(fds[i].fd);
        any = true;
      }
    }
    if (any) notify_();
  }
}

}  // namespace mp::spawn
