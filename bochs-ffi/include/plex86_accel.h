/*
 * plex86-accel: the C ABI between Bochs (built with --enable-plex86-accel) and the accelerator
 * library (accel-core, libplex86_accel.so). This header is the ABI's one source of truth: Bochs
 * includes it, and the Rust side's types are generated from it with bindgen
 * (bochs-ffi/src/bindings.rs; ci/check-bindings fails when they drift).
 *
 * Any change here that is not purely additive bumps PLEX86_ACCEL_ABI_VERSION; Bochs refuses a
 * library whose version differs from the one it was built with.
 *
 * Protocol (one guest CPU, one thread; the library is not reentrant):
 *   1. Bochs dlopen()s the library, calls plex86_accel_abi_version() and compares.
 *   2. plex86_accel_init() with the configuration below; NULL means failure, with a message.
 *      Then plex86_accel_native_cpuid_is_hosts(): whether CPUID at CPL 3 must answer with the
 *      host's values (native code reads them) or with the guest CPU model (it exits instead).
 *   3. At its CPU-loop hook, when the guest is in 32-bit protected mode with paging or in long
 *      mode (64-bit or compatibility; the state's mode field says which), CPL 3, not V8086,
 *      TF clear, no interrupt shadow, no pending event, not in SMM, A20 on, no debug
 *      registers armed, CR0.TS/EM clear, IF=1 and IOPL=0, Bochs fills plex86_accel_cpu_state
 *      and calls plex86_accel_run(). The library may decline (nothing changed) or run the guest
 *      natively; then the state is the one *before* the instruction at which it stopped, and
 *      Bochs emulates exactly that one instruction before it may call plex86_accel_run() again.
 *      Native code may set TF (POPF): the state then has TF set and Bochs treats the boundary
 *      as any with TF set (the instruction at rip is single-stepped), and after an exit
 *      PLEX86_ACCEL_EXIT_SINGLE_STEP it delivers the pending single-step #DB first; after
 *      PLEX86_ACCEL_EXIT_CONTAINED_ESCAPE (ABI 8) it emulates nothing and raises #GP(0).
 *      In long mode Bochs also declines CR4.LA57, LAM (CR3 bits 62:61), CR4.UINTR and CR4.PKE,
 *      and in every mode CET with user enables (IA32_U_CET); the library declines long mode
 *      itself as long as it has no 64-bit executor (PLEX86_ACCEL_DECLINE_LONG_MODE_*).
 *   4. Between runs Bochs reports what invalidates the native mirror: TLB flushes, INVLPG,
 *      memory-map changes, and physical pages it holds decoded code for.
 *   5. plex86_accel_shutdown() at exit prints (through the log callback) and writes statistics.
 *
 * Reference sides: Bochs is the reference for all guest state; the library only ever returns
 * state of its own native run. The guest page tables in RAM are the reference for the native
 * mirror, which behaves like a TLB and is kept coherent by the notifications of step 4.
 */
#ifndef PLEX86_ACCEL_H
#define PLEX86_ACCEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version of this interface. */
#define PLEX86_ACCEL_ABI_VERSION 10u

/* The one symbol Bochs resolves first, to learn the library's ABI version. */
#define PLEX86_ACCEL_VERSION_SYMBOL "plex86_accel_abi_version"

/* ---- guest state ------------------------------------------------------------------------ */

/* Segment register order, as in Bochs (BX_SEG_REG_ES ... BX_SEG_REG_GS). */
enum plex86_accel_seg_index {
  PLEX86_ACCEL_SEG_ES = 0,
  PLEX86_ACCEL_SEG_CS = 1,
  PLEX86_ACCEL_SEG_SS = 2,
  PLEX86_ACCEL_SEG_DS = 3,
  PLEX86_ACCEL_SEG_FS = 4,
  PLEX86_ACCEL_SEG_GS = 5,
};

