/*
 * fake_accel.c: a stand-in for libplex86_accel.so that implements the ABI of
 * bochs-ffi/include/plex86_accel.h without running anything natively, to test
 * the Bochs side (bochs-patches/0003..) on its own: option and loading, the
 * CPU-loop hook, state transfer, time accounting and the notifications.
 *
 * It checks what it is given (the state at every run call must satisfy the
 * header's eligibility rules, RAM ranges must be sane, code pages aligned,
 * after a RAN Bochs must emulate exactly one instruction before the next call,
 * which user_insns shows) and counts everything, e.g. the calls that come right
 * after entering CPL 3. At plex86_accel_shutdown() it logs one summary line
 * and, with FAKE_ACCEL_REPORT=path, writes the counters as "key value" lines
 * for tests/bochs-hook/run to check.
 *
 * FAKE_ACCEL_CPUID_IS_HOSTS (environment, default 1) is what
 * plex86_accel_native_cpuid_is_hosts() answers: 1 as on a host without CPUID
 * faulting (Bochs answers CPL 3 CPUID with the host's values), 0 as with it
 * (every privilege level sees the configured model).
 *
 * FAKE_ACCEL_MODE (environment):
 *   decline  every run call declines (SHORT_BURST), retry_after_ticks =
 *            FAKE_ACCEL_RETRY (default 0). Nothing changes: the guest must
 *            behave exactly as in plain Bochs.
 *   mixed    alternately "runs" and declines with retry_after_ticks =
 *            FAKE_ACCEL_RETRY (default 1000). A run returns RAN for 0 ticks
 *            with the state unchanged, seg_reload = FAKE_ACCEL_SEG_RELOAD
 *            (default 0x3f: every segment) and, on every other run, as written
 *            code pages, the page holding EIP when Bochs had asked to protect
 *            it. Bochs writes the whole state back, reloads the segments from
 *            the guest's GDT, drops its decoded code of that page and emulates
 *            one instruction: the guest must still behave exactly as in plain
 *            Bochs. With FAKE_ACCEL_TICKS=N a run charges min(N, budget_ticks)
 *            ticks, as if native code had run that long (the guest's clocks and
 *            timers advance; results must not change). In long mode (ABI 6)
 *            the same, through the 4-level tables, with FS and GS left out of
 *            seg_reload (a null selector loaded in 64-bit mode would take the
 *            FS/GS base with it): Bochs takes back the 16 64-bit registers,
 *            RIP, ZMM0-31, and the guest must still behave as in plain Bochs.
 *   stop     the FAKE_ACCEL_AT-th call (default 1000) declines with a retry
 *            beyond the run; any later call is counted as a violation.
 *   fail     the FAKE_ACCEL_AT-th call fails with lost_native_progress=0:
 *            Bochs must switch acceleration off (later calls are violations).
 *   fail-lost  the FAKE_ACCEL_AT-th call fails with lost_native_progress=1:
 *            Bochs must stop.
 *   tf       declines (retry_after_ticks FAKE_ACCEL_RETRY, default 1000), except
 *            when EAX holds one of tests/bochs-hook/src/tf-hook.c's magic values:
 *            then it "runs" as if native code had set TF (POPF) and returns the
 *            state with TF set and EDX = EIP: FAKE_TF_STEP with exit reason
 *            SINGLE_STEP (Bochs must deliver the #DB before emulating anything),
 *            FAKE_TF_ARM with BUDGET_EXPIRED (the instruction at EIP must be
 *            single-stepped). tf-hook checks where its SIGTRAP comes. And with
 *            FAKE_ESCAPE (ABI 8) it returns exit reason CONTAINED_ESCAPE, TF clear,
 *            EDX = EIP and ECX = FAKE_ESCAPE_ECX: Bochs must write the state back
 *            and raise #GP(0) there; tf-hook checks its SIGSEGV.
 * FAKE_ACCEL_INIT_FAIL=1: plex86_accel_init() fails with a message.
 *
 * Every run call's state is checked against its mode (ABI 6): outside long
 * mode the upper halves of the registers, R8-R15 and ZMM8-31 must be zero (the
 * 32-bit export zero-extends; compatibility mode exports them, ABI 9); in 64-bit mode CS must be L=1 D=0, EFER.LMA
 * set and RIP canonical. The report counts 64-bit and compatibility-mode calls
 * and what shows that the 64-bit export carries 64 bits (RSP, RIP and the FS
 * base above 4 GiB, GPRs with high bits set) and INVLPGs above 4 GiB.
 *
 * Build variants (tests/bochs-hook/run): -DFAKE_ACCEL_ABI_VERSION=1 gives a
 * library of the wrong ABI version, -DFAKE_ACCEL_OMIT_INVLPG one that lacks a
 * symbol.
 */
