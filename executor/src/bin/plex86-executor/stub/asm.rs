//! The stub's code: position-independent assembly between `plex86_stub_begin` and
//! `plex86_stub_end`, which the launcher copies to S's code page. It addresses S only
//! relative to its own first byte (RBX = S), uses no thread pointer, no libc and no data outside
//! S, and makes only the system calls its two filters allow (plus, before the guest thread's
//! filter, the start-up munmaps and the filter installation).
//!
//! * `stub_start` (guest thread, once): unmap everything but S, install the guest filter,
//!   report READY, wait for the first verdict.
//! * `stub_handler` (guest thread, each signal, on the alternate stack): publish the frame's
//!   address, the data selectors and FS/GS bases, bump the exit sequence, wake the library if
//!   it sleeps, wait for a verdict: Resume returns through the kernel's frame, Enter abandons
//!   it for the library's (after scrubbing the last exit's frame and words: the entry may be
//!   another guest process's). It takes CLOCK_MONOTONIC at each signal and at each return to the
//!   guest, as the entry does, so that the library can tell native time from hand-overs.
//!   Each entry first arms the budget's timer (SIGALRM to this thread) with the library's
//!   budget.
//! * `stub_spawn_mapper` / the mapper loop: a second thread with no stack use that carries
//!   out the library's op batches.

use plex86_protocol::stub::{self, by_lib as lib, by_stub, Verdict};

