// Tests of the C++ core (no Node), built under ASan and UBSan and run by ctest.
// Prints one line per check and, last, "N passed, N failed".
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "../futex.h"
#include "../ring.h"
#include "../shm.h"
#include "../spawn.h"
#include "../sysfail.h"
#include "../tracker.h"
#include "../uring_waiter.h"
#include "../waiter.h"

namespace {

int passed = 0;
int failed = 0;

void Check(bool ok, const char* what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what);
  (ok ? passed : failed)++;
}

template <typename F>
int ErrnoOf(F&& f) {
  try {
    f();
  } catch (const mp::SysFail& fail) {
    return fail.err;
  }
  return 0;
}

bool ShmExists(const std::string& name) { return access(("/dev/shm/" + name).c_str(), F_OK) == 0; }

template <typename F>
bool Eventually(F&& f, int ms = 3000) {
  for (int i = 0; i < ms / 5; ++i) {
    if (f()) return true;
    usleep(5000);
  }
  return f();
}

std::string UniqueName(const char* what) {
  return "nmptest_core_" + std::to_string(getpid()) + "_" + what;
}

void TestShm() {
  int fd = mp::shm::CreateAnonymous(4096);
  auto* a = static_cast<char*>(mp::shm::Map(fd, 4096));
  auto* b = static_cast<char*>(mp::shm::Map(fd, 4096));
  a[100] = 42;
  Check(b[100] == 42, "shm: two mappings of one memfd share bytes");
  mp::shm::FileId id = mp::shm::Identify(fd);
  Check(id.size == 4096, "shm: Identify reports the size");
  int again = mp::shm::OpenFromProcess(getpid(), fd, id.dev, id.ino);
  auto* c = static_cast<char*>(mp::shm::Map(again, 4096));
  Check(c[100] == 42, "shm: /proc/<pid>/fd re-open reaches the same memory");
  Check(ErrnoOf([&] { mp::shm::OpenFromProcess(getpid(), fd, id.dev, id.ino + 1); }) == ESTALE,
        "shm: a re-open that finds another file is ESTALE");
  Check(mp::shm::CheckOwnFd(fd, id.dev, id.ino) == fd && mp::shm::CheckOwnFd(fd, id.dev, id.ino + 1) == -1,
        "shm: CheckOwnFd matches by device and inode");
  mp::shm::Unmap(a, 4096);
  mp::shm::Unmap(b, 4096);
  mp::shm::Unmap(c, 4096);
  mp::shm::Close(again);
  mp::shm::Close(fd);

  std::string name = UniqueName("named");
  int named = mp::shm::CreateNamed(name, 100);
  struct stat st;
  fstat(named, &st);
  Check((st.st_mode & 0777) == 0600, "shm: named segments are mode 0600");
  Check(ErrnoOf([&] { mp::shm::CreateNamed(name, 100); }) == EEXIST, "shm: creating a name twice is EEXIST");
  int opened = mp::shm::OpenNamed(name);
  Check(mp::shm::Identify(opened).size == 100, "shm: OpenNamed sees the size");
  mp::shm::Close(opened);
  mp::shm::Close(named);
  mp::shm::Unlink(name);
  Check(!ShmExists(name), "shm: Unlink removes the name");
  Check(ErrnoOf([&] { mp::shm::OpenNamed(name); }) == ENOENT, "shm: opening a missing name is ENOENT");
  int err = ErrnoOf([&] { mp::shm::CreateNamed(name, size_t{1} << 50); });
  Check(err != 0 && !ShmExists(name), "shm: an impossible size fails at creation and leaves no name");
}