#include "plex86_accel.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#ifndef FAKE_ACCEL_ABI_VERSION
#define FAKE_ACCEL_ABI_VERSION PLEX86_ACCEL_ABI_VERSION
#endif

#define EXPORT __attribute__((visibility("default")))

enum mode { MODE_DECLINE, MODE_MIXED, MODE_STOP, MODE_FAIL, MODE_FAIL_LOST, MODE_TF };

/* tests/bochs-hook/src/tf-hook.c's EAX values */
#define FAKE_TF_STEP 0x51e9051eu
#define FAKE_TF_ARM 0x7fa4a2bdu
#define FAKE_ESCAPE 0xe5ca9e00u
#define FAKE_ESCAPE_ECX 0x0c0ffee5u

struct plex86_accel {
  plex86_accel_config config;
  enum mode mode;
  uint64_t retry;
  uint64_t at;
  uint64_t ticks;
  uint32_t seg_reload;
  const char *report;
  const uint8_t *ram; /* guest RAM, read-only */
  uint64_t ram_size;
  uint8_t *protected_pages; /* bitmap over the 4 GiB physical space */
  uint64_t code_pages[1];

  /* counters */
  uint64_t run_calls, ran, declined, run_after_stop, budget_zero, budget_max;
  uint64_t user_insns_max;
  uint64_t noted[PLEX86_ACCEL_DECLINE_REASONS], noted_bad;
  uint64_t flush_global, flush_nonglobal, invlpg, protect, protect_distinct, protect_unaligned;
  uint64_t reprotected, code_pages_reported, memmap, violations, ticks_charged;
  uint64_t tf_step, tf_arm; /* tf mode: runs returned with TF set */
  uint64_t escapes;         /* tf mode: runs returned as contained escapes */
  /* long mode (ABI 6) */
  uint64_t long64_calls, compat_calls, long64_rsp_high, long64_rip_high, long64_fs_base_high;
  uint64_t long64_r8_r15_nonzero, invlpg_high, ran_long64;
  uint64_t entry_calls;    /* calls with user_insns <= 1: right after entering CPL 3 */
  uint64_t after_ran_calls; /* calls right after a RAN, in the same stint */
  int stopped; /* stop/fail modes: no run call may come any more */
  /* after a RAN: the next call must come after exactly one emulated instruction */
  int last_ran;
  uint64_t last_ran_user_insns, last_ran_ticks;
};

static void logf_(struct plex86_accel *a, int level, const char *fmt, ...)
{
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  if (a->config.log) a->config.log(a->config.log_opaque, level, buf);
}

static void violation(struct plex86_accel *a, const char *fmt, ...)
{
  char buf[400];
  va_list ap;
  a->violations++;
  if (a->violations > 10) return;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  logf_(a, PLEX86_ACCEL_LOG_ERROR, "fake-accel: VIOLATION: %s", buf);
}

static uint64_t env_u64(const char *name, uint64_t dflt)
{
  const char *v = getenv(name);
  return (v && *v) ? strtoull(v, NULL, 0) : dflt;
}

