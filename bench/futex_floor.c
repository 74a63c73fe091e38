// The floor for a wake-up across processes: one FUTEX_WAKE from a process that napped 1 ms, to the
// moment the waiting process runs again, measured the way bench/nmp_runner.js measures our async
// wake-up (W6.lock.async_wakeup): `rounds` counted after `warmup` that are not. Prints the median
// and p95 in µs as two JSON lines, or with `raw` every counted latency (nmp_runner pools them).
//   cc -O2 -o futex_floor bench/futex_floor.c && ./futex_floor 300 [warmup] [raw]
#define _GNU_SOURCE
#include <linux/futex.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct shared {
  _Atomic uint32_t word;      // the futex: 0 while the waiter should sleep
  _Atomic uint32_t waiting;   // round the waiter is about to sleep in
  _Atomic int64_t stamp;      // when the waker woke it (ns)
  double latency_us[];
};

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static long futex(_Atomic uint32_t* addr, int op, uint32_t val) {
  return syscall(SYS_futex, addr, op, val, NULL, NULL, 0);
}

static int compare(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char** argv) {
  int counted = argc > 1 ? atoi(argv[1]) : 300;
  int warmup = argc > 2 ? atoi(argv[2]) : 0;
  int raw = argc > 3 && strcmp(argv[3], "raw") == 0;
  if (counted <= 0 || warmup < 0) return 2;
  int n = warmup + counted;
  struct shared* s = mmap(NULL, sizeof *s + n * sizeof(double), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (s == MAP_FAILED) return 1;
  pid_t child = fork();
  if (child == 0) {
    // The waiter: sleeps on the word, and on waking records how long the wake-up took.
    for (int i = 0; i < n; i++) {
      atomic_store(&s->word, 0);
      atomic_store(&s->waiting, (uint32_t)(i + 1));
      while (atomic_load(&s->word) == 0) futex(&s->word, FUTEX_WAIT, 0);
      s->latency_us[i] = (double)(now_ns() - atomic_load(&s->stamp)) / 1e3;
    }
    _exit(0);
  }
  struct timespec nap = {0, 1000000};
  for (int i = 0; i < n; i++) {
    while (atomic_load(&s->waiting) != (uint32_t)(i + 1)) sched_yield();
    nanosleep(&nap, NULL);  // as nmp_runner: let the wait reach the kernel
    atomic_store(&s->stamp, now_ns());
    atomic_store(&s->word, 1);
    futex(&s->word, FUTEX_WAKE, 1);
  }
  waitpid(child, NULL, 0);
  double* lat = s->latency_us + warmup;
  if (raw) {
    for (int i = 0; i < counted; i++) printf("%.3f\n", lat[i]);
    return 0;
  }
  qsort(lat, counted, sizeof(double), compare);
  printf("{\"system\":\"node-multiprocessing\",\"workload\":\"W6.futex_floor.median\",\"value\":%.3f,\"unit\":\"us\",\"n\":%d}\n", lat[counted / 2], counted);
  printf("{\"system\":\"node-multiprocessing\",\"workload\":\"W6.futex_floor.p95\",\"value\":%.3f,\"unit\":\"us\",\"n\":%d}\n", lat[(int)(counted * 0.95)], counted);
  return 0;
}
