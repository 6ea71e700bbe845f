//! The executor's seccomp policy, as data ([`POLICY`]), compiled to a classic BPF program
//! ([`build_filter`]) and checked by a small BPF interpreter ([`evaluate`]) in unit tests.
//!
//! Program outline:
//! 1. arch I386 (int 0x80, SYSCALL/SYSENTER from compatibility mode): `RET_TRAP`. The system
//!    call never runs on the host; the SIGSYS becomes a guest exit.
//! 2. arch other than X86_64: kill the process.
//! 3. instruction pointer below 4 GiB + [`SYSCALL_IP_SLACK`] (only guest code lives below 4 GiB,
//!    and the kernel reports the address *after* the instruction, which for one that starts
//!    below 4 GiB can be up to 4 GiB + 14): `RET_TRAP`, reported as a guest escape.
//! 4. x32 numbers: kill.
//! 5. the allowlist, with argument checks where a rule has them: allow.
//! 6. anything else: kill the process (the library reports "seccomp violation").

/// `AUDIT_ARCH_I386`.
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// `AUDIT_ARCH_X86_64`.
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `SECCOMP_RET_KILL_PROCESS`.
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// `SECCOMP_RET_TRAP`.
pub const RET_TRAP: u32 = 0x0003_0000;
/// `SECCOMP_RET_ALLOW`.
pub const RET_ALLOW: u32 = 0x7fff_0000;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;
const BPF_JGE_X: u16 = 0x3d;
const BPF_ADD_X: u16 = 0x0c;
const BPF_TAX: u16 = 0x07;

/// Rule 3 traps every system call whose reported instruction pointer is below 4 GiB + this.
/// seccomp sees the address after the instruction, and an x86 instruction is at most 15 bytes
/// long: a `syscall` starting at the last guest byte (0xffffffff) reports at most
/// 4 GiB + 14 (2-byte `0f 05` at 0xfffffffe reports exactly 4 GiB). Executor code never lives
/// in the first page above 4 GiB (its mappings are placed by the kernel, far higher).
pub const SYSCALL_IP_SLACK: u32 = 15;

/// One classic BPF instruction (`struct sock_filter`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockFilter {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Constant.
    pub k: u32,
}

/// An argument condition of a rule (on the 64-bit system call argument `arg`).
#[derive(Clone, Copy, Debug)]
pub enum ArgCheck {
    /// The upper 32 bits of the argument are zero (an address or length below 4 GiB).
    Below4G(u8),
    /// The lower 32 bits equal one of the values.
    LowIn(u8, &'static [u32]),
    /// The range of the address argument `.0` and the length argument `.1` lies below 4 GiB:
    /// both are below 4 GiB and their sum is at most 4 GiB.
    RangeBelow4G(u8, u8),
}

/// One allowlisted system call.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    /// x86-64 system call number.
    pub nr: u32,
    /// Name, for messages.
    pub name: &'static str,
    /// Why the executor needs it.
    pub why: &'static str,
    /// Conditions on the arguments (all must hold).
    pub args: &'static [ArgCheck],
}

/// `MAP_ANONYMOUS` mappings pass -1 as fd.
const FD_NONE: u32 = u32::MAX;