static void check_ranges(struct plex86_accel *a, const plex86_accel_ram_range *r, uint32_t n,
                         const char *what)
{
  if (n == 0 || n > PLEX86_ACCEL_MAX_RAM_RANGES) {
    violation(a, "%s: %u RAM ranges", what, n);
    return;
  }
  if (r[0].start != 0 || r[0].end != 0xa0000)
    violation(a, "%s: first range [0x%llx, 0x%llx) is not [0, 0xa0000)", what,
              (unsigned long long) r[0].start, (unsigned long long) r[0].end);
  for (uint32_t i = 0; i < n; i++) {
    if ((r[i].start | r[i].end) & 0xfff || r[i].start >= r[i].end || r[i].end > a->ram_size ||
        (i > 0 && r[i].start < r[i - 1].end) || (r[i].start < 0x100000 && r[i].end > 0xa0000))
      violation(a, "%s: bad range %u [0x%llx, 0x%llx)", what, i,
                (unsigned long long) r[i].start, (unsigned long long) r[i].end);
  }
}

EXPORT uint32_t plex86_accel_abi_version(void)
{
  return FAKE_ACCEL_ABI_VERSION;
}

EXPORT plex86_accel *plex86_accel_init(const plex86_accel_config *config, char *error,
                                       size_t error_len)
{
  if (env_u64("FAKE_ACCEL_INIT_FAIL", 0)) {
    snprintf(error, error_len, "fake-accel: init fails as asked (FAKE_ACCEL_INIT_FAIL)");
    return NULL;
  }
  if (config->abi_version != PLEX86_ACCEL_ABI_VERSION ||
      config->struct_size != sizeof(plex86_accel_config)) {
    snprintf(error, error_len, "fake-accel: config abi_version %u struct_size %u, expected %u %zu",
             config->abi_version, config->struct_size, PLEX86_ACCEL_ABI_VERSION,
             sizeof(plex86_accel_config));
    return NULL;
  }
  struct stat st;
  if (fstat(config->ram_fd, &st) != 0 || (uint64_t) st.st_size < config->ram_size ||
      config->ram_size == 0) {
    snprintf(error, error_len, "fake-accel: ram_fd %d is not a file of at least %llu bytes",
             config->ram_fd, (unsigned long long) config->ram_size);
    return NULL;
  }
  struct plex86_accel *a = calloc(1, sizeof(*a));
  a->config = *config;
  a->ram_size = config->ram_size;
  a->ram = mmap(NULL, config->ram_size, PROT_READ, MAP_SHARED, config->ram_fd, 0);
  if (a->ram == MAP_FAILED) {
    snprintf(error, error_len, "fake-accel: mmap of ram_fd failed");
    free(a);
    return NULL;
  }
  a->protected_pages = calloc(1, 1u << 17);

  const char *mode = getenv("FAKE_ACCEL_MODE");
  if (!mode || !*mode || !strcmp(mode, "decline")) a->mode = MODE_DECLINE;
  else if (!strcmp(mode, "mixed")) a->mode = MODE_MIXED;
  else if (!strcmp(mode, "stop")) a->mode = MODE_STOP;
  else if (!strcmp(mode, "fail")) a->mode = MODE_FAIL;
  else if (!strcmp(mode, "fail-lost")) a->mode = MODE_FAIL_LOST;
  else if (!strcmp(mode, "tf")) a->mode = MODE_TF;
  else {
    snprintf(error, error_len, "fake-accel: unknown FAKE_ACCEL_MODE '%s'", mode);
    free(a);
    return NULL;
  }
  a->retry = env_u64("FAKE_ACCEL_RETRY", a->mode == MODE_MIXED || a->mode == MODE_TF ? 1000 : 0);
  a->at = env_u64("FAKE_ACCEL_AT", 1000);
  a->ticks = env_u64("FAKE_ACCEL_TICKS", 0);
  a->seg_reload = (uint32_t) env_u64("FAKE_ACCEL_SEG_RELOAD", 0x3f);
  a->report = getenv("FAKE_ACCEL_REPORT");

  check_ranges(a, config->ram_ranges, config->n_ram_ranges, "init");
  if (config->ips == 0) violation(a, "init: ips is 0");

  uint32_t v[4] = {0, 0, 0, 0};
  char vendor[13];
  if (config->guest_cpuid) config->guest_cpuid(config->cpuid_opaque, 0, 0, v);
  memcpy(vendor, &v[1], 4);
  memcpy(vendor + 4, &v[3], 4);
  memcpy(vendor + 8, &v[2], 4);
  vendor[12] = 0;
  if (v[0] == 0) violation(a, "init: guest CPUID leaf 0 gives max leaf 0");

  logf_(a, PLEX86_ACCEL_LOG_INFO,
        "fake-accel: init mode=%s ram=%llu MB, %u range(s), ips=%llu, min_user_insns=%u, "
        "flags=0x%x, stub_base=0x%llx, executor=%s, stats=%s, guest CPUID vendor '%s' max leaf 0x%x",
        mode ? mode : "decline", (unsigned long long) (config->ram_size >> 20),
        config->n_ram_ranges, (unsigned long long) config->ips, config->min_user_insns,
        config->flags, (unsigned long long) config->stub_base,
        config->executor_path ? config->executor_path : "(default)",
        config->stats_path ? config->stats_path : "(none)", vendor, v[0]);
  return a;
}