std::arch::global_asm!(
    ".pushsection .text.plex86_stub,\"ax\",@progbits",
    ".balign 64",
    ".globl plex86_stub_begin",
    "plex86_stub_begin:",
    // ---- guest thread start (jumped to by the launcher; never returns) -------------------
    ".globl plex86_stub_start",
    "plex86_stub_start:",
    "lea rbx, [rip + plex86_stub_begin]",
    "lea rsp, [rbx + {stub} + {idle_top}]",
    "mov rdi, [rbx + {stub} + {unmap}]",
    "mov rsi, [rbx + {stub} + {unmap} + 8]",
    "mov eax, 11", // munmap
    "syscall",
    "mov r12d, 1",
    "test rax, rax",
    "jnz 90f",
    "mov rdi, [rbx + {stub} + {unmap} + 16]",
    "mov rsi, [rbx + {stub} + {unmap} + 24]",
    "mov eax, 11",
    "syscall",
    "mov r12d, 2",
    "test rax, rax",
    "jnz 90f",
    "mov edi, 1", // SECCOMP_SET_MODE_FILTER
    "xor esi, esi",
    "lea rdx, [rbx + {stub} + {fprog_guest}]",
    "mov eax, 317", // seccomp
    "syscall",
    "mov r12d, 3",
    "test rax, rax",
    "jnz 90f",
    "mov dword ptr [rbx + {stub} + {ready}], 1",
    "lea rdi, [rbx + {stub} + {ready}]",
    "mov esi, 1", // FUTEX_WAKE
    "mov edx, 0x7fffffff",
    "mov eax, 202",
    "syscall",
    "20:",
    "call 50f",
    "cmp eax, {enter}",
    "je 40f",
    "jmp 20b", // a Resume without a signal: nothing to resume
    // A failed start-up step: report it, leave (before the filter, exit_group is allowed).
    "90:",
    "or r12d, {failed}",
    "mov [rbx + {stub} + {ready}], r12d",
    "lea rdi, [rbx + {stub} + {ready}]",
    "mov esi, 1",
    "mov edx, 0x7fffffff",
    "mov eax, 202",
    "syscall",
    "mov edi, 70",
    "mov eax, 231", // exit_group
    "syscall",
    "ud2",
    // ---- enter the guest from the library's frame ------------------------------------------
    "40:",
    "call 60f", // the mapper has done what the entry needs (LDT, fills, flushes)
    // The entry timestamp comes before the timer is armed, so that a run the timer ends
    // measures at least its budget.
    "lea rsi, [rbx + {stub} + {enter_ts}]",
    "call 65f",
    // Arm the budget's timer (relative, one-shot). A failure is not checked here: the
    // library's own signal, a little after the budget, ends the run then.
    "mov edi, [rbx + {stub} + {timer_id}]",
    "xor esi, esi",
    "lea rdx, [rbx + {lib} + {budget}]",
    "xor r10d, r10d",
    "mov eax, 223", // timer_settime
    "syscall",
    "mov eax, [rbx + {lib} + {entry_id}]",
    "pushfq",
    "and dword ptr [rsp], 0xffdfffff",
    "or [rsp], rax",
    "popfq",
    "mov ax, [rbx + {lib} + {segs}]",
    "mov ds, ax",
    "mov ax, [rbx + {lib} + {segs} + 2]",
    "mov es, ax",
    "mov ax, [rbx + {lib} + {segs} + 4]",
    "mov fs, ax",
    "mov ax, [rbx + {lib} + {segs} + 6]",
    "mov gs, ax",
    "mov rax, [rbx + {lib} + {segs} + 8]",
    "wrfsbase rax",
    "mov rax, [rbx + {lib} + {segs} + 16]",
    "wrgsbase rax",
    // Scrub what the last exit left in S (its kernel frame on the alternate stack, above this
    // stack's lowest use, and the words published from it): this entry may be another guest
    // process's, which could read them natively. No stack is used from here on.
    "lea rdi, [rsp - 64]",
    "and rdi, -64",
    "lea rax, [rbx + {stub} + {altstack}]",
    "cmp rdi, rax",
    "cmovb rdi, rax",
    "lea rcx, [rbx + {stub} + {altstack} + {altstack_len}]",
    "sub rcx, rdi",
    "shr rcx, 3",
    "xor eax, eax",
    "rep stosq",
    "mov [rbx + {stub} + {sig}], eax",
    "mov [rbx + {stub} + {info}], rax",
    "mov [rbx + {stub} + {uc}], rax",
    "mov [rbx + {stub} + {ssegs}], rax",
    "mov [rbx + {stub} + {fs_base}], rax",
    "mov [rbx + {stub} + {gs_base}], rax",
    "lea rsp, [rbx + {lib} + {frame} + 8]",
    "mov eax, 15", // rt_sigreturn
    "syscall",
    "ud2",
    // ---- wait for a verdict: returns it in EAX (clobbers RCX, RDX, RSI, RDI, R8, R10, R11) --
    "50:",
    "mov ecx, [rbx + {stub} + {ack}]",
    "mov r8d, [rbx + {lib} + {spin}]",
    "51:",
    "mov eax, [rbx + {lib} + {req_seq}]",
    "cmp eax, ecx",
    "jne 55f",
    "test r8d, r8d",
    "jz 52f",
    "pause",
    "dec r8d",
    "jmp 51b",
    "52:",
    "mov dword ptr [rbx + {stub} + {sleeping}], 1",
    "mfence",
    "mov eax, [rbx + {lib} + {req_seq}]",
    "cmp eax, ecx",
    "jne 54f",
    "mov r8d, ecx",
    "lea rdi, [rbx + {lib} + {req_seq}]",
    "xor esi, esi", // FUTEX_WAIT (shared: the library waits on its own mapping)
    "mov edx, ecx",
    "xor r10d, r10d",
    "mov eax, 202",
    "syscall",
    "mov ecx, r8d",
    "mov eax, [rbx + {lib} + {req_seq}]",
    "cmp eax, ecx",
    "je 52b",
    "54:",
    "mov dword ptr [rbx + {stub} + {sleeping}], 0",
    "55:",
    "mov [rbx + {stub} + {ack}], eax",
    "mov eax, [rbx + {lib} + {verdict}]",
    "ret",
    // ---- wait until the mapper's done sequence reaches RESUME_AFTER: poll SPIN times, then
    // yield between polls (the mapper may need this CPU) --------------------------------------
    "60:",
    "mov r9d, [rbx + {lib} + {resume_after}]",
    "mov r8d, [rbx + {lib} + {spin}]",
    "61:",
    "mov eax, [rbx + {stub} + {map_done}]",
    "sub eax, r9d",
    "jns 63f",
    "test r8d, r8d",
    "jz 62f",
    "pause",
    "dec r8d",
    "jmp 61b",
    "62:",
    "mov eax, 24", // sched_yield
    "syscall",
    "jmp 61b",
    "63:",
    "ret",
    // ---- clock_gettime(CLOCK_MONOTONIC, RSI): the run's time, as the stub sees it (clobbers
    // RAX, RCX, RDI, R11) ------------------------------------------------------------------
    "65:",
    "mov edi, 1", // CLOCK_MONOTONIC
    "mov eax, 228", // clock_gettime
    "syscall",
    "ret",
    // ---- the signal handler (RDI signal, RSI siginfo, RDX ucontext; all signals blocked) ----
    ".globl plex86_stub_handler",
    "plex86_stub_handler:",
    // The kernel leaves EFLAGS.AC as the guest had it and the host runs with CR0.AM=1.
    "pushfq",
    "and dword ptr [rsp], 0xfffbffff",
    "popfq",
    "lea rbx, [rip + plex86_stub_begin]",
    "mov [rbx + {stub} + {sig}], edi",
    "mov [rbx + {stub} + {info}], rsi",
    "mov [rbx + {stub} + {uc}], rdx",
    "lea rsi, [rbx + {stub} + {signal_ts}]",
    "call 65b",
    "mov ax, ds",
    "mov [rbx + {stub} + {ssegs}], ax",
    "mov ax, es",
    "mov [rbx + {stub} + {ssegs} + 2], ax",
    "mov ax, fs",
    "mov [rbx + {stub} + {ssegs} + 4], ax",
    "mov ax, gs",
    "mov [rbx + {stub} + {ssegs} + 6], ax",
    "rdfsbase rax",
    "mov [rbx + {stub} + {fs_base}], rax",
    "rdgsbase rax",
    "mov [rbx + {stub} + {gs_base}], rax",
    "lock inc dword ptr [rbx + {stub} + {exit_seq}]",
    "cmp dword ptr [rbx + {lib} + {lib_sleeping}], 0",
    "je 70f",
    "lea rdi, [rbx + {stub} + {exit_seq}]",
    "mov esi, 1",
    "mov edx, 1",
    "mov eax, 202",
    "syscall",
    "70:",
    "call 50b",
    "cmp eax, {resume}",
    "jne 40b",
    "call 60b",
    "lea rsi, [rbx + {stub} + {resume_ts}]",
    "call 65b",
    "ret", // to the restorer
    ".globl plex86_stub_restorer",
    "plex86_stub_restorer:",
    "mov eax, 15",
    "syscall",
    "ud2",
    // ---- the mapper thread -----------------------------------------------------------------
    // fn plex86_stub_spawn_mapper() -> i64 (called in S by the launcher): clone a thread that
    // shares everything and runs the mapper loop; returns its TID or -errno.
    ".globl plex86_stub_spawn_mapper",
    "plex86_stub_spawn_mapper:",
    "push rbx",
    "lea rbx, [rip + plex86_stub_begin]",
    "mov edi, 0x50f00", // CLONE_VM|FS|FILES|SIGHAND|THREAD|SYSVSEM
    "lea rsi, [rbx + {stub} + {mapper_top}]",
    "xor edx, edx",
    "xor r10d, r10d",
    "xor r8d, r8d",
    "mov eax, 56", // clone
    "syscall",
    "test rax, rax",
    "jz 80f",
    "pop rbx",
    "ret",
    "80:",
    "lea rbx, [rip + plex86_stub_begin]",
    "mov edi, 2", // SIG_SETMASK
    "lea rsi, [rbx + {stub} + {all_signals}]",
    "xor edx, edx",
    "mov r10d, 8",
    "mov eax, 14", // rt_sigprocmask
    "syscall",
    "mov edi, 1",
    "xor esi, esi",
    "lea rdx, [rbx + {stub} + {fprog_mapper}]",
    "mov eax, 317",
    "syscall",
    "test rax, rax",
    "jnz 89f",
    // Loop: wait for MAP_SEQ to move past MAP_DONE, carry out the batch, publish.
    "81:",
    "mov r12d, [rbx + {stub} + {map_done}]",
    "mov r13d, [rbx + {lib} + {spin}]",
    "82:",
    "mov eax, [rbx + {lib} + {map_seq}]",
    "cmp eax, r12d",
    "jne 84f",
    "test r13d, r13d",
    "jz 83f",
    "pause",
    "dec r13d",
    "jmp 82b",
    "83:",
    "mov dword ptr [rbx + {stub} + {mapper_sleeping}], 1",
    "mfence",
    "mov eax, [rbx + {lib} + {map_seq}]",
    "cmp eax, r12d",
    "jne 84f",
    "lea rdi, [rbx + {lib} + {map_seq}]",
    "xor esi, esi",
    "mov edx, r12d",
    "xor r10d, r10d",
    "mov eax, 202",
    "syscall",
    "jmp 82b",
    "84:",
    "mov dword ptr [rbx + {stub} + {mapper_sleeping}], 0",
    "mov r13d, eax",
    "mov r14d, [rbx + {lib} + {map_count}]",
    "cmp r14d, {max_ops}",
    "ja 89f",
    "lea r15, [rbx + {lib} + {ops}]",
    "xor ebp, ebp",
    "85:",
    "test r14d, r14d",
    "jz 88f",
    "mov eax, [r15]",
    "mov rdi, [r15 + 8]",
    "mov rsi, [r15 + 16]",
    "mov edx, [r15 + 24]",
    "cmp eax, {op_mmap}",
    "jne 86f",
    "mov r10d, [r15 + 28]",
    "movsxd r8, dword ptr [r15 + 32]",
    "mov r9, [r15 + 40]",
    "mov eax, 9", // mmap
    "jmp 87f",
    "86:",
    "cmp eax, {op_munmap}",
    "mov eax, 11",
    "je 87f",
    "mov eax, [r15]",
    "cmp eax, {op_mprotect}",
    "mov eax, 10",
    "je 87f",
    "mov eax, [r15]",
    "cmp eax, {op_ldt}",
    "jne 89f",
    "mov edi, 0x11",
    "lea rsi, [r15 + 8]",
    "mov edx, 16",
    "mov eax, 154", // modify_ldt
    "87:",
    "syscall",
    "cmp rax, -4095",
    "jb 871f",
    "test ebp, ebp",
    "jnz 871f",
    "mov ebp, eax",
    "871:",
    "add r15, 48",
    "dec r14d",
    "jmp 85b",
    // Publish the batch as done; wake the guest thread if it sleeps for its verdict (the
    // library leaves that wake to the mapper when the verdict waits for a batch: one
    // hand-over fewer per fill), and the library if it sleeps.
    "88:",
    "mov [rbx + {stub} + {map_err}], ebp",
    "mov [rbx + {stub} + {map_done}], r13d",
    "mfence",
    "cmp dword ptr [rbx + {stub} + {sleeping}], 0",
    "je 881f",
    "lea rdi, [rbx + {lib} + {req_seq}]",
    "mov esi, 1",
    "mov edx, 1",
    "mov eax, 202",
    "syscall",
    "881:",
    "cmp dword ptr [rbx + {lib} + {lib_sleeping}], 0",
    "je 81b",
    "lea rdi, [rbx + {stub} + {map_done}]",
    "mov esi, 1",
    "mov edx, 1",
    "mov eax, 202",
    "syscall",
    "jmp 81b",
    // A malformed batch or a failed filter: the mapper ends (the library sees it never
    // finishes and stops the stub).
    "89:",
    "mov edi, 71",
    "mov eax, 60", // exit (this thread)
    "syscall",
    "ud2",
    ".globl plex86_stub_end",
    "plex86_stub_end:",
    ".popsection",
    stub = const stub::STUB,
    lib = const stub::LIB,
    idle_top = const by_stub::IDLE_STACK_TOP,
    unmap = const by_stub::UNMAP,
    fprog_guest = const by_stub::FPROG_GUEST,
    fprog_mapper = const by_stub::FPROG_MAPPER,
    ready = const by_stub::READY,
    failed = const stub::SETUP_FAILED,
    enter = const Verdict::Enter as u32,
    resume = const Verdict::Resume as u32,
    entry_id = const lib::ENTRY_ID,
    segs = const lib::SEGS,
    frame = const lib::FRAME,
    ack = const by_stub::ACK,
    spin = const lib::SPIN,
    req_seq = const lib::REQ_SEQ,
    sleeping = const by_stub::SLEEPING,
    verdict = const lib::VERDICT,
    resume_after = const lib::RESUME_AFTER,
    map_done = const by_stub::MAP_DONE,
    sig = const by_stub::SIG,
    info = const by_stub::INFO,
    uc = const by_stub::UC,
    ssegs = const by_stub::SEGS,
    fs_base = const by_stub::FS_BASE,
    gs_base = const by_stub::GS_BASE,
    exit_seq = const by_stub::EXIT_SEQ,
    lib_sleeping = const lib::LIB_SLEEPING,
    mapper_top = const by_stub::MAPPER_STACK_TOP,
    all_signals = const by_stub::ALL_SIGNALS,
    map_seq = const lib::MAP_SEQ,
    mapper_sleeping = const by_stub::MAPPER_SLEEPING,
    map_count = const lib::MAP_COUNT,
    max_ops = const stub::MAX_OPS,
    ops = const lib::OPS,
    op_mmap = const stub::OP_MMAP,
    op_munmap = const stub::OP_MUNMAP,
    op_mprotect = const stub::OP_MPROTECT,
    op_ldt = const stub::OP_LDT,
    map_err = const by_stub::MAP_ERR,
    enter_ts = const by_stub::ENTER_TS,
    signal_ts = const by_stub::SIGNAL_TS,
    resume_ts = const by_stub::RESUME_TS,
    timer_id = const by_stub::TIMER_ID,
    budget = const lib::BUDGET,
    altstack = const by_stub::ALTSTACK,
    altstack_len = const by_stub::ALTSTACK_LEN,
);