/// The allowlist. Nothing here opens files or sockets or creates processes.
pub const POLICY: &[Rule] = &[
    Rule {
        nr: 202,
        name: "futex",
        why: "wait for requests / wake the library on the control-region sequence words",
        args: &[],
    },
    Rule {
        nr: 15,
        name: "rt_sigreturn",
        why: "return from the signal handler to the guest, and enter the guest",
        args: &[],
    },
    Rule {
        nr: 9,
        name: "mmap",
        why:
            "demand-map guest pages (RAM fd) and unmap them (anonymous PROT_NONE), below 4 GiB only",
        args: &[
            ArgCheck::RangeBelow4G(0, 1),
            ArgCheck::LowIn(4, &[plex86_protocol::RAM_FD as u32, FD_NONE]),
        ],
    },
    Rule {
        nr: 10,
        name: "mprotect",
        why: "write-protect mirrored code pages, below 4 GiB only",
        args: &[ArgCheck::RangeBelow4G(0, 1)],
    },
    Rule {
        nr: 154,
        name: "modify_ldt",
        why: "install the guest's segment descriptors as LDT entries (write mode 0x11 only)",
        args: &[ArgCheck::LowIn(0, &[0x11])],
    },
    Rule {
        nr: 223,
        name: "timer_settime",
        why: "arm and disarm the budget timer",
        args: &[],
    },
    Rule {
        nr: 224,
        name: "timer_gettime",
        why: "tell the budget timer's own expiry from a stale signal of an earlier run",
        args: &[],
    },
    Rule {
        nr: 228,
        name: "clock_gettime",
        why: "measure native time (the vDSO cannot be used: RDTSC is disabled)",
        args: &[],
    },
    Rule {
        nr: 24,
        name: "sched_yield",
        why: "let the library run while polling for a request on a shared CPU",
        args: &[],
    },
    Rule {
        nr: 60,
        name: "exit",
        why: "leave",
        args: &[],
    },
    Rule {
        nr: 231,
        name: "exit_group",
        why: "leave (shutdown, panic, guest escape)",
        args: &[],
    },
];

fn ld(off: u32) -> SockFilter {
    SockFilter {
        code: BPF_LD_W_ABS,
        jt: 0,
        jf: 0,
        k: off,
    }
}
fn jeq(k: u32, jt: u8, jf: u8) -> SockFilter {
    SockFilter {
        code: BPF_JEQ_K,
        jt,
        jf,
        k,
    }
}
fn jge(k: u32, jt: u8, jf: u8) -> SockFilter {
    SockFilter {
        code: BPF_JGE_K,
        jt,
        jf,
        k,
    }
}
fn op(code: u16) -> SockFilter {
    SockFilter {
        code,
        jt: 0,
        jf: 0,
        k: 0,
    }
}
fn ret(k: u32) -> SockFilter {
    SockFilter {
        code: BPF_RET_K,
        jt: 0,
        jf: 0,
        k,
    }
}

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_IP_LO: u32 = 8;
const OFF_IP_HI: u32 = 12;
fn off_arg_lo(a: u8) -> u32 {
    16 + 8 * u32::from(a)
}
fn off_arg_hi(a: u8) -> u32 {
    off_arg_lo(a) + 4
}

/// Kills unless the upper 32 bits of argument `a` are zero.
fn below_4g(block: &mut Vec<SockFilter>, a: u8) {
    block.push(ld(off_arg_hi(a)));
    block.push(jeq(0, 1, 0));
    block.push(ret(RET_KILL_PROCESS));
}

/// Compiles `policy` into a BPF program.
pub fn build_filter(policy: &[Rule]) -> Vec<SockFilter> {
    let mut p = vec![
        ld(OFF_ARCH),
        jeq(AUDIT_ARCH_I386, 0, 1),
        ret(RET_TRAP),
        jeq(AUDIT_ARCH_X86_64, 1, 0),
        ret(RET_KILL_PROCESS),
        // Rule 3: trap if IP < 4 GiB + SYSCALL_IP_SLACK (high word 0, or 1 with a small low
        // word).
        ld(OFF_IP_HI),
        jeq(0, 3, 0),
        jeq(1, 0, 3),
        ld(OFF_IP_LO),
        jge(SYSCALL_IP_SLACK, 1, 0),
        ret(RET_TRAP),
        ld(OFF_NR),
        jge(0x4000_0000, 0, 1),
        ret(RET_KILL_PROCESS),
    ];
    for rule in policy {
        let mut block = Vec::new();
        for check in rule.args {
            match *check {
                ArgCheck::Below4G(a) => below_4g(&mut block, a),
                ArgCheck::RangeBelow4G(addr, len) => {
                    below_4g(&mut block, addr);
                    below_4g(&mut block, len);
                    // Classic BPF arithmetic is 32-bit: X = addr, A = addr + len (mod 2^32).
                    // Without a carry A >= addr; a carry leaves A < addr (len > 0), and the
                    // sum is 4 GiB exactly when A wrapped to 0.
                    block.push(ld(off_arg_lo(addr)));
                    block.push(op(BPF_TAX));
                    block.push(ld(off_arg_lo(len)));
                    block.push(op(BPF_ADD_X));
                    block.push(jeq(0, 2, 0));
                    block.push(SockFilter {
                        code: BPF_JGE_X,
                        jt: 1,
                        jf: 0,
                        k: 0,
                    });
                    block.push(ret(RET_KILL_PROCESS));
                }
                ArgCheck::LowIn(a, vals) => {
                    block.push(ld(off_arg_lo(a)));
                    let n = vals.len();
                    for (i, v) in vals.iter().enumerate() {
                        let to_ok = u8::try_from(n - i).expect("small value set");
                        block.push(jeq(*v, to_ok, 0));
                    }
                    block.push(ret(RET_KILL_PROCESS));
                }
            }
        }
        block.push(ret(RET_ALLOW));
        p.push(ld(OFF_NR));
        p.push(jeq(
            rule.nr,
            0,
            u8::try_from(block.len()).expect("rule block too long"),
        ));
        p.extend(block);
    }
    p.push(ret(RET_KILL_PROCESS));
    p
}