/* ---- run -------------------------------------------------------------------------------- */

static int ram_read(struct plex86_accel *a, uint64_t pa, void *out, unsigned len)
{
  if (pa + len > a->ram_size) return 0;
  memcpy(out, a->ram + pa, len);
  return 1;
}

/* Guest page walk (legacy 2-level with PSE, or PAE): linear -> physical, 0 if unmapped. */
static int translate(struct plex86_accel *a, const plex86_accel_cpu_state *s, uint32_t lin,
                     uint64_t *pa)
{
  if (s->cr4 & (1u << 5)) { /* PAE */
    uint64_t pdpte, pde, pte;
    if (!ram_read(a, (s->cr3 & ~0x1fu) + ((lin >> 30) & 3) * 8, &pdpte, 8) || !(pdpte & 1))
      return 0;
    if (!ram_read(a, (pdpte & 0xffffffffff000ull) + ((lin >> 21) & 0x1ff) * 8, &pde, 8) ||
        !(pde & 1))
      return 0;
    if (pde & 0x80) {
      *pa = (pde & 0xfffffffe00000ull) | (lin & 0x1fffff);
      return 1;
    }
    if (!ram_read(a, (pde & 0xffffffffff000ull) + ((lin >> 12) & 0x1ff) * 8, &pte, 8) ||
        !(pte & 1))
      return 0;
    *pa = (pte & 0xffffffffff000ull) | (lin & 0xfff);
    return 1;
  }
  uint32_t pde, pte;
  if (!ram_read(a, (s->cr3 & ~0xfffu) + (lin >> 22) * 4, &pde, 4) || !(pde & 1)) return 0;
  if ((pde & 0x80) && (s->cr4 & (1u << 4))) {
    *pa = (pde & 0xffc00000u) | (lin & 0x3fffff);
    return 1;
  }
  if (!ram_read(a, (pde & ~0xfffu) + ((lin >> 12) & 0x3ff) * 4, &pte, 4) || !(pte & 1)) return 0;
  *pa = (pte & ~0xfffu) | (lin & 0xfff);
  return 1;
}

/* 4-level walk (long mode): linear -> physical, 0 if unmapped or not canonical. */
static int translate64(struct plex86_accel *a, const plex86_accel_cpu_state *s, uint64_t lin,
                       uint64_t *pa)
{
  const uint64_t addr = 0x000ffffffffff000ull;
  uint64_t e, table = s->cr3 & addr;
  if ((uint64_t) (((int64_t) lin << 16) >> 16) != lin) return 0;
  for (int level = 3; level >= 0; level--) {
    unsigned shift = 12 + 9 * level;
    if (!ram_read(a, table + ((lin >> shift) & 0x1ff) * 8, &e, 8) || !(e & 1)) return 0;
    if (level == 0 || ((e & 0x80) && level <= 2)) {
      uint64_t size = 1ull << shift;
      *pa = (e & addr & ~(size - 1)) | (lin & (size - 1));
      return 1;
    }
    table = e & addr;
  }
  return 0;
}

static int page_protected(struct plex86_accel *a, uint64_t pa)
{
  uint64_t page = pa >> 12;
  return page < (1u << 20) && (a->protected_pages[page >> 3] & (1u << (page & 7)));
}