void TestFutex() {
  uint32_t word = 0;
  Check(mp::futex::Wait(&word, 1, -1) == mp::futex::kNotEqual, "futex: a changed word does not sleep");
  Check(mp::futex::Wait(&word, 0, 10'000'000) == mp::futex::kTimedOut, "futex: a timed wait times out");
  std::thread waker([&] {
    usleep(20000);
    __atomic_store_n(&word, 1, __ATOMIC_SEQ_CST);
    mp::futex::Wake(&word, 1);
  });
  mp::futex::WaitResult r = mp::futex::Wait(&word, 0, 5'000'000'000);
  waker.join();
  Check(r == mp::futex::kWoken || r == mp::futex::kNotEqual, "futex: a wake ends the wait");

  auto* shared = static_cast<uint32_t*>(mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  shared[0] = 0;
  pid_t child = fork();
  if (child == 0) {
    mp::futex::WaitResult cr = mp::futex::Wait(shared, 0, 5'000'000'000);
    _exit(cr == mp::futex::kTimedOut ? 1 : 0);
  }
  usleep(20000);
  __atomic_store_n(shared, 1, __ATOMIC_SEQ_CST);
  mp::futex::Wake(shared, 1);
  int status = 0;
  waitpid(child, &status, 0);
  Check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "futex: a wake reaches a sleeper in another process");
  munmap(shared, 4096);

  pid_t gone = fork();
  if (gone == 0) _exit(0);
  Check(Eventually([&] { return mp::futex::ProcessGone(gone); }), "futex: an unreaped zombie counts as gone");
  waitpid(gone, &status, 0);
  Check(mp::futex::ProcessGone(gone) && !mp::futex::ProcessGone(getpid()), "futex: ProcessGone after reaping, not for us");

  // Our own start time, read the way an owner records it: field 22 of /proc/self/stat.
  uint32_t start = 0;
  if (FILE* f = fopen("/proc/self/stat", "r")) {
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char* p = strrchr(buf, ')') + 2;
    for (int field = 3; field < 22; ++p) {
      if (*p == ' ') ++field;
    }
    start = static_cast<uint32_t>(strtoull(p, nullptr, 10));
  }
  Check(start != 0 && !mp::futex::ProcessGone(getpid(), start), "futex: a live owner with its recorded start time is not gone");
  Check(mp::futex::ProcessGone(getpid(), start + 1), "futex: a live process under the pid that started at another time is someone else");
}

void TestClaims() {
  using mp::futex::Claim;
  uint32_t words[2] = {7, 0};  // [0] the futex word, [1] the mark
  Claim take{Claim::kTake, &words[0], 0x40000123, &words[1], 99};
  Check(!mp::futex::TryClaim(take) && words[0] == 7 && words[1] == 0, "claim: a held lock is not taken, the mark untouched");
  words[0] = 0;
  Check(mp::futex::TryClaim(take) && words[0] == 0x40000123 && words[1] == 99, "claim: a free lock is taken and marked");
  mp::futex::UndoClaim(take);
  Check(words[0] == 0 && words[1] == 0, "claim: undoing a take frees the lock and clears its mark");

  uint32_t event[2] = {0, 3};  // [0] the flag, [1] sleepers
  Claim seen{Claim::kSeen, &event[0], 1, &event[1], static_cast<uint32_t>(-1)};
  Check(!mp::futex::TryClaim(seen) && event[1] == 3, "claim: an unset flag is not seen");
  event[0] = 1;
  Check(mp::futex::TryClaim(seen) && event[1] == 2, "claim: a set flag is seen, and the sleeper leaves the count");
  mp::futex::UndoClaim(seen);
  Check(event[1] == 3, "claim: undoing a seen flag counts the sleeper again");

  uint32_t sem[2] = {0, 1};  // [0] the count, [1] sleepers
  Claim count{Claim::kCount, &sem[0], 0, &sem[1], static_cast<uint32_t>(-1)};
  Check(!mp::futex::TryClaim(count) && sem[0] == 0 && sem[1] == 1, "claim: a count of 0 gives nothing");
  sem[0] = 2;
  Check(mp::futex::TryClaim(count) && sem[0] == 1 && sem[1] == 0, "claim: a count above 0 gives one");
  mp::futex::UndoClaim(count);
  Check(sem[0] == 2 && sem[1] == 1, "claim: undoing gives the count back");
  Check(!mp::futex::TryClaim(Claim{}), "claim: no claim makes nothing");
}

void TestWaiter() {
  std::atomic<int> notified{0};
  mp::Waiter waiter([&] { notified++; });
  std::vector<uint32_t> words(300, 0);
  uint64_t timed = 1, cancelled = 2;
  waiter.Add(timed, &words[0], 0, 20);
  waiter.Add(cancelled, &words[1], 0, -1);
  waiter.Cancel(cancelled);
  std::vector<mp::Waiter::Completion> got;
  Eventually([&] {
    for (auto& c : waiter.Drain()) got.push_back(c);
    return !got.empty();
  });
  Check(got.size() == 1 && got[0].id == timed && got[0].result == mp::futex::kTimedOut,
        "waiter: a timed wait completes as timed out; a cancelled one never completes");

  // More distinct words than one futex_waitv takes: a second thread serves the rest.
  std::vector<uint64_t> ids;
  for (size_t i = 2; i < words.size(); ++i) {
    ids.push_back(100 + i);
    waiter.Add(ids.back(), &words[i], 0, -1);
  }
  usleep(20000);
  for (size_t i = 2; i < words.size(); ++i) {
    __atomic_store_n(&words[i], 1, __ATOMIC_SEQ_CST);
    mp::futex::Wake(&words[i], 1);
  }
  got.clear();
  Eventually([&] {
    for (auto& c : waiter.Drain()) got.push_back(c);
    return got.size() >= ids.size();
  });
  bool all_woken = got.size() == ids.size();
  for (auto& c : got) all_woken = all_woken && c.result != mp::futex::kTimedOut;
  Check(all_woken, "waiter: 298 waits on distinct words all complete when woken");
  Check(notified.load() > 0, "waiter: completions are notified");
}

// The io_uring waiter, where this kernel has IORING_OP_FUTEX_WAIT: a wake from another process
// completes a wait, a deadline times one out, a cancelled one never reports, a changed word
// reports at once, and the ring's fd turns readable exactly when there is something to drain.
void TestUringWaiter() {
  std::unique_ptr<mp::UringWaiter> waiter = mp::UringWaiter::Create();
  if (!waiter) {
    std::printf("skip: io_uring futex waits are not available here; the thread waiter serves\n");
    return;
  }
  auto* words = static_cast<uint32_t*>(mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  words[0] = words[1] = words[2] = words[3] = 0;
  uint64_t cancelled = 0;
  // A cancelled wait may still report (as the binding, callers drop ids they cancelled).
  auto drainUntil = [&](size_t n) {
    std::vector<mp::UringWaiter::Completion> got;
    Eventually([&] {
      struct pollfd p = {waiter->fd(), POLLIN, 0};
      if (poll(&p, 1, 10) == 1) {
        for (auto& c : waiter->Drain()) {
          if (c.id != cancelled) got.push_back(c);
        }
      }
      return got.size() >= n;
    });
    return got;
  };
  struct pollfd idle = {waiter->fd(), POLLIN, 0};
  uint64_t woken = 1, timed = 2, stale = 4;
  cancelled = 3;
  waiter->Add(woken, &words[0], 0, -1);
  waiter->Add(timed, &words[1], 0, 30);
  waiter->Add(cancelled, &words[2], 0, -1);
  waiter->Add(stale, &words[3], 7, -1);  // the word holds 0, not 7
  std::vector<mp::UringWaiter::Completion> got = drainUntil(1);
  Check(got.size() == 1 && got[0].id == stale && got[0].result == mp::futex::kNotEqual,
        "uring: a wait on a word that no longer holds the value reports kNotEqual at once");
  Check(poll(&idle, 1, 0) == 0, "uring: nothing to drain, the fd is not readable");
  waiter->Cancel(cancelled);
  pid_t waker = fork();
  if (waker == 0) {
    usleep(5000);
    __atomic_store_n(&words[0], 1, __ATOMIC_SEQ_CST);
    mp::futex::Wake(&words[0], 1);
    _exit(0);
  }
  got = drainUntil(2);
  int status = 0;
  waitpid(waker, &status, 0);
  bool ok = got.size() == 2;
  for (auto& c : got) {
    ok = ok && ((c.id == woken && c.result == mp::futex::kWoken) || (c.id == timed && c.result == mp::futex::kTimedOut));
  }
  Check(ok, "uring: a wake from another process and a deadline complete their waits");
  munmap(words, 4096);
}

void TestTracker() {
  mp::tracker::Started t = mp::tracker::Start();
  std::string a = UniqueName("tracked_a");
  std::string b = UniqueName("tracked_b");
  std::string c = UniqueName("tracked_c");
  // A creator in the tree that is killed: its name outlives it, as long as the tree lives.
  pid_t creator = fork();
  if (creator == 0) {
    pause();
    _exit(0);
  }
  for (const std::string& name : {a, b, c}) mp::shm::Close(mp::shm::CreateNamed(name, 10));
  std::string lines = "R " + std::to_string(creator) + " " + a + "\nR " + std::to_string(getpid()) + " " + b +
                      "\nR " + std::to_string(getpid()) + " " + c + "\n";
  ssize_t n = write(t.write_fd, lines.data(), lines.size());
  Check(n == static_cast<ssize_t>(lines.size()), "tracker: takes registrations");
  kill(creator, SIGKILL);
  int status;
  waitpid(creator, &status, 0);
  usleep(50000);
  Check(ShmExists(a), "tracker: a SIGKILLed creator's name stays while the tree lives");
  // A name unlinked by its user is forgotten: another segment may take the name later.
  mp::shm::Unlink(c);
  std::string forget = "U " + std::to_string(getpid()) + " " + c + "\n";
  n = write(t.write_fd, forget.data(), forget.size());
  Check(n == static_cast<ssize_t>(forget.size()), "tracker: takes an unlink");
  usleep(50000);
  mp::shm::Close(mp::shm::CreateNamed(c, 10));
  close(t.write_fd);
  Check(Eventually([&] { return !ShmExists(a) && !ShmExists(b); }), "tracker: at EOF every name left is unlinked");
  waitpid(t.pid, &status, 0);
  Check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "tracker: exits at EOF");
  Check(ShmExists(c), "tracker: a name it was told is unlinked is not unlinked again");
  mp::shm::Unlink(c);
}

void TestKeeper() {
  mp::tracker::Started t = mp::tracker::Start();
  int fd = mp::shm::CreateAnonymous(4096);
  struct stat st;
  fstat(fd, &st);
  auto dev = static_cast<uint64_t>(st.st_dev);
  auto ino = static_cast<uint64_t>(st.st_ino);
  // Two deposits of one segment; the sender then lets its own descriptor go.
  mp::tracker::Deposit(t.write_fd, dev, ino, fd);
  mp::tracker::Deposit(t.write_fd, dev, ino, fd);
  close(fd);
  int got = mp::tracker::Withdraw(t.write_fd, dev, ino, true, 2000);
  struct stat st2 = {};
  Check(got >= 0 && fstat(got, &st2) == 0 && st2.st_ino == st.st_ino && st2.st_dev == st.st_dev,
        "keeper: a withdrawn descriptor is the deposited segment, with its sender's fd closed");
  Check(got >= 0 && (fcntl(got, F_GETFD) & FD_CLOEXEC) != 0, "keeper: it arrives close-on-exec");
  if (got >= 0) close(got);
  mp::tracker::Withdraw(t.write_fd, dev, ino, false, 0);  // the second withdrawal, answer not needed
  Check(mp::tracker::Withdraw(t.write_fd, dev, ino, true, 2000) == -1,
        "keeper: after every deposit was withdrawn it holds nothing");
  Check(mp::tracker::Withdraw(t.write_fd, 1, 2, true, 2000) == -1, "keeper: an unknown identity gets no descriptor");
  close(t.write_fd);
  int status;
  waitpid(t.pid, &status, 0);
  Check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "keeper: exits at EOF");
}

std::string ReadAll(int fd) {
  std::string out;
  char buf[256];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  return out;
}

mp::spawn::ExitStatus Join(const mp::spawn::Spawned& s) {
  mp::spawn::WaitExit(s.pidfd, -1);
  mp::spawn::ExitStatus st = mp::spawn::TryReap(s.pid);
  close(s.pidfd);
  return st;
}

void TestSpawn() {
  mp::spawn::Options o;
  o.file = "/bin/sh";
  o.argv = {"sh", "-c", "exit 3"};
  o.env = {"PATH=/usr/bin:/bin"};
  Check(Join(mp::spawn::Spawn(o)).code == 3, "spawn: exit code");

  int pipe_fds[2];
  pipe2(pipe_fds, O_CLOEXEC);
  o.argv = {"sh", "-c", "echo \"$WHO\" >&3; grep Cpus_allowed_list /proc/self/status >&3"};
  o.env = {"WHO=child", "PATH=/usr/bin:/bin"};
  o.pass_fds = {pipe_fds[1]};
  o.cpus = {0};
  mp::spawn::Spawned s = mp::spawn::Spawn(o);
  close(pipe_fds[1]);
  std::string out = ReadAll(pipe_fds[0]);
  close(pipe_fds[0]);
  Join(s);
  Check(out.find("child\n") == 0, "spawn: env and a passed fd arrive (as fd 3)");
  Check(out.find("Cpus_allowed_list:\t0\n") != std::string::npos, "spawn: CPU affinity applies");

  o = mp::spawn::Options{};
  o.file = "/nonexistent/program";
  o.argv = {"program"};
  int err = 0;
  const char* syscall = "";
  try {
    mp::spawn::Spawn(o);
  } catch (const mp::SysFail& f) {
    err = f.err;
    syscall = f.syscall;
  }
  Check(err == ENOENT && std::strcmp(syscall, "execve") == 0, "spawn: an exec failure is ENOENT from execve, at once");
  o.file = "/bin/sh";
  o.argv = {"sh", "-c", "exit 0"};
  o.cwd = "/nonexistent-dir";
  err = ErrnoOf([&] { mp::spawn::Spawn(o); });
  Check(err == ENOENT, "spawn: a bad cwd is ENOENT");

  o.cwd.clear();
  o.argv = {"sh", "-c", "exec sleep 10"};
  std::atomic<int> notified{0};
  {
    mp::spawn::ExitWatcher watcher([&] { notified++; });
    mp::spawn::Spawned sleeper = mp::spawn::Spawn(o);
    watcher.Watch(sleeper.pidfd);
    Check(!mp::spawn::WaitExit(sleeper.pidfd, 20), "spawn: WaitExit times out while the child runs");
    kill(sleeper.pid, SIGKILL);
    std::vector<int> exited;
    Eventually([&] {
      for (int fd : watcher.Drain()) exited.push_back(fd);
      return !exited.empty();
    });
    Check(exited.size() == 1 && exited[0] == sleeper.pidfd && notified.load() > 0,
          "spawn: the exit watcher reports the pidfd of an exited child");
    Check(Join(sleeper).code == -SIGKILL, "spawn: a killed child's code is -SIGNAL");
  }
}

}  // namespace