/// The input of a filter (`struct seccomp_data`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SeccompData {
    /// System call number.
    pub nr: u32,
    /// AUDIT_ARCH_* value.
    pub arch: u32,
    /// Instruction pointer.
    pub ip: u64,
    /// Arguments.
    pub args: [u64; 6],
}

impl SeccompData {
    fn word(&self, off: u32) -> Option<u32> {
        Some(match off {
            0 => self.nr,
            4 => self.arch,
            8 => self.ip as u32,
            12 => (self.ip >> 32) as u32,
            16..=63 if off % 4 == 0 => {
                let a = self.args[((off - 16) / 8) as usize];
                if off % 8 == 0 {
                    a as u32
                } else {
                    (a >> 32) as u32
                }
            }
            _ => return None,
        })
    }
}

/// Runs `prog` on `data` like the kernel would; `None` for a malformed program.
pub fn evaluate(prog: &[SockFilter], data: &SeccompData) -> Option<u32> {
    let mut acc = 0u32;
    let mut x = 0u32;
    let mut pc = 0usize;
    loop {
        let ins = prog.get(pc)?;
        pc += 1;
        match ins.code {
            BPF_LD_W_ABS => acc = data.word(ins.k)?,
            BPF_JEQ_K => pc += usize::from(if acc == ins.k { ins.jt } else { ins.jf }),
            BPF_JGE_K => pc += usize::from(if acc >= ins.k { ins.jt } else { ins.jf }),
            BPF_JGE_X => pc += usize::from(if acc >= x { ins.jt } else { ins.jf }),
            BPF_TAX => x = acc,
            BPF_ADD_X => acc = acc.wrapping_add(x),
            BPF_RET_K => return Some(ins.k),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(arch: u32, nr: u32, ip: u64, args: [u64; 6]) -> SeccompData {
        SeccompData { nr, arch, ip, args }
    }

    const HI: u64 = 0x5555_0000_1000;

    #[test]
    fn filter_decisions_table() {
        let prog = build_filter(POLICY);
        assert!(prog.len() < 200);
        let anon = u64::MAX; // fd -1
        let cases: &[(SeccompData, u32, &str)] = &[
            (
                data(AUDIT_ARCH_I386, 20, 0x1000, [0; 6]),
                RET_TRAP,
                "i386 getpid from guest",
            ),
            (
                data(AUDIT_ARCH_I386, 1, HI, [0; 6]),
                RET_TRAP,
                "i386 from 64-bit code",
            ),
            (
                data(0x4000_0028, 0, HI, [0; 6]),
                RET_KILL_PROCESS,
                "arm arch",
            ),
            (
                data(AUDIT_ARCH_X86_64, 39, 0x40_1000, [0; 6]),
                RET_TRAP,
                "64-bit getpid below 4G",
            ),
            (
                data(AUDIT_ARCH_X86_64, 202, 0xffff_f000, [0; 6]),
                RET_TRAP,
                "futex below 4G",
            ),
            (data(AUDIT_ARCH_X86_64, 202, HI, [0; 6]), RET_ALLOW, "futex"),
            (
                data(AUDIT_ARCH_X86_64, 15, HI, [0; 6]),
                RET_ALLOW,
                "rt_sigreturn",
            ),
            (
                data(AUDIT_ARCH_X86_64, 0x4000_0000 + 202, HI, [0; 6]),
                RET_KILL_PROCESS,
                "x32",
            ),
            (
                data(AUDIT_ARCH_X86_64, 39, HI, [0; 6]),
                RET_KILL_PROCESS,
                "getpid",
            ),
            (
                data(AUDIT_ARCH_X86_64, 257, HI, [0; 6]),
                RET_KILL_PROCESS,
                "openat",
            ),
            (
                data(AUDIT_ARCH_X86_64, 41, HI, [0; 6]),
                RET_KILL_PROCESS,
                "socket",
            ),
            (
                data(AUDIT_ARCH_X86_64, 56, HI, [0; 6]),
                RET_KILL_PROCESS,
                "clone",
            ),
            (
                data(AUDIT_ARCH_X86_64, 59, HI, [0; 6]),
                RET_KILL_PROCESS,
                "execve",
            ),
            (
                data(AUDIT_ARCH_X86_64, 1, HI, [2, 0, 0, 0, 0, 0]),
                RET_KILL_PROCESS,
                "write",
            ),
            (
                data(
                    AUDIT_ARCH_X86_64,
                    9,
                    HI,
                    [0x40_0000, 4096, 7, 0x11, 3, 0x5000],
                ),
                RET_ALLOW,
                "mmap ram fd",
            ),
            (
                data(
                    AUDIT_ARCH_X86_64,
                    9,
                    HI,
                    [0x1000, 0xffff_f000, 0, 0x4032, anon, 0],
                ),
                RET_ALLOW,
                "mmap reserve",
            ),
            (
                data(AUDIT_ARCH_X86_64, 9, HI, [HI, 4096, 7, 0x22, anon, 0]),
                RET_KILL_PROCESS,
                "mmap above 4G",
            ),
            (
                data(
                    AUDIT_ARCH_X86_64,
                    9,
                    HI,
                    [0x1000, 1 << 33, 7, 0x22, anon, 0],
                ),
                RET_KILL_PROCESS,
                "mmap huge length",
            ),
            (
                data(AUDIT_ARCH_X86_64, 9, HI, [0x1000, 4096, 7, 0x11, 4, 0]),
                RET_KILL_PROCESS,
                "mmap control fd",
            ),
            (
                data(AUDIT_ARCH_X86_64, 10, HI, [0x1000, 4096, 1, 0, 0, 0]),
                RET_ALLOW,
                "mprotect",
            ),
            (
                data(AUDIT_ARCH_X86_64, 10, HI, [HI, 4096, 7, 0, 0, 0]),
                RET_KILL_PROCESS,
                "mprotect hi",
            ),
            (
                data(AUDIT_ARCH_X86_64, 154, HI, [0x11, 0, 16, 0, 0, 0]),
                RET_ALLOW,
                "modify_ldt w",
            ),
            (
                data(AUDIT_ARCH_X86_64, 154, HI, [0, 0, 16, 0, 0, 0]),
                RET_KILL_PROCESS,
                "modify_ldt r",
            ),
            (
                data(AUDIT_ARCH_X86_64, 223, HI, [0; 6]),
                RET_ALLOW,
                "timer_settime",
            ),
            (
                data(AUDIT_ARCH_X86_64, 224, HI, [0; 6]),
                RET_ALLOW,
                "timer_gettime",
            ),
            (
                data(AUDIT_ARCH_X86_64, 228, HI, [0; 6]),
                RET_ALLOW,
                "clock_gettime",
            ),
            (
                data(AUDIT_ARCH_X86_64, 231, HI, [0; 6]),
                RET_ALLOW,
                "exit_group",
            ),
            (data(AUDIT_ARCH_X86_64, 60, HI, [0; 6]), RET_ALLOW, "exit"),
            (
                data(AUDIT_ARCH_X86_64, 62, HI, [0; 6]),
                RET_KILL_PROCESS,
                "kill",
            ),
        ];
        for (d, want, what) in cases {
            assert_eq!(evaluate(&prog, d), Some(*want), "{what}");
        }
    }

    /// The edges of rule 3 and of the mmap/mprotect range checks.
    #[test]
    fn boundary_decisions() {
        let prog = build_filter(POLICY);
        const G4: u64 = 1 << 32;
        let anon = u64::MAX;
        // A system call instruction reports the address after it. One that starts in guest
        // memory (below 4 GiB) ends at most 15 bytes later (prefixes included): 2-byte
        // `syscall` at 0xfffffffe / 0xffffffff reports 4G / 4G+1; a 15-byte prefixed one at
        // 0xffffffff reports 4G+14. All of them must trap, even for allowlisted numbers.
        for (ip, want) in [
            (0xffff_fffe, RET_TRAP),
            (0xffff_ffff, RET_TRAP),
            (G4, RET_TRAP),
            (G4 + 1, RET_TRAP),
            (G4 + 2, RET_TRAP),
            (G4 + 14, RET_TRAP),
            (G4 + 15, RET_ALLOW),
            (G4 + 0x1000, RET_ALLOW),
            (2 * G4, RET_ALLOW),
            (2 * G4 + 1, RET_ALLOW),
        ] {
            for nr in [202, 24, 228] {
                let d = data(AUDIT_ARCH_X86_64, nr, ip, [0; 6]);
                assert_eq!(evaluate(&prog, &d), Some(want), "nr {nr} ip {ip:#x}");
            }
        }
        let mmap =
            |addr: u64, len: u64| data(AUDIT_ARCH_X86_64, 9, HI, [addr, len, 0, 0x32, anon, 0]);
        let mprotect =
            |addr: u64, len: u64| data(AUDIT_ARCH_X86_64, 10, HI, [addr, len, 0, 0, 0, 0]);
        for (addr, len, want, what) in [
            (0xffff_f000, 0x1000, RET_ALLOW, "ends exactly at 4G"),
            (0x1000, G4 - 0x1000, RET_ALLOW, "the whole mirror region"),
            (
                0xffff_e000,
                0xfff,
                RET_ALLOW,
                "ends below 4G, unaligned length",
            ),
            (0xffff_f000, 0x1001, RET_KILL_PROCESS, "one byte past 4G"),
            (0xffff_f000, 0x2000, RET_KILL_PROCESS, "one page past 4G"),
            (
                0x2000,
                G4 - 0x1000,
                RET_KILL_PROCESS,
                "one page past 4G, from low",
            ),
            (
                0xffff_f000,
                0xffff_f000,
                RET_KILL_PROCESS,
                "huge length wrapping",
            ),
            (
                0xffff_ffff,
                0xffff_ffff,
                RET_KILL_PROCESS,
                "largest 32-bit sum",
            ),
            (
                0x1000,
                0xffff_ffff,
                RET_KILL_PROCESS,
                "wraps to just below the start",
            ),
            (0, 0, RET_ALLOW, "empty"),
            (0x1000, G4, RET_KILL_PROCESS, "length of 4G"),
            (G4, 0x1000, RET_KILL_PROCESS, "starts at 4G"),
        ] {
            assert_eq!(
                evaluate(&prog, &mmap(addr, len)),
                Some(want),
                "mmap: {what}"
            );
            assert_eq!(
                evaluate(&prog, &mprotect(addr, len)),
                Some(want),
                "mprotect: {what}"
            );
        }
    }

    #[test]
    fn every_rule_is_reachable_and_documented() {
        let prog = build_filter(POLICY);
        for r in POLICY {
            assert!(!r.why.is_empty());
            let mut d = data(AUDIT_ARCH_X86_64, r.nr, HI, [0; 6]);
            // Satisfy the argument checks.
            for c in r.args {
                if let ArgCheck::LowIn(a, v) = c {
                    d.args[usize::from(*a)] = u64::from(v[0]);
                }
            }
            assert_eq!(evaluate(&prog, &d), Some(RET_ALLOW), "{}", r.name);
        }
    }
}