/* The header's eligibility rules (protocol step 3), as far as the state shows them. */
static void check_state(struct plex86_accel *a, const plex86_accel_cpu_state *s, uint64_t budget)
{
  const plex86_accel_segment *cs = &s->seg[PLEX86_ACCEL_SEG_CS], *ss = &s->seg[PLEX86_ACCEL_SEG_SS];
  int long64 = s->mode == PLEX86_ACCEL_MODE_LONG_64;
  int lma = (s->efer >> 10) & 1;
  if (s->mode != PLEX86_ACCEL_MODE_PROTECTED && s->mode != PLEX86_ACCEL_MODE_LONG_COMPAT && !long64)
    violation(a, "mode %u offered", s->mode);
  if (lma != (s->mode == PLEX86_ACCEL_MODE_LONG_COMPAT || long64))
    violation(a, "mode %u with EFER %llx", s->mode, (unsigned long long) s->efer);
  if (s->reserved) violation(a, "reserved field %u", s->reserved);
  if ((cs->selector & 3) != 3 || !cs->valid || (cs->attr & 0xf8) != 0xf8 ||
      (long64 ? (cs->attr & 0x6000) != 0x2000 : (cs->attr & 0x6000) != 0x4000))
    violation(a, "CS %04x attr %04x valid %u is not a present %s DPL 3 code segment (mode %u)",
              cs->selector, cs->attr, cs->valid, long64 ? "64-bit" : "32-bit", s->mode);
  if (long64) {
    a->long64_calls++;
    if ((uint64_t) (((int64_t) s->rip << 16) >> 16) != s->rip)
      violation(a, "RIP %llx not canonical", (unsigned long long) s->rip);
    if (s->gpr[4] >> 32) a->long64_rsp_high++;
    if (s->rip >> 32) a->long64_rip_high++;
    if (s->seg[PLEX86_ACCEL_SEG_FS].base >> 32) a->long64_fs_base_high++;
    for (int n = 8; n < 16; n++)
      if (s->gpr[n]) {
        a->long64_r8_r15_nonzero++;
        break;
      }
  } else {
    if (s->mode == PLEX86_ACCEL_MODE_LONG_COMPAT) a->compat_calls++;
    /* the 32-bit export zero-extends and has only EAX..EDI and ZMM0-7 */
    for (int n = 0; n < 16; n++)
      if (s->gpr[n] >> (n < 8 ? 32 : 0) && !lma)
        violation(a, "32-bit mode: gpr[%d] = %llx", n, (unsigned long long) s->gpr[n]);
    if (s->rip >> 32) violation(a, "RIP %llx outside 64-bit mode", (unsigned long long) s->rip);
    /* compatibility mode exports every vector register (ABI 9: its code may switch to
       64-bit mode natively) */
    for (int n = 8; n < 32 && !lma; n++)
      for (int b = 0; b < 64; b++)
        if (s->fpu.zmm[n][b]) {
          violation(a, "zmm%d exported outside long mode", n);
          n = 32;
          break;
        }
  }
  if ((ss->selector & 3) != 3 || !ss->valid || (ss->attr & 0xfa) != 0xf2)
    violation(a, "SS %04x attr %04x is not a present writable DPL 3 data segment", ss->selector,
              ss->attr);
  for (int n = 0; n < 6; n++) {
    const plex86_accel_segment *g = &s->seg[n];
    if (!g->valid && g->attr != 0) violation(a, "segment %d invalid with attr %04x", n, g->attr);
  }
  if ((s->rflags & 0xffffffff001e7302ull) != 0x202) /* IF=1, bit 1; TF, IOPL, NT, VM, AC, VIF, VIP clear */
    violation(a, "RFLAGS %llx not eligible", (unsigned long long) s->rflags);
  if ((s->cr0 & 0x8000000du) != 0x80000001u) /* PG, PE; TS, EM clear */
    violation(a, "CR0 %llx not eligible", (unsigned long long) s->cr0);
  if (lma && (s->cr4 & ((1u << 12) | (1u << 22) | (1u << 25))))
    violation(a, "long mode with CR4 %llx: LA57, PKE or UINTR not declined by Bochs",
              (unsigned long long) s->cr4);
  if (lma && (s->cr3 >> 61)) violation(a, "LAM bits in CR3 %llx", (unsigned long long) s->cr3);
  for (int n = 0; n < 8; n++)
    for (int b = 10; b < 16; b++)
      if (s->fpu.st[n][b]) violation(a, "st[%d] byte %d nonzero", n, b);
  if (budget == 0) a->budget_zero++;
  if (budget > a->budget_max) a->budget_max = budget;
}

