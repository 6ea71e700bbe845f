/* Uses libplex86_accel.so from C as Bochs does: the header compiles (as C and as C++), the
 * symbols link, the executor is found next to the library, a declined entry and every
 * notification work, shutdown writes the statistics, and Bochs's RAM fd stays open.
 * Usage: smoke STATS.json; exit status 0 on success. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "plex86_accel.h"

#include <cpuid.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void log_cb(void *opaque, int level, const char *message) {
  (void)opaque;
  printf("log %d: %s\n", level, message);
}

static void cpuid_cb(void *opaque, uint32_t leaf, uint32_t subleaf, uint32_t out[4]) {
  (void)opaque;
  __cpuid_count(leaf, subleaf, out[0], out[1], out[2], out[3]);
}

#define CHECK(cond, code)                                       \
  do {                                                          \
    if (!(cond)) {                                              \
      printf("check failed: %s (exit %d)\n", #cond, code);      \
      return code;                                              \
    }                                                           \
  } while (0)

int main(int argc, char **argv) {
  const uint64_t ram_size = 16u << 20;
  plex86_accel_config c;
  plex86_accel_cpu_state s;
  plex86_accel_exit e;
  plex86_accel_ram_range r;
  plex86_accel *a;
  char err[256];
  int fd;

  CHECK(argc == 2, 1);
  CHECK(plex86_accel_abi_version() == PLEX86_ACCEL_ABI_VERSION, 2);
  fd = memfd_create("smoke-ram", MFD_CLOEXEC);
  CHECK(fd >= 0 && ftruncate(fd, (off_t)ram_size) == 0, 3);

  memset(&c, 0, sizeof c);
  c.abi_version = PLEX86_ACCEL_ABI_VERSION;
  c.struct_size = sizeof c;
  c.ram_fd = fd;
  c.n_ram_ranges = 1;
  c.ram_size = ram_size;
  c.ram_ranges[0].start = 0;
  c.ram_ranges[0].end = ram_size;
  c.ips = 60000000;
  c.executor_path = NULL; /* next to the library */
  c.stats_path = argv[1];
  c.min_user_insns = 100;
  c.log = log_cb;
  c.guest_cpuid = cpuid_cb;
  a = plex86_accel_init(&c, err, sizeof err);
  if (!a) {
    printf("init failed: %s\n", err);
    return 4;
  }

  memset(&s, 0, sizeof s);
  s.mode = PLEX86_ACCEL_MODE_PROTECTED;
  memset(&e, 0xff, sizeof e);
  plex86_accel_run(a, &s, 1000000, 5, &e);
  CHECK(e.status == PLEX86_ACCEL_DECLINED, 5);
  CHECK(e.decline_reason == PLEX86_ACCEL_DECLINE_SHORT_BURST && e.retry_after_ticks == 95, 6);
  plex86_accel_run(a, &s, 1000000, 500, &e); /* all-zero state: unsupported */
  CHECK(e.status == PLEX86_ACCEL_DECLINED && e.decline_reason == PLEX86_ACCEL_DECLINE_UNSUPPORTED_STATE, 7);
  /* The default backend takes long mode (64-bit code on the stub executor); an all-zero
     state is no 64-bit code and is refused like any other unsupported state. */
  s.mode = PLEX86_ACCEL_MODE_LONG_64;
  plex86_accel_run(a, &s, 1000000, 500, &e);
  CHECK(e.status == PLEX86_ACCEL_DECLINED && e.decline_reason == PLEX86_ACCEL_DECLINE_UNSUPPORTED_STATE, 9);

  plex86_accel_note_declined(a, PLEX86_ACCEL_DECLINE_EVENT_PENDING);
  plex86_accel_flush_tlb(a, 1);
  plex86_accel_flush_tlb(a, 0);
  plex86_accel_invlpg(a, 0x1000);
  plex86_accel_invlpg(a, 0x7fff00001000ull);
  plex86_accel_protect_code_page(a, 0x2000);
  r.start = 0;
  r.end = 0xa0000;
  plex86_accel_memory_map_changed(a, &r, 1);
  plex86_accel_shutdown(a);
  plex86_accel_shutdown(NULL);

  CHECK(fcntl(fd, F_GETFD) != -1, 8); /* Bochs's fd is still Bochs's */
  close(fd);
  printf("smoke ok\n");
  return 0;
}