/* One segment register: the visible selector and the descriptor cache. */
typedef struct plex86_accel_segment {
  uint16_t selector;
  /* Access rights in the VMX packing of descriptor bytes 5 and 6: bits 0-3 type, 4 S,
     5-6 DPL, 7 P, 12 AVL, 13 L, 14 D/B, 15 G. 0 for an unusable (null) register. */
  uint16_t attr;
  uint32_t limit; /* raw 20-bit descriptor limit (in 4 KiB units when G is set) */
  uint32_t valid; /* Bochs's cache valid flag: nonzero when the cache holds a descriptor */
  uint32_t reserved; /* zero */
  /* The cache's base: 32 bits outside long mode; in long mode FS and GS carry the 64-bit
     base (IA32_FS_BASE/IA32_GS_BASE, WRFSBASE), the others' bases are ignored by the CPU. */
  uint64_t base;
} plex86_accel_segment;

/* The CPU mode, Bochs's cpu_mode (BX_MODE_IA32_REAL ... BX_MODE_LONG_64). Protected mode is
   16- or 32-bit by CS's D bit; long compatibility mode likewise. */
enum plex86_accel_mode {
  PLEX86_ACCEL_MODE_REAL = 0,
  PLEX86_ACCEL_MODE_V8086 = 1,
  PLEX86_ACCEL_MODE_PROTECTED = 2,
  PLEX86_ACCEL_MODE_LONG_COMPAT = 3,  /* EFER.LMA=1, CS.L=0 */
  PLEX86_ACCEL_MODE_LONG_64 = 4,      /* EFER.LMA=1, CS.L=1 */
};

/* x87, SSE, AVX and AVX-512 state, field for field as Bochs keeps it (i387_t, vmm, opmask). */
typedef struct plex86_accel_fpu_state {
  uint16_t fcw;     /* control word */
  uint16_t fsw;     /* status word, TOP included */
  uint16_t ftw;     /* full tag word: 2 bits per *physical* register (as FSTENV) */
  uint16_t fop;     /* last opcode */
  /* FIP/FDP/FCS/FDS/FOP round-trip only as the host's XSAVE keeps them: AMD saves them only
     while an x87 exception is pending, and recent Intel CPUs deprecate FCS/FDS (zero). */
  uint32_t fip;     /* last instruction pointer (offset) */
  uint32_t fdp;     /* last data pointer (offset) */
  uint16_t fcs;
  uint16_t fds;
  uint32_t mxcsr;
  /* Physical registers R0..R7 (not stack order): 64-bit significand in bytes 0-7,
     sign and exponent in bytes 8-9, bytes 10-15 zero. MMX registers alias the significands. */
  uint8_t st[8][16];
  /* ZMM0..ZMM31: XMM in bytes 0-15, the upper YMM half in 16-31, the upper ZMM half in 32-63.
     Only registers 0-7 exist outside 64-bit mode; Bochs exports and takes back the registers
     it has (16 or 32, of 16, 32 or 64 bytes) in long mode, compatibility mode included (ABI 9:
     its code may switch to 64-bit mode natively), 0-7 outside it, zero elsewhere. */
  uint8_t zmm[32][64];
  uint64_t opmask[8]; /* k0..k7 */
} plex86_accel_fpu_state;

/* The guest's user-visible CPU state, plus the control registers the native mirror needs.
   Outside long mode only the low 32 bits of gpr, rip and rflags are the guest's: Bochs takes
   back only those (the upper halves of its registers stay as they were).
   Layout pinned by accel-core's tests (offsets and size). */
typedef struct plex86_accel_cpu_state {
  /* RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15 (Bochs's gen_reg order) */
  uint64_t gpr[16];
  uint64_t rip;
  uint64_t rflags;   /* materialised (no lazy flags) */
  uint32_t mode;     /* enum plex86_accel_mode */
  uint32_t reserved; /* zero */
  plex86_accel_segment seg[6]; /* indexed by enum plex86_accel_seg_index */
  uint64_t cr0;
  uint64_t cr2;
  uint64_t cr3;      /* in long mode with the PCID (CR4.PCIDE) and LAM bits as Bochs has them */
  uint64_t cr4;
  uint64_t efer;     /* with LMA */
  uint64_t xcr0;
  plex86_accel_fpu_state fpu;
} plex86_accel_cpu_state;

/* ---- configuration ---------------------------------------------------------------------- */