// The ring's native fast paths (what lib/ring.ts's tryPut/tryGet call): FIFO with payloads that
// wrap around the end, room running out and coming back, closed, a held mutex, a frame still
// being written, numbers, and the counters ring.ts keeps.
// The spins before a sleep: each ends on its condition, or gives up after its time.
void TestRingSpins(mp::ring::View& view, uint32_t* words, const mp::ring::Self& self, std::vector<uint8_t>& msg) {
  namespace r = mp::ring;
  const uint32_t mask = view.capacity() - 1;
  r::View::Claimed c;
  while (view.TryClaim(self, &c) == r::kOk) view.Finish(c.pos);
  Check(!view.SpinUntilReady(200000), "ring: SpinUntilReady on an empty ring gives up: false");
  Check(!view.SpinWhileBusy(200000), "ring: SpinWhileBusy on an empty ring: nothing ready, false");

  // A put from another thread while the consumer spins: the spin sees it (a whole second allowed).
  std::atomic<bool> spinning{false};
  std::thread producer([&] {
    while (!spinning.load()) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    view.TryPut(self, msg.data(), 300, r::kKindBytes, false);
  });
  spinning.store(true);
  bool ready = view.SpinUntilReady(1000000000);
  producer.join();
  Check(ready && view.TryClaim(self, &c) == r::kOk && c.length == 300, "ring: SpinUntilReady returns true once a put lands");
  Check(view.LengthAt(c.pos) == 300, "ring: LengthAt reads the frame's payload length");
  view.Finish(c.pos);

  // A frame still being written: SpinWhileBusy waits for its publish.
  uint32_t at = words[r::kReserve];
  Check(view.TryPut(self, msg.data(), 300, r::kKindBytes, false) == r::kOk, "ring: a put to be marked WRITING");
  auto* state = reinterpret_cast<uint32_t*>(reinterpret_cast<uint8_t*>(words) + r::kHeaderBytes + (at & mask)) + r::kState;
  uint32_t published = *state;
  __atomic_store_n(state, (published & ~r::kStateMask) | r::kWriting, __ATOMIC_SEQ_CST);
  Check(!view.SpinUntilReady(200000) && !view.SpinWhileBusy(200000), "ring: a frame being written is not ready; both spins give up");
  std::thread publisher([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    __atomic_store_n(state, published, __ATOMIC_SEQ_CST);
  });
  bool published_seen = view.SpinWhileBusy(1000000000);
  publisher.join();
  Check(published_seen, "ring: SpinWhileBusy returns true once the frame is published");
  Check(view.TryClaim(self, &c) == r::kOk, "ring: and it is claimed");
  view.Finish(c.pos);

  // SpinWhile: a header word that does not move gives up; one bumped by another thread ends it.
  uint32_t seen = words[r::kNotFull];
  Check(!view.SpinWhile(r::kNotFull, seen, 200000), "ring: SpinWhile on a word that stays gives up: false");
  std::thread bumper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    __atomic_fetch_add(&words[r::kNotFull], 1, __ATOMIC_SEQ_CST);
  });
  bool moved = view.SpinWhile(r::kNotFull, seen, 1000000000);
  bumper.join();
  Check(moved, "ring: SpinWhile returns true once the word moves");
}

