// Where does this host report RIP for ICEBP, INT3, CD 03, INTO, CD 04 and single-step traps,
// in 64-bit mode and in compatibility mode (CS 0x23, as the executor runs guest code)? The
// results are in docs/ARCHITECTURE.md ("Entry and exit"); run it on a new kind of host:
//
//   gcc -O1 -o /tmp/traps tests/host-traps/traps.c && /tmp/traps
//
// Each line: the signal, si_code, trapno and RIP relative to the start of the test bytes
// ("AT the insn" when RIP is the trapping instruction's own address). The executor measures
// the one that differs between hosts, ICEBP, at start-up itself (sys::probe_icebp_rip).
#define _GNU_SOURCE
#include <signal.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <stdint.h>
#include <sys/mman.h>
#include <ucontext.h>

static sigjmp_buf jb;
static volatile uint64_t g_rip, g_trapno, g_err, g_efl, g_addr; static volatile int g_sig, g_code, g_cs;
static uint8_t *code, *stack32;

static void on_trap(int sig, siginfo_t *si, void *p) {
  ucontext_t *uc = p;
  g_sig = sig; g_code = si->si_code; g_addr = (uint64_t)si->si_addr;
  g_rip = uc->uc_mcontext.gregs[REG_RIP]; g_trapno = uc->uc_mcontext.gregs[REG_TRAPNO];
  g_err = uc->uc_mcontext.gregs[REG_ERR]; g_efl = uc->uc_mcontext.gregs[REG_EFL];
  g_cs = uc->uc_mcontext.gregs[REG_CSGSFS] & 0xffff;
  siglongjmp(jb, 1);
}
static volatile uint64_t enter_rip;
static void on_enter(int sig, siginfo_t *si, void *p) {
  (void) sig;
  (void) si;
  ucontext_t *uc = p;
  uc->uc_mcontext.gregs[REG_RIP] = enter_rip;
  uc->uc_mcontext.gregs[REG_RSP] = (uint64_t)(stack32 + 4096 - 64);
  uint64_t c = uc->uc_mcontext.gregs[REG_CSGSFS];
  c = (c & ~0xffffULL) | 0x23; c = (c & ~(0xffffULL << 48)) | (0x2bULL << 48);
  uc->uc_mcontext.gregs[REG_CSGSFS] = c;
}

static void run(const char *name, const uint8_t *bytes, int n, int trap_off, int compat) {
  memset(code, 0x90, 4096);
  memcpy(code + 16, bytes, n);
  code[16 + n] = 0xf4; // hlt: #GP if reached
  __builtin___clear_cache((char *)code, (char *)code + 4096);
  g_sig = 0;
  if (!sigsetjmp(jb, 1)) {
    if (compat) { enter_rip = (uint64_t)(code + 16); raise(SIGUSR1); }
    else ((void (*)(void))(code + 16))();
  }
  long rel = (long)(g_rip - (uint64_t)(code + 16));
  printf("%-8s %-28s sig %2d si_code %d trapno %2lu err %#lx cs %#x rip = start+%ld (trap insn at +%d; %s) TF=%d si_addr=start+%ld\n",
         compat ? "compat" : "64-bit", name, g_sig, g_code, g_trapno, g_err, g_cs, rel, trap_off,
         rel == trap_off ? "AT the insn" : "not at it", (int)((g_efl >> 8) & 1),
         (long)(g_addr - (uint64_t)(code + 16)));
}

int main(void) {
  code = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
  stack32 = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
  struct sigaction sa = {0};
  sa.sa_sigaction = on_trap; sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigaction(SIGTRAP, &sa, 0); sigaction(SIGSEGV, &sa, 0); sigaction(SIGILL, &sa, 0); sigaction(SIGBUS, &sa, 0);
  sa.sa_sigaction = on_enter; sigaction(SIGUSR1, &sa, 0);
  static const uint8_t icebp[] = {0xf1};
  static const uint8_t icebp2[] = {0xf1, 0xf1};
  static const uint8_t movf1[] = {0xb0, 0xf1, 0xf1};
  static const uint8_t int3[] = {0xcc};
  static const uint8_t cd03[] = {0xcd, 0x03};
  static const uint8_t into[] = {0xb0, 0x7f, 0x04, 0x01, 0xce};
  static const uint8_t cd04[] = {0xcd, 0x04};
  // pushf; or dword [esp], 0x100; popf; nop; nop (the trap is expected after the first nop)
  static const uint8_t popf_tf[] = {0x9c, 0x81, 0x0c, 0x24, 0x00, 0x01, 0x00, 0x00, 0x9d, 0x90, 0x90};
  // popf TF then mov eax, 1 (5 bytes)
  static const uint8_t popf_tf_mov[] = {0x9c, 0x81, 0x0c, 0x24, 0x00, 0x01, 0x00, 0x00, 0x9d, 0xb8, 1, 0, 0, 0, 0x90};
  // popf TF then icebp
  static const uint8_t popf_tf_icebp[] = {0x9c, 0x81, 0x0c, 0x24, 0x00, 0x01, 0x00, 0x00, 0x9d, 0xf1, 0x90};
  // popf TF then int3
  static const uint8_t popf_tf_int3[] = {0x9c, 0x81, 0x0c, 0x24, 0x00, 0x01, 0x00, 0x00, 0x9d, 0xcc, 0x90};
  for (int compat = 0; compat < 2; compat++) {
    run("icebp F1", icebp, 1, 0, compat);
    run("icebp F1 F1 (first)", icebp2, 2, 0, compat);
    run("mov al,0xf1; icebp", movf1, 3, 2, compat);
    run("int3 CC", int3, 1, 0, compat);
    run("int 3 CD 03", cd03, 2, 0, compat);
    if (compat) run("into CE (OF=1)", into, 5, 4, compat);
    if (compat) run("int 4 CD 04", cd04, 2, 0, compat);
    run("popf(TF); nop", popf_tf, sizeof popf_tf, 9, compat);
    run("popf(TF); mov eax,1", popf_tf_mov, sizeof popf_tf_mov, 9, compat);
    run("popf(TF); icebp", popf_tf_icebp, sizeof popf_tf_icebp, 9, compat);
    run("popf(TF); int3", popf_tf_int3, sizeof popf_tf_int3, 9, compat);
  }
  return 0;
}