/* A range of guest-physical addresses [start, end) that is plain RAM, backed by the RAM memfd
   at the same offset. Everything else (device memory, ROM, holes) is never mirrored. */
typedef struct plex86_accel_ram_range {
  uint64_t start;
  uint64_t end;
} plex86_accel_ram_range;

#define PLEX86_ACCEL_MAX_RAM_RANGES 16

/* Log levels, as Bochs's (LOGLEV_DEBUG .. LOGLEV_PANIC). */
enum plex86_accel_log_level {
  PLEX86_ACCEL_LOG_DEBUG = 0,
  PLEX86_ACCEL_LOG_INFO = 1,
  PLEX86_ACCEL_LOG_ERROR = 2,
  PLEX86_ACCEL_LOG_PANIC = 3,
};

typedef void (*plex86_accel_log_fn)(void *opaque, int level, const char *message);

/* Bochs's CPUID, for comparing the guest's CPU model with what native code sees. */
typedef void (*plex86_accel_cpuid_fn)(void *opaque, uint32_t leaf, uint32_t subleaf,
                                      uint32_t out[4] /* eax, ebx, ecx, edx */);

/* plex86_accel_config.flags */
enum plex86_accel_config_flag {
  /* Allocate all of the RAM memfd at start (fallocate, on a library thread of its own, so that
     Bochs boots meanwhile). Bochs's first write to a memfd page costs ~0.8 us more than to
     anonymous memory (the plain build's RAM); allocated up front, it costs less. The price:
     all guest RAM is resident from the start. */
  PLEX86_ACCEL_CONFIG_PREALLOC_RAM = 1u << 0,
  /* Start even if native user code could execute an instruction-set extension or use an XSAVE
     component that the guest CPU model (guest_cpuid) does not emulate: such code gets #UD
     where Bochs emulates it, so results may differ from emulation. Without this flag
     plex86_accel_init() fails naming the missing features (bochsrc: allow_cpu_mismatch=1). */
  PLEX86_ACCEL_CONFIG_ALLOW_CPU_MISMATCH = 1u << 1,
  /* The guest CPU model is cpu: model=host: the host's CPU less what Bochs cannot emulate.
     Host extensions still missing from it cannot be emulated by this Bochs whatever the
     model: they are logged as errors, never refused. */
  PLEX86_ACCEL_CONFIG_CPU_MODEL_HOST = 1u << 2,
};

typedef struct plex86_accel_config {
  uint32_t abi_version;     /* PLEX86_ACCEL_ABI_VERSION as Bochs was built */
  uint32_t struct_size;     /* sizeof(plex86_accel_config); must match the library's exactly */
  int32_t ram_fd;           /* the guest-RAM memfd; offset == guest-physical address */
  uint32_t n_ram_ranges;
  uint64_t ram_size;        /* bytes of the memfd that hold RAM */
  plex86_accel_ram_range ram_ranges[PLEX86_ACCEL_MAX_RAM_RANGES];
  uint64_t ips;             /* Bochs's instructions per second (cpu: ips=): ticks per second */
  const char *executor_path; /* NULL or "": next to the library */
  const char *stats_path;   /* NULL or "": no JSON statistics file */
  uint32_t min_user_insns;  /* entry policy: emulate this many user instructions after each
                               return from the kernel before running natively */
  uint32_t flags;           /* PLEX86_ACCEL_CONFIG_* bits; others must be 0 */
  plex86_accel_log_fn log;
  void *log_opaque;
  plex86_accel_cpuid_fn guest_cpuid; /* may be NULL */
  void *cpuid_opaque;
  /* Where the stub executor's region lies in its process (bochsrc stub_base=; ABI 7): 0 for
     the default, 0x3f0000000000; else 2 MiB-aligned, at or above 4 GiB and in a 4 GiB block
     that ends below 0x7ffffffff000. Guest pages inside that 4 GiB block are never run
     natively (their accesses are emulated), so a guest that lives there wants it elsewhere.
     plex86_accel_init() refuses other values, saying why. */
  uint64_t stub_base;
} plex86_accel_config;

/* ---- runs ------------------------------------------------------------------------------- */