EXPORT void plex86_accel_run(plex86_accel *a, plex86_accel_cpu_state *state, uint64_t budget_ticks,
                             uint64_t user_insns, plex86_accel_exit *exit)
{
  uint64_t n = ++a->run_calls;
  memset(exit, 0, sizeof(*exit));
  check_state(a, state, budget_ticks);
  if (user_insns > a->user_insns_max) a->user_insns_max = user_insns;
  if (user_insns <= 1) a->entry_calls++;
  if (a->last_ran) {
    /* Same stint: Bochs emulated exactly the one instruction at EIP (user_insns counts the
       ticks of the run too). A smaller value is a new stint (the instruction entered the
       kernel), which starts at 0 or 1. */
    uint64_t expect = a->last_ran_user_insns + a->last_ran_ticks + 1;
    if (user_insns >= expect) a->after_ran_calls++;
    if (user_insns > expect)
      violation(a, "run call %llu: user_insns %llu after a RAN at %llu (+%llu ticks): Bochs "
                "emulated more than one instruction", (unsigned long long) n,
                (unsigned long long) user_insns, (unsigned long long) a->last_ran_user_insns,
                (unsigned long long) a->last_ran_ticks);
    a->last_ran = 0;
  }

  if (a->stopped) {
    a->run_after_stop++;
    violation(a, "run call %llu after the accelerator was stopped/failed",
              (unsigned long long) n);
  }
  switch (a->mode) {
  case MODE_STOP:
    if (n >= a->at) {
      a->stopped = 1;
      exit->status = PLEX86_ACCEL_DECLINED;
      exit->decline_reason = PLEX86_ACCEL_DECLINE_DISABLED;
      exit->retry_after_ticks = 1ull << 62;
      a->declined++;
      return;
    }
    break;
  case MODE_FAIL:
  case MODE_FAIL_LOST:
    if (n >= a->at) {
      a->stopped = 1;
      exit->status = PLEX86_ACCEL_FAILED;
      exit->lost_native_progress = a->mode == MODE_FAIL_LOST;
      snprintf(exit->message, sizeof(exit->message),
               "fake-accel: simulated failure at run call %llu (lost_native_progress=%u)",
               (unsigned long long) n, exit->lost_native_progress);
      return;
    }
    break;
  case MODE_MIXED:
    if (n % 2 == 0) {
      uint64_t pa;
      exit->status = PLEX86_ACCEL_RAN;
      exit->reason = PLEX86_ACCEL_EXIT_NEEDS_EMULATION;
      exit->ticks = a->ticks < budget_ticks ? a->ticks : budget_ticks;
      a->ticks_charged += exit->ticks;
      exit->seg_reload = a->seg_reload;
      int long64 = state->mode == PLEX86_ACCEL_MODE_LONG_64;
      if (long64) {
        exit->seg_reload &= ~((1u << PLEX86_ACCEL_SEG_FS) | (1u << PLEX86_ACCEL_SEG_GS));
        a->ran_long64++;
      }
      /* every other run only, so that the one-instruction rule is also checked without the
         trace stop that dropping decoded code causes by itself */
      int mapped = long64 ? translate64(a, state, state->rip, &pa)
                   : (state->efer >> 10) & 1
                       ? translate64(a, state,
                                     (uint32_t) (state->seg[PLEX86_ACCEL_SEG_CS].base + state->rip),
                                     &pa)
                       : translate(a, state,
                                   (uint32_t) (state->seg[PLEX86_ACCEL_SEG_CS].base + state->rip),
                                   &pa);
      if (n % 4 == 0 && mapped && page_protected(a, pa)) {
        uint64_t page = pa >> 12;
        a->protected_pages[page >> 3] &= ~(1u << (page & 7)); /* Bochs protects it again */
        a->code_pages[0] = pa & ~0xfffull;
        exit->code_pages = a->code_pages;
        exit->n_code_pages = 1;
        a->code_pages_reported++;
      }
      a->ran++;
      a->last_ran = 1;
      a->last_ran_user_insns = user_insns;
      a->last_ran_ticks = exit->ticks;
      return;
    }
    break;
  case MODE_TF: {
    uint32_t eax = (uint32_t) state->gpr[0];
    if (eax == FAKE_TF_STEP || eax == FAKE_TF_ARM) {
      /* as if native code had set TF and then stopped right here */
      exit->status = PLEX86_ACCEL_RAN;
      exit->reason = eax == FAKE_TF_STEP ? PLEX86_ACCEL_EXIT_SINGLE_STEP
                                         : PLEX86_ACCEL_EXIT_BUDGET_EXPIRED;
      state->rflags |= 0x100;
      state->gpr[2] = state->rip;
      if (eax == FAKE_TF_STEP) a->tf_step++;
      else a->tf_arm++;
      a->ran++;
      return;
    }
    if (eax == FAKE_ESCAPE) {
      /* as if native code had escaped and been caught right here, the executor replaced */
      exit->status = PLEX86_ACCEL_RAN;
      exit->reason = PLEX86_ACCEL_EXIT_CONTAINED_ESCAPE;
      state->gpr[2] = state->rip;
      state->gpr[1] = FAKE_ESCAPE_ECX;
      a->escapes++;
      a->ran++;
      return;
    }
    break;
  }
  case MODE_DECLINE:
    break;
  }
  exit->status = PLEX86_ACCEL_DECLINED;
  exit->decline_reason = PLEX86_ACCEL_DECLINE_SHORT_BURST;
  exit->retry_after_ticks = a->retry;
  a->declined++;
}

