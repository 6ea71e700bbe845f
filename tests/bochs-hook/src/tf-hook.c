/*
 * tf-hook: the guest side of tests/bochs-hook/run's "tf" check (with FAKE_ACCEL_MODE=tf).
 *
 * Spins in a two-instruction loop with a magic value in EAX. The fake library, seeing it at a
 * run call, pretends native code ran with TF set (as after a native POPF) and returns the
 * state with TF set and EDX = the EIP it returns:
 *   step  (EAX = FAKE_TF_STEP): exit reason SINGLE_STEP, the state after an instruction that
 *         ran with TF. Bochs must deliver that #DB at once: the SIGTRAP's EIP is EDX.
 *   arm   (EAX = FAKE_TF_ARM): exit reason BUDGET_EXPIRED with TF set. The instruction at
 *         EDX runs with TF: the SIGTRAP's EIP is the instruction after it.
 *   escape (EAX = FAKE_ESCAPE): exit reason CONTAINED_ESCAPE (ABI 8) with ECX =
 *         FAKE_ESCAPE_ECX. Bochs must write the state back and raise #GP(0) there: a
 *         SIGSEGV (SI_KERNEL, trap 13, error code 0) at EDX, ECX the fake's.
 * Prints one "tf-hook: <case> ok" or "tf-hook: <case> FAIL ..." line per case; exit status 0
 * when all are ok. Without acceleration (or with a fake that never triggers) no trap comes:
 * each case gives up after a while ("no trap").
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ucontext.h>
#include <time.h>

#define FAKE_TF_STEP 0x51e9051eu
#define FAKE_TF_ARM 0x7fa4a2bdu
#define FAKE_ESCAPE 0xe5ca9e00u
#define FAKE_ESCAPE_ECX 0x0c0ffee5u

/* tf_spin(magic, limit): EAX = magic; counts ECX up to limit in the loop tf_inc/tf_jmp (the
   trap handler leaves it through tf_done); returns ECX. */
unsigned tf_spin(unsigned magic, unsigned limit);
extern char tf_inc[], tf_jmp[], tf_cmp[], tf_done[];
__asm__(".text\n"
        ".globl tf_spin, tf_inc, tf_cmp, tf_jmp, tf_done\n"
        "tf_spin:\n"
        "  push %ebx\n"
        "  mov 12(%esp), %ebx\n"
        "  xor %ecx, %ecx\n"
        "  xor %edx, %edx\n"
        "  mov 8(%esp), %eax\n"
        "tf_inc: inc %ecx\n"
        "tf_cmp: cmp %ebx, %ecx\n"
        "tf_jmp: jne tf_inc\n"
        "tf_done:\n"
        "  mov %ecx, %eax\n"
        "  pop %ebx\n"
        "  ret\n");

static volatile unsigned trap_eip, trap_edx, traps;
static volatile unsigned segv_ecx, segv_trapno, segv_err, segv_code;

static void on_trap(int sig, siginfo_t *si, void *p)
{
  (void) sig;
  (void) si;
  ucontext_t *uc = p;
  greg_t *g = uc->uc_mcontext.gregs;
  trap_eip = (unsigned) g[REG_EIP];
  trap_edx = (unsigned) g[REG_EDX];
  traps++;
  g[REG_EFL] &= ~0x100; /* no more single steps */
  g[REG_EAX] = 0;       /* nor triggers of the fake (tf_done is a CPL 3 entry: a run call) */
  g[REG_EIP] = (greg_t) (unsigned long) tf_done; /* leave the loop */
}

/* The contained escape's #GP: records what the fault says, then leaves the loop. */
static void on_segv(int sig, siginfo_t *si, void *p)
{
  ucontext_t *uc = p;
  greg_t *g = uc->uc_mcontext.gregs;
  segv_ecx = (unsigned) g[REG_ECX];
  segv_trapno = (unsigned) g[REG_TRAPNO];
  segv_err = (unsigned) g[REG_ERR];
  segv_code = (unsigned) si->si_code;
  on_trap(sig, si, p);
}

/* The instruction after the one at eip in the loop. */
static unsigned next_insn(unsigned eip)
{
  if (eip == (unsigned long) tf_inc) return (unsigned long) tf_cmp;
  if (eip == (unsigned long) tf_cmp) return (unsigned long) tf_jmp;
  return (unsigned long) tf_inc; /* tf_jmp, taken */
}

static int run_case(const char *name, unsigned magic, int step)
{
  traps = 0;
  for (int round = 0; round < 100 && traps == 0; round++)
    tf_spin(magic, 1000000);
  if (traps != 1) {
    printf("tf-hook: %s FAIL: %s\n", name, traps ? "more than one trap" : "no trap");
    return 1;
  }
  unsigned want = step ? trap_edx : next_insn(trap_edx);
  if (magic == FAKE_ESCAPE &&
      (segv_ecx != FAKE_ESCAPE_ECX || segv_trapno != 13 || segv_err != 0 || segv_code != SI_KERNEL)) {
    printf("tf-hook: %s FAIL: SIGSEGV with ECX %#x, trap %u, error code %#x, si_code %#x "
           "(expected %#x, 13, 0, SI_KERNEL)\n", name, segv_ecx, segv_trapno, segv_err,
           segv_code, FAKE_ESCAPE_ECX);
    return 1;
  }
  if (trap_eip != want) {
    printf("tf-hook: %s FAIL: SIGTRAP at EIP %#x, expected %#x (fake stopped at %#x; loop "
           "%#x/%#x/%#x)\n", name, trap_eip, want, trap_edx, (unsigned) (unsigned long) tf_inc,
           (unsigned) (unsigned long) tf_cmp, (unsigned) (unsigned long) tf_jmp);
    return 1;
  }
  printf("tf-hook: %s ok\n", name);
  return 0;
}

int main(void)
{
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_trap;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGTRAP, &sa, NULL);
  sa.sa_sigaction = on_segv;
  sigaction(SIGSEGV, &sa, NULL);
  setvbuf(stdout, NULL, _IONBF, 0);
  int bad = run_case("step", FAKE_TF_STEP, 1);
  bad |= run_case("arm", FAKE_TF_ARM, 0);
  /* the #GP comes at the state's EIP, as the step case's #DB does */
  bad |= run_case("escape", FAKE_ESCAPE, 1);
  return bad;
}