/* What plex86_accel_run() did. */
enum plex86_accel_status {
  /* Declined: nothing ran and nothing changed; Bochs emulates. decline_reason says why and
     retry_after_ticks how many ticks Bochs should emulate before asking again (0: any time). */
  PLEX86_ACCEL_DECLINED = 0,
  /* Ran natively: the state is the one before the instruction at rip, which Bochs emulates
     (after exit reason PLEX86_ACCEL_EXIT_SINGLE_STEP, after delivering its #DB; after
     PLEX86_ACCEL_EXIT_CONTAINED_ESCAPE Bochs raises #GP(0) at the state instead). */
  PLEX86_ACCEL_RAN = 1,
  /* The accelerator failed (executor died, guest escape, corrupted control region). message
     says why. If lost_native_progress is 0 the state is unchanged and emulation may go on;
     otherwise the guest state cannot be vouched for and Bochs must stop. */
  PLEX86_ACCEL_FAILED = 2,
};

/* Why an entry was declined; counted in the statistics. Bochs-side reasons are reported with
   plex86_accel_note_declined(). */
enum plex86_accel_decline_reason {
  PLEX86_ACCEL_DECLINE_NONE = 0,
  PLEX86_ACCEL_DECLINE_SHORT_BURST = 1,     /* entry policy: still in the first N instructions */
  PLEX86_ACCEL_DECLINE_UNSUPPORTED_STATE = 2, /* e.g. LDT selectors, conforming code segment */
  PLEX86_ACCEL_DECLINE_NO_BUDGET = 3,       /* the next timer event is too close */
  PLEX86_ACCEL_DECLINE_DISABLED = 4,        /* after a failure the library stays off */
  PLEX86_ACCEL_DECLINE_BACKOFF = 5,         /* recent native runs were too short to pay off */
  PLEX86_ACCEL_DECLINE_LONG_MODE_64 = 6,    /* 64-bit mode: no 64-bit executor yet */
  PLEX86_ACCEL_DECLINE_LONG_MODE_COMPAT = 7, /* compatibility mode: not run natively yet */
  /* Bochs-side reasons (the hook's eligibility checks) */
  PLEX86_ACCEL_DECLINE_NOT_USER_MODE = 16,  /* CPL != 3, real mode, paging off, V8086, 16-bit CS */
  PLEX86_ACCEL_DECLINE_EVENT_PENDING = 17,  /* async event, interrupt shadow, not active */
  PLEX86_ACCEL_DECLINE_DEBUG = 18,          /* TF, DR7 breakpoints, debugger */
  PLEX86_ACCEL_DECLINE_FPU_UNUSABLE = 19,   /* CR0.TS or CR0.EM set */
  PLEX86_ACCEL_DECLINE_EFLAGS = 20,         /* IF=0, IOPL!=0, AC, NT, VIF/VIP */
  PLEX86_ACCEL_DECLINE_A20_OR_SMM = 21,
  /* Bochs-side, guest features native code would not honour */
  PLEX86_ACCEL_DECLINE_LA57 = 22,           /* long mode with CR4.LA57 (5-level paging) */
  PLEX86_ACCEL_DECLINE_LAM = 23,            /* long mode with LAM bits in CR3 (62:61) */
  PLEX86_ACCEL_DECLINE_USER_CET = 24,       /* CR4.CET with user enables in IA32_U_CET */
  PLEX86_ACCEL_DECLINE_UINTR = 25,          /* long mode with CR4.UINTR */
  PLEX86_ACCEL_DECLINE_PKE = 26,            /* long mode with CR4.PKE (page keys not honoured) */
  PLEX86_ACCEL_DECLINE_REASONS = 27         /* number of slots */
};