void TestRing() {
  namespace r = mp::ring;
  const size_t capacity = 4096;
  std::vector<uint64_t> storage((r::kHeaderBytes + capacity) / 8, 0);
  r::View view(storage.data(), r::kHeaderBytes + capacity);
  auto* words = reinterpret_cast<uint32_t*>(storage.data());
  r::Self self{static_cast<uint32_t>(getpid()) & 0x3fffff, 77, static_cast<uint32_t>(getpid())};
  Check(view.valid() && view.capacity() == capacity, "ring: a 4 KiB data area is a valid view");

  // 900-byte messages, 928-byte frames: the fifth one's payload wraps around the end of the data
  // area (1000-byte ones made 1024-byte frames, which tile the 4 KiB exactly and never wrap).
  std::vector<uint8_t> msg(900), got(900);
  bool fifo = true;
  int sent = 0, received = 0;
  int whole = 0, wrapped = 0;
  for (int round = 0; round < 6; ++round) {
    for (;;) {
      memset(msg.data(), sent & 0xff, msg.size());
      r::Status st = view.TryPut(self, msg.data(), static_cast<uint32_t>(msg.size()), r::kKindBytes, false);
      if (st == r::kNoRoom) break;
      fifo = fifo && st == r::kOk;
      ++sent;
    }
    r::View::Claimed c;
    for (int k = 0; k < 2; ++k) {
      fifo = fifo && view.TryClaim(self, &c) == r::kOk && c.length == 900 && c.kind == r::kKindBytes;
      view.CopyOut(c.pos, got.data(), c.length);
      // In place exactly when the payload does not wrap: then it is the bytes CopyOut gave.
      const uint8_t* in_place = view.PayloadIfWhole(c.pos, c.length);
      if (in_place == nullptr) {
        ++wrapped;
      } else {
        ++whole;
        fifo = fifo && memcmp(in_place, got.data(), c.length) == 0;
      }
      view.Finish(c.pos);
      fifo = fifo && got[0] == (received & 0xff) && got[899] == (received & 0xff);
      ++received;
    }
  }
  Check(fifo && sent > 8, "ring: messages come out in order, whole, across the wrap, as room comes back");
  Check(wrapped > 0 && whole > wrapped, "ring: PayloadIfWhole gives the payload in place, and null for one that wraps");
  Check(words[r::kCount] == static_cast<uint32_t>(sent - received) && words[r::kLock] == 0 && words[r::kLockStart] == 0,
        "ring: COUNT follows puts and takes; the mutex is free after each call");
  uint32_t bumps = words[r::kNotEmpty];
  Check(bumps == static_cast<uint32_t>(sent), "ring: every put bumps NOT_EMPTY");

  r::View::Claimed c;
  while (view.TryClaim(self, &c) == r::kOk) view.Finish(c.pos);
  Check(view.TryClaim(self, &c) == r::kEmpty && words[r::kHead] == words[r::kReserve], "ring: drained, it is empty and HEAD caught up");

  double pi = 3.25;
  // A number frame: its payload is the double's 8 bytes, as ring.ts writes them.
  Check(view.TryPut(self, reinterpret_cast<uint8_t*>(&pi), 8, r::kKindNumber, true) == r::kOk &&
            view.TryClaim(self, &c) == r::kOk && c.kind == r::kKindNumber && view.NumberAt(c.pos) == 3.25,
        "ring: an 8-byte number payload reads back");
  view.Finish(c.pos);
  Check(words[r::kUnfinished] == 1, "ring: a counted put adds to UNFINISHED");

  words[r::kLock] = 12345;
  Check(view.TryPut(self, msg.data(), 10, r::kKindBytes, false) == r::kLocked && view.TryClaim(self, &c) == r::kEmpty,
        "ring: with the mutex held a put says so; an empty ring says empty before looking at the mutex");
  words[r::kLock] = 0;

  // A frame left WRITING (a producer mid-copy) blocks the claim: kBusy, not a half-written read.
  uint32_t at = words[r::kReserve];
  Check(view.TryPut(self, msg.data(), 500, r::kKindBytes, false) == r::kOk, "ring: a 500-byte put");
  uint32_t* state = reinterpret_cast<uint32_t*>(reinterpret_cast<uint8_t*>(storage.data()) + r::kHeaderBytes + (at & (capacity - 1))) + r::kState;
  uint32_t ready = *state;
  *state = (ready & ~r::kStateMask) | r::kWriting;
  Check(view.TryClaim(self, &c) == r::kBusy, "ring: a frame still being written is not claimed");
  *state = ready;
  Check(view.TryClaim(self, &c) == r::kOk && c.length == 500, "ring: once published it is");
  view.Finish(c.pos);

  words[r::kClosed] = 1;
  Check(view.TryPut(self, msg.data(), 10, r::kKindBytes, false) == r::kShut && words[r::kLock] == 0,
        "ring: a closed ring refuses puts and leaves the mutex free");
  words[r::kClosed] = 0;
  words[r::kMaxSize] = 1;
  Check(view.TryPut(self, msg.data(), 10, r::kKindBytes, false) == r::kOk &&
            view.TryPut(self, msg.data(), 10, r::kKindBytes, false) == r::kNoRoom,
        "ring: maxsize counts messages, not bytes");
  r::View bad(storage.data(), r::kHeaderBytes + 100);
  Check(!bad.valid(), "ring: a data area that is not a power of two is refused");

  // Only the frame this process claimed may be taken.
  words[r::kMaxSize] = 0;
  uint32_t next = words[r::kReserve];
  Check(view.TryPut(self, msg.data(), 10, r::kKindBytes, false) == r::kOk && !view.ClaimedBy(next & (capacity - 1), self.pid) &&
            view.TryClaim(self, &c) == r::kOk && view.ClaimedBy(c.pos, self.pid) && !view.ClaimedBy(c.pos, self.pid + 1),
        "ring: ClaimedBy knows a ready frame from one this process claimed");
  view.Finish(c.pos);

  // A claim for some kinds only (a waiting get's, made natively): a frame of another kind is left
  // where it is, for a claim that takes it, and the mutex is free again.
  const uint32_t kSerialized = 0;
  while (view.TryClaim(self, &c) == r::kOk) view.Finish(c.pos);
  Check(view.TryPut(self, msg.data(), 10, kSerialized, false) == r::kOk &&
            view.TryClaim(self, &c, 1u << r::kKindNumber | 1u << r::kKindBytes) == r::kOther && words[r::kLock] == 0 &&
            view.TryClaim(self, &c) == r::kOk && c.kind == kSerialized,
        "ring: a claim for some kinds leaves a frame of another kind in place");
  // A claimed frame given up stays claimed, owned by nobody (pid 0): ring.ts takes it over.
  view.Abandon(c.pos);
  const uint32_t* abandoned = reinterpret_cast<uint32_t*>(reinterpret_cast<uint8_t*>(storage.data()) + r::kHeaderBytes + c.pos);
  Check(abandoned[r::kPid] == 0 && abandoned[r::kStart] == 0 && (abandoned[r::kState] & r::kStateMask) == r::kReading &&
            !view.ClaimedBy(c.pos, self.pid) && view.TryClaim(self, &c) == r::kEmpty,
        "ring: an abandoned frame is claimed by nobody, and not handed out again as ready");
  view.Finish(c.pos);

  // A scribbled header (another process of the user wrote nonsense) must not take the native
  // paths outside the segment: an exact-size heap block, so that ASan sees any overrun.
  auto* exact = new uint8_t[r::kHeaderBytes + capacity]();
  r::View scribbled(exact, r::kHeaderBytes + capacity);
  auto* sw = reinterpret_cast<uint32_t*>(exact);
  sw[r::kReserve] = sw[r::kClaim] = sw[r::kHead] = capacity - 4;  // not 16-aligned, at the end
  Check(scribbled.TryPut(self, msg.data(), 10, r::kKindBytes, false) == r::kOk, "ring: a misaligned RESERVE stays inside the data area");
  sw[r::kClaim] = capacity - 8;
  sw[r::kReserve] = capacity + 1000;
  r::View::Claimed sc;
  r::Status st = scribbled.TryClaim(self, &sc);
  Check(st == r::kOk || st == r::kBusy || st == r::kEmpty, "ring: a misaligned CLAIM stays inside the data area");
  sw[r::kHead] = 64;
  sw[r::kReserve] = 0;  // more in use than the ring holds
  Check(scribbled.TryPut(self, msg.data(), 10, r::kKindBytes, false) == r::kNoRoom, "ring: more in use than it holds means no room");
  delete[] exact;

  TestRingSpins(view, words, self, msg);
}

int main() {
  TestShm();
  TestFutex();
  TestClaims();
  TestWaiter();
  TestUringWaiter();
  TestTracker();
  TestKeeper();
  TestSpawn();
  TestRing();
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