/* ---- notifications ---------------------------------------------------------------------- */

EXPORT uint32_t plex86_accel_native_cpuid_is_hosts(const plex86_accel *a)
{
  (void) a;
  return env_u64("FAKE_ACCEL_CPUID_IS_HOSTS", 1) != 0;
}

EXPORT void plex86_accel_note_declined(plex86_accel *a, uint32_t reason)
{
  if (reason < PLEX86_ACCEL_DECLINE_NOT_USER_MODE || reason >= PLEX86_ACCEL_DECLINE_REASONS) {
    a->noted_bad++;
    violation(a, "note_declined with a non-Bochs reason %u", reason);
    return;
  }
  a->noted[reason]++;
  a->last_ran = 0;
}

EXPORT void plex86_accel_flush_tlb(plex86_accel *a, int include_global)
{
  if (include_global) a->flush_global++;
  else a->flush_nonglobal++;
}

#ifndef FAKE_ACCEL_OMIT_INVLPG
EXPORT void plex86_accel_invlpg(plex86_accel *a, uint64_t linear)
{
  a->invlpg++;
  if (linear >> 32) a->invlpg_high++;
}
#endif

EXPORT void plex86_accel_protect_code_page(plex86_accel *a, uint64_t physical)
{
  a->protect++;
  if (physical & 0xfff) {
    a->protect_unaligned++;
    violation(a, "protect_code_page(0x%llx) not page-aligned", (unsigned long long) physical);
  }
  uint64_t page = physical >> 12;
  if (page >= (1u << 20)) return;
  if (a->protected_pages[page >> 3] & (1u << (page & 7))) {
    /* again after Bochs dropped its decoded code of the page (SMC, icache flush) */
    a->reprotected++;
    return;
  }
  a->protected_pages[page >> 3] |= 1u << (page & 7);
  a->protect_distinct++;
}

EXPORT void plex86_accel_memory_map_changed(plex86_accel *a, const plex86_accel_ram_range *ranges,
                                            uint32_t n_ranges)
{
  a->memmap++;
  check_ranges(a, ranges, n_ranges, "memory_map_changed");
}