/* Exit reasons of a run that ran (status RAN); counted in the statistics. */
enum plex86_accel_exit_reason {
  PLEX86_ACCEL_EXIT_PAGE_FAULT = 0,
  PLEX86_ACCEL_EXIT_NEEDS_EMULATION = 1, /* page 0, device memory, ROM */
  PLEX86_ACCEL_EXIT_GENERAL_PROTECTION = 2,
  PLEX86_ACCEL_EXIT_INVALID_OPCODE = 3,
  PLEX86_ACCEL_EXIT_DIVIDE_ERROR = 4,
  PLEX86_ACCEL_EXIT_X87_EXCEPTION = 5,
  PLEX86_ACCEL_EXIT_SIMD_EXCEPTION = 6,
  PLEX86_ACCEL_EXIT_BREAKPOINT = 7,      /* INT3, INTO, INT n other than the system call */
  PLEX86_ACCEL_EXIT_SYSTEM_CALL = 8,     /* INT 0x80, SYSCALL, SYSENTER */
  PLEX86_ACCEL_EXIT_RDTSC = 9,
  PLEX86_ACCEL_EXIT_PRIVILEGED = 10,     /* HLT, CLI, STI, IN, OUT, ... */
  PLEX86_ACCEL_EXIT_SEGMENT_LOAD = 11,   /* segment load or far transfer */
  PLEX86_ACCEL_EXIT_OTHER_EXCEPTION = 12,
  PLEX86_ACCEL_EXIT_BUDGET_EXPIRED = 13, /* no instruction needs emulation; Bochs may emulate
                                            the next one anyway */
  PLEX86_ACCEL_EXIT_CODE_LOG_FULL = 14,
  PLEX86_ACCEL_EXIT_FILL_LIMIT = 15,     /* the run spent itself mirroring pages; like
                                            BUDGET_EXPIRED, no instruction needs emulation */
  /* The one exit whose state is *after* an instruction: native code set TF (POPF) and the
     instruction before rip ran with it, so its single-step trap is pending. Bochs delivers
     that #DB (DR6.BS) first, emulating nothing before it. TF is set in the state. */
  PLEX86_ACCEL_EXIT_SINGLE_STEP = 16,
  /* CPUID, on hosts with CPUID faulting (see plex86_accel_native_cpuid_is_hosts()). */
  PLEX86_ACCEL_EXIT_CPUID = 17,
  /* ABI 8. Native code tried to escape (it left its code mode by a far transfer to a host
     selector, made a 64-bit system call from the wrong place, ...), and the library contained
     it: the executor process it ran in, which held nothing but that guest process's own pages,
     was replaced. The state is the guest's at the point where the escape was caught (the
     registers there, CS/SS and the other segments as at entry); Bochs emulates nothing but
     raises #GP(0) at that state, as a CPU raises it for a far transfer to a selector the guest's
     tables have no code descriptor for, so that the guest kernel delivers a fault (SIGSEGV) to
     that process and the VM goes on. Only the stub executor returns it. */
  PLEX86_ACCEL_EXIT_CONTAINED_ESCAPE = 18,
  /* ABI 10. Compatibility-mode code executed SYSENTER natively (a 64-bit Linux guest's 32-bit
     vDSO does so on an Intel CPU, whatever CPUID says). The host kernel's fast-syscall path
     discards EIP and ESP, which SYSENTER neither saves nor depends on: the registers, flags and
     segments are the guest's at the instruction, but EIP (0) and ESP. Bochs carries out
     SYSENTER at that state itself (CS, SS, EIP and ESP from the MSRs), as if it had fetched
     it. Only the stub executor returns it. */
  PLEX86_ACCEL_EXIT_SYSENTER = 19,
  PLEX86_ACCEL_EXIT_REASONS = 20         /* number of slots */
};

/* plex86_accel_exit.seg_reload bit i (enum plex86_accel_seg_index): the guest loaded that
   segment register natively with a selector the monitor did not install; its descriptor cache
   must be reloaded from the guest's own descriptor tables for the new selector value. For CS
   (ABI 9) the returned cache is the host descriptor native code ran on since (flat; L=1 for
   64-bit code, D=1 for 32-bit code): long-mode code switches between 64-bit and compatibility
   mode natively by a far transfer to the host's other user code selector. Bochs takes the
   state only if the guest's descriptor is of the same kind (L and D equal; outside 64-bit
   code base 0 and a 4 GiB limit), and then in the mode it selects. The registers are whole
   (64 bits) when the run entered in 64-bit code or CS comes back for reload in long mode
   (whichever mode it left in). In long mode the vector registers go in and come back whole
   (ZMM0-31), compatibility mode included: what its code cannot reach comes back as it went. */

