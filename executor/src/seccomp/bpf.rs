//! The compiler from [`Rule`]s to a classic BPF program, and an interpreter that runs such a
//! program like the kernel (for the tests).

use super::policy::{
    ArgCheck, Rule, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, RET_ALLOW, RET_KILL_PROCESS, RET_TRAP,
    SYSCALL_IP_SLACK,
};

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;
const BPF_JGE_X: u16 = 0x3d;
const BPF_ADD_X: u16 = 0x0c;
const BPF_TAX: u16 = 0x07;

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

pub(super) fn ld(off: u32) -> SockFilter {
    SockFilter {
        code: BPF_LD_W_ABS,
        jt: 0,
        jf: 0,
        k: off,
    }
}
pub(super) fn jeq(k: u32, jt: u8, jf: u8) -> SockFilter {
    SockFilter {
        code: BPF_JEQ_K,
        jt,
        jf,
        k,
    }
}
pub(super) fn jge(k: u32, jt: u8, jf: u8) -> SockFilter {
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
pub(super) fn ret(k: u32) -> SockFilter {
    SockFilter {
        code: BPF_RET_K,
        jt: 0,
        jf: 0,
        k,
    }
}

pub(super) const OFF_NR: u32 = 0;
pub(super) const OFF_ARCH: u32 = 4;
pub(super) const OFF_IP_LO: u32 = 8;
pub(super) const OFF_IP_HI: u32 = 12;
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

/// Kills unless `[addr, addr + len)` (arguments `addr` and `len`) stays clear of the 4 GiB
/// block whose upper half is `hi`, with both arguments below 2^47. Classic BPF arithmetic is
/// 32-bit, so the range is judged by its halves: above the block when `addr_hi > hi`; below
/// it when `addr_hi + len_hi <= hi - 2`, or when it is `hi - 1` and the low halves add up to at
/// most 2^32 (the carry test of [`ArgCheck::RangeBelow4G`]). A range ending exactly at the
/// block with both low halves zero is refused too (no mirror op makes one).
fn range_clear_of_block(block: &mut Vec<SockFilter>, addr: u8, len: u8, hi: u32) {
    const USER_HI: u32 = 0x8000;
    assert!(
        (1..USER_HI - 1).contains(&hi),
        "a block in user space above 4 GiB"
    );
    // Offsets below are to KILL (index 16) and OK (17, the code after this check).
    block.extend([
        ld(off_arg_hi(len)),  // 0
        jge(USER_HI, 14, 0),  // 1: → KILL
        ld(off_arg_hi(addr)), // 2
        jge(USER_HI, 12, 0),  // 3: → KILL
        jge(hi + 1, 12, 0),   // 4: above the block → OK
        op(BPF_TAX),          // 5: X = addr_hi
        ld(off_arg_hi(len)),  // 6
        op(BPF_ADD_X),        // 7: A = addr_hi + len_hi (< 2^16: no overflow)
        jge(hi, 7, 0),        // 8: reaches the block → KILL
        jge(hi - 1, 0, 7),    // 9: ≤ hi - 2 → OK; hi - 1: the carry decides
        ld(off_arg_lo(addr)), // 10
        op(BPF_TAX),          // 11
        ld(off_arg_lo(len)),  // 12
        op(BPF_ADD_X),        // 13
        jeq(0, 2, 0),         // 14: exactly 2^32 → OK
        SockFilter {
            code: BPF_JGE_X,
            jt: 1,
            jf: 0,
            k: 0,
        }, // 15: no carry → OK
        ret(RET_KILL_PROCESS), // 16: KILL
    ]);
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
    push_rules(&mut p, policy, None);
    p
}

/// Appends one block per rule (allow when the number matches and the arguments pass, kill
/// when they do not), then the final kill. `stub_block`: the upper half of the stub's
/// reserved block, for [`ArgCheck::RangeClearOfStub`].
pub(super) fn push_rules(p: &mut Vec<SockFilter>, policy: &[Rule], stub_block: Option<u32>) {
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
                ArgCheck::RangeClearOfStub(addr, len) => {
                    let hi = stub_block.expect("a filter built for one stub");
                    range_clear_of_block(&mut block, addr, len, hi);
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