EXPORT void plex86_accel_shutdown(plex86_accel *a)
{
  if (!a) return;
  uint64_t noted = 0;
  for (int i = 0; i < PLEX86_ACCEL_DECLINE_REASONS; i++) noted += a->noted[i];
  logf_(a, PLEX86_ACCEL_LOG_INFO,
        "fake-accel: shutdown: run=%llu ran=%llu declined=%llu noted=%llu flush_global=%llu "
        "flush_nonglobal=%llu invlpg=%llu protect=%llu memmap=%llu code_pages=%llu "
        "violations=%llu",
        (unsigned long long) a->run_calls, (unsigned long long) a->ran,
        (unsigned long long) a->declined, (unsigned long long) noted,
        (unsigned long long) a->flush_global, (unsigned long long) a->flush_nonglobal,
        (unsigned long long) a->invlpg, (unsigned long long) a->protect,
        (unsigned long long) a->memmap, (unsigned long long) a->code_pages_reported,
        (unsigned long long) a->violations);
  if (a->report) {
    FILE *f = fopen(a->report, "w");
    if (f) {
#define P(k, v) fprintf(f, "%s %llu\n", k, (unsigned long long) (v))
      P("run_calls", a->run_calls);
      P("ran", a->ran);
      P("declined", a->declined);
      P("run_after_stop", a->run_after_stop);
      P("budget_zero", a->budget_zero);
      P("budget_max", a->budget_max);
      P("user_insns_max", a->user_insns_max);
      P("entry_calls", a->entry_calls);
      P("after_ran_calls", a->after_ran_calls);
      P("noted", noted);
      P("noted_not_user_mode", a->noted[PLEX86_ACCEL_DECLINE_NOT_USER_MODE]);
      P("noted_event_pending", a->noted[PLEX86_ACCEL_DECLINE_EVENT_PENDING]);
      P("noted_debug", a->noted[PLEX86_ACCEL_DECLINE_DEBUG]);
      P("noted_fpu_unusable", a->noted[PLEX86_ACCEL_DECLINE_FPU_UNUSABLE]);
      P("noted_eflags", a->noted[PLEX86_ACCEL_DECLINE_EFLAGS]);
      P("noted_a20_or_smm", a->noted[PLEX86_ACCEL_DECLINE_A20_OR_SMM]);
      P("noted_la57", a->noted[PLEX86_ACCEL_DECLINE_LA57]);
      P("noted_lam", a->noted[PLEX86_ACCEL_DECLINE_LAM]);
      P("noted_user_cet", a->noted[PLEX86_ACCEL_DECLINE_USER_CET]);
      P("noted_uintr", a->noted[PLEX86_ACCEL_DECLINE_UINTR]);
      P("noted_pke", a->noted[PLEX86_ACCEL_DECLINE_PKE]);
      P("long64_calls", a->long64_calls);
      P("compat_calls", a->compat_calls);
      P("long64_rsp_high", a->long64_rsp_high);
      P("long64_rip_high", a->long64_rip_high);
      P("long64_fs_base_high", a->long64_fs_base_high);
      P("long64_r8_r15_nonzero", a->long64_r8_r15_nonzero);
      P("ran_long64", a->ran_long64);
      P("invlpg_high", a->invlpg_high);
      P("noted_bad", a->noted_bad);
      P("flush_global", a->flush_global);
      P("flush_nonglobal", a->flush_nonglobal);
      P("invlpg", a->invlpg);
      P("protect", a->protect);
      P("protect_distinct", a->protect_distinct);
      P("protect_unaligned", a->protect_unaligned);
      P("reprotected", a->reprotected);
      P("code_pages", a->code_pages_reported);
      P("ticks_charged", a->ticks_charged);
      P("tf_step", a->tf_step);
      P("tf_arm", a->tf_arm);
      P("escapes", a->escapes);
      P("memmap", a->memmap);
      P("violations", a->violations);
      P("shutdown", 1);
#undef P
      fclose(f);
    }
  }
  munmap((void *) a->ram, a->ram_size);
  free(a->protected_pages);
  free(a);
}