extern "C" {
    static plex86_stub_begin: u8;
    static plex86_stub_end: u8;
    fn plex86_stub_start() -> !;
    fn plex86_stub_handler();
    fn plex86_stub_restorer();
    fn plex86_stub_spawn_mapper() -> i64;
}

/// The stub's code as assembled into this binary, and the offsets of its entry points.
pub struct StubCode {
    /// The bytes to copy to S's code page.
    pub bytes: &'static [u8],
    /// Offset of `plex86_stub_start`.
    pub start: u64,
    /// Offset of the signal handler.
    pub handler: u64,
    /// Offset of the signal restorer.
    pub restorer: u64,
    /// Offset of `plex86_stub_spawn_mapper`.
    pub spawn_mapper: u64,
}

/// The stub's code.
pub fn code() -> StubCode {
    let begin = &raw const plex86_stub_begin as u64;
    let end = &raw const plex86_stub_end as u64;
    let off = |f: u64| f - begin;
    // SAFETY: the two symbols bound one contiguous block of this binary's text section
    // (between them only the code above), which is mapped readable for the process's life.
    let bytes =
        unsafe { std::slice::from_raw_parts(&raw const plex86_stub_begin, (end - begin) as usize) };
    StubCode {
        bytes,
        start: off(plex86_stub_start as *const () as u64),
        handler: off(plex86_stub_handler as *const () as u64),
        restorer: off(plex86_stub_restorer as *const () as u64),
        spawn_mapper: off(plex86_stub_spawn_mapper as *const () as u64),
    }
}