typedef struct plex86_accel_exit {
  uint32_t status;          /* enum plex86_accel_status */
  uint32_t reason;          /* enum plex86_accel_exit_reason, when status is RAN */
  uint32_t decline_reason;  /* enum plex86_accel_decline_reason, when status is DECLINED */
  uint32_t seg_reload;      /* bit mask, see above */
  uint64_t ticks;           /* guest ticks to charge for the native run (native time × ips) */
  uint64_t retry_after_ticks;
  uint32_t lost_native_progress; /* with FAILED: nonzero when guest state may have changed */
  uint32_t n_code_pages;
  /* ABI 9, with RAN: nonzero when the run's executor held nothing but the guest process's own
     pages (the stub executor). A returned state Bochs cannot vouch for (a seg_reload selector
     the guest could not have loaded, or a reloaded CS of another kind than the host's code
     segment native code ran on) is then that process's doing: Bochs raises #GP(0) at it, with
     the entry's segments, as after PLEX86_ACCEL_EXIT_CONTAINED_ESCAPE, instead of stopping. */
  uint32_t contained;
  uint32_t reserved;        /* zero */
  /* Guest-physical page addresses of pages that Bochs holds decoded code for and that native
     code wrote during the run: Bochs must invalidate its decoded code for exactly these pages
     before emulating anything. Points into library memory valid until the next call. */
  const uint64_t *code_pages;
  char message[256];        /* with FAILED: why, NUL-terminated */
} plex86_accel_exit;

/* ---- functions -------------------------------------------------------------------------- */

typedef struct plex86_accel plex86_accel; /* opaque */

/* Returns PLEX86_ACCEL_ABI_VERSION as the library was built. */
uint32_t plex86_accel_abi_version(void);

/* Starts the accelerator (spawns the executor). On failure returns NULL and writes a
   NUL-terminated message into error (at most error_len bytes). */
plex86_accel *plex86_accel_init(const plex86_accel_config *config, char *error, size_t error_len);

/* Nonzero when native user code reads the host's CPUID (the host has no CPUID faulting): Bochs
   must then answer CPUID at CPL 3 with the host's values, so that a program sees one CPU
   whether its CPUID runs natively or is emulated. Zero when native CPUID faults and exits
   (PLEX86_ACCEL_EXIT_CPUID): CPUID then answers with the guest CPU model at every privilege
   level, as without acceleration. Fixed for the accelerator's lifetime. */
uint32_t plex86_accel_native_cpuid_is_hosts(const plex86_accel *accel);

/* Runs the guest natively from *state for at most budget_ticks guest ticks (the time to Bochs's
   next timer event). On RAN, *state is updated; see enum plex86_accel_status. user_insns is the
   number of user-mode instructions Bochs has executed since the last return from the kernel
   (for the entry policy). */
void plex86_accel_run(plex86_accel *accel, plex86_accel_cpu_state *state, uint64_t budget_ticks,
                      uint64_t user_insns, plex86_accel_exit *exit);

/* Bochs declined an entry at its hook, for the statistics. */
void plex86_accel_note_declined(plex86_accel *accel, uint32_t reason);

/* Bochs's TLB was flushed: all entries (include_global != 0) or all but global ones. */
void plex86_accel_flush_tlb(plex86_accel *accel, int include_global);

/* INVLPG (or INVPCID of one address) of one linear address: 64-bit in long mode. */
void plex86_accel_invlpg(plex86_accel *accel, uint64_t linear);

/* Bochs now holds decoded code from this guest-physical page: native writes to it must be
   reported in plex86_accel_exit.code_pages. */
void plex86_accel_protect_code_page(plex86_accel *accel, uint64_t physical);

/* The physical memory map changed (memory handlers, PAM, SMRAM, A20): the new plain-RAM ranges.
   Implies a flush of everything. */
void plex86_accel_memory_map_changed(plex86_accel *accel, const plex86_accel_ram_range *ranges,
                                     uint32_t n_ranges);

/* Stops the executor, logs the statistics and writes the JSON file if configured. accel may
   be NULL. */
void plex86_accel_shutdown(plex86_accel *accel);

#ifdef __cplusplus
}
#endif

#endif /* PLEX86_ACCEL_H */
