//! The monitor over a fake host: demand fills without a process, kernel or page tables of our
//! own.

use super::{GuestRam, Host, HostParams, Monitor};
use crate::frame::{FpxSwBytes, KStack, KUcontext, SignalAction, SignalContext, UserDesc};
use crate::shadow::MirrorOps;
use crate::vector;
use guest_paging::Access;
use guest_paging::PhysMemory;
use plex86_protocol::{gpr, seg, Segment, EFER_LMA};
use plex86_protocol::{EscapeKind, ExitReason, GuestState, RamRange};
use std::cell::RefCell;

const RAM_SIZE: u64 = 0x10_0000;

/// Guest RAM in a vector.
struct FakeRam(RefCell<Vec<u8>>);

impl FakeRam {
    fn write_u32(&self, pa: u64, v: u32) {
        let pa = pa as usize;
        self.0.borrow_mut()[pa..pa + 4].copy_from_slice(&v.to_le_bytes());
    }
}

impl PhysMemory for FakeRam {
    fn read_u32(&self, pa: u64) -> Option<u32> {
        let m = self.0.borrow();
        let b = m.get(pa as usize..pa as usize + 4)?;
        Some(u32::from_le_bytes(b.try_into().unwrap()))
    }
    fn read_u64(&self, pa: u64) -> Option<u64> {
        let lo = self.read_u32(pa)?;
        let hi = self.read_u32(pa + 4)?;
        Some(u64::from(lo) | (u64::from(hi) << 32))
    }
    fn cmpxchg_u32(&self, pa: u64, old: u32, new: u32) -> Option<bool> {
        let ok = self.read_u32(pa)? == old;
        if ok {
            self.write_u32(pa, new);
        }
        Some(ok)
    }
    fn cmpxchg_u64(&self, pa: u64, old: u64, new: u64) -> Option<bool> {
        let ok = self.read_u64(pa)? == old;
        if ok {
            self.write_u32(pa, new as u32);
            self.write_u32(pa + 4, (new >> 32) as u32);
        }
        Some(ok)
    }
}

impl GuestRam for FakeRam {
    fn read(&self, pa: u64, buf: &mut [u8]) -> bool {
        let m = self.0.borrow();
        let Some(src) = m.get(pa as usize..pa as usize + buf.len()) else {
            return false;
        };
        buf.copy_from_slice(src);
        true
    }
}

/// Records the mirror's mappings; fails the next `map` with ENOMEM when asked to.
#[derive(Default)]
struct FakeHost {
    maps: Vec<(u64, u64, i32)>,
    unmap_alls: u32,
    enomem_once: bool,
    now: std::cell::Cell<u64>,
}

impl MirrorOps for FakeHost {
    fn map(&mut self, lin: u64, phys: u64, prot: i32) -> Result<(), i32> {
        if std::mem::take(&mut self.enomem_once) {
            return Err(libc::ENOMEM);
        }
        self.maps.push((lin, phys, prot));
        Ok(())
    }
    fn unmap(&mut self, _lin: u64, _pages: u32) -> Result<(), i32> {
        Ok(())
    }
    fn unmap_all(&mut self) -> Result<(), i32> {
        self.unmap_alls += 1;
        Ok(())
    }
    fn protect(&mut self, _lin: u64, _prot: i32) -> Result<(), i32> {
        Ok(())
    }
}

impl Host for FakeHost {
    const MIRROR_START: u64 = 0x1000;
    fn write_ldt(&mut self, _d: &UserDesc) -> Result<(), i32> {
        Ok(())
    }
    fn clock_ns(&self, _clock: i32) -> u64 {
        self.now.set(self.now.get() + 100);
        self.now.get()
    }
    fn timer_pending(&self, _timer: i32) -> bool {
        false
    }
}

const CR3: u64 = 0x1000;
const PT: u64 = 0x2000;
/// Linear page `0x5000 + i * 0x1000` maps physical `0x10000 + i * 0x1000` (2-level paging,
/// user, writable).
fn monitor() -> Box<Monitor<FakeRam, FakeHost>> {
    let ram = FakeRam(RefCell::new(vec![0; RAM_SIZE as usize]));
    ram.write_u32(CR3, PT as u32 | 7);
    for i in 0..4u64 {
        ram.write_u32(PT + (5 + i) * 4, (0x10000 + i * 0x1000) as u32 | 7);
    }
    let params = HostParams {
        sw: FpxSwBytes {
            extended_size: 580,
            xfeatures: 3,
            xstate_size: 576,
        },
        altstack: KStack::default(),
        clock: 1,
        timer: 0,
        vdso: 0,
        amd: false,
    };
    let ranges = [RamRange {
        start: 0,
        end: RAM_SIZE,
    }];
    let mut m = Monitor::new(ram, FakeHost::default(), RAM_SIZE, &ranges, params);
    m.entry = GuestState {
        cr0: 0x8000_0011,
        cr3: CR3,
        ..GuestState::default()
    };
    m.prepare_entry().unwrap();
    m.in_guest = true;
    m
}

/// A user-mode read of `lin` that missed the mirror, as the kernel delivers it.
fn read_fault(m: &mut Monitor<FakeRam, FakeHost>, lin: u32) -> SignalAction {
    let mut uc = KUcontext::default();
    uc.mc.trapno = vector::PF;
    uc.mc.err = 4;
    uc.mc.cr2 = u64::from(lin);
    uc.mc.rip = u64::from(lin);
    uc.mc.cs = 0x0f;
    let mut ctx = SignalContext {
        sig: libc::SIGSEGV,
        code: 1, // SEGV_MAPERR: from the kernel
        call_addr: 0,
        syscall: 0,
        arch: 0,
        uc: &mut uc,
        data_segs: [0; 4],
        seg_bases: None,
        fpstate: None,
    };
    m.on_signal(&mut ctx)
}

#[test]
fn a_fill_resumes_the_guest() {
    let mut m = monitor();
    assert_eq!(read_fault(&mut m, 0x5123), SignalAction::Resume);
    assert_eq!(m.host.maps.len(), 1);
    let (lin, phys, _) = m.host.maps[0];
    assert_eq!((lin, phys), (0x5000, 0x10000));
    assert_eq!(m.exit.demand_fills, 1);
    assert!(m.exit.fill_ns > 0, "the fill is charged to host time");
}

#[test]
fn the_fill_limit_ends_the_run_with_the_page_mirrored() {
    let mut m = monitor();
    m.max_fills = 2;
    assert_eq!(read_fault(&mut m, 0x5000), SignalAction::Resume);
    assert_eq!(read_fault(&mut m, 0x6000), SignalAction::ExitToHost);
    assert_eq!(m.exit.reason, ExitReason::FillLimit);
    assert!(m.exit_set);
    assert_eq!(m.host.maps.len(), 2);
    assert_eq!(m.exit_state.rip, 0x6000, "the faulting access re-executes");
}

#[test]
fn enomem_flushes_the_mirror_and_retries() {
    let mut m = monitor();
    m.host.enomem_once = true;
    assert_eq!(read_fault(&mut m, 0x7000), SignalAction::Resume);
    assert_eq!(m.host.unmap_alls, 1);
    assert_eq!(m.host.maps, [(0x7000, 0x12000, m.host.maps[0].2)]);
}

#[test]
fn an_unmapped_page_exits_as_a_guest_page_fault() {
    let mut m = monitor();
    assert_eq!(read_fault(&mut m, 0x9000), SignalAction::ExitToHost);
    assert!(
        matches!(
            m.exit.reason,
            ExitReason::PageFault {
                linear: 0x9000,
                access: Access::Read,
                ..
            }
        ),
        "{:?}",
        m.exit.reason
    );
    assert!(m.host.maps.is_empty());
}

#[test]
fn fill_ahead_mirrors_only_pages_the_guest_has_used_and_sets_no_bit() {
    let mut m = monitor();
    m.fill_ahead = 8;
    // Pages 5..8 are mapped: 6 accessed and dirty, 7 accessed, 8 not accessed.
    m.ram.write_u32(PT + 6 * 4, 0x11000 | 7 | 0x20 | 0x40);
    m.ram.write_u32(PT + 7 * 4, 0x12000 | 7 | 0x20);
    m.ram.write_u32(PT + 8 * 4, 0x13000 | 7);
    m.ram.write_u32(CR3, PT as u32 | 7 | 0x20);
    let before: Vec<u32> = (6..9)
        .map(|i| m.ram.read_u32(PT + i * 4).unwrap())
        .collect();
    assert_eq!(read_fault(&mut m, 0x5000), SignalAction::Resume);
    let lins: Vec<(u64, u64)> = m.host.maps.iter().map(|&(l, p, _)| (l, p)).collect();
    assert_eq!(
        lins,
        [(0x5000, 0x10000), (0x6000, 0x11000), (0x7000, 0x12000)]
    );
    let prot = |i: usize| m.host.maps[i].2;
    assert_ne!(
        prot(1) & crate::shadow::PROT_WRITE,
        0,
        "accessed and dirty: writable"
    );
    assert_eq!(
        prot(2) & crate::shadow::PROT_WRITE,
        0,
        "clean: read-only until written"
    );
    let after: Vec<u32> = (6..9)
        .map(|i| m.ram.read_u32(PT + i * 4).unwrap())
        .collect();
    assert_eq!(
        before, after,
        "no A/D bit set on pages the guest has not touched"
    );
    assert_eq!(m.exit.demand_fills, 1, "one fault, one fill");
}

#[test]
fn without_fill_ahead_a_fill_maps_one_page() {
    let mut m = monitor();
    m.ram.write_u32(PT + 6 * 4, 0x11000 | 7 | 0x20 | 0x40);
    m.ram.write_u32(CR3, PT as u32 | 7 | 0x20);
    assert_eq!(read_fault(&mut m, 0x5000), SignalAction::Resume);
    assert_eq!(m.host.maps.len(), 1);
}

/// The budget timer's signal over the registers in `uc`, as the kernel delivers it.
fn budget_signal(m: &mut Monitor<FakeRam, FakeHost>, uc: &mut KUcontext) -> SignalAction {
    let mut ctx = SignalContext {
        sig: libc::SIGALRM,
        code: libc::SI_TIMER,
        call_addr: 0,
        syscall: 0,
        arch: 0,
        uc,
        data_segs: [0; 4],
        seg_bases: None,
        fpstate: None,
    };
    m.on_signal(&mut ctx)
}

#[test]
fn a_32_bit_exit_keeps_the_low_halves_and_the_entrys_r8_to_r15() {
    let mut m = monitor();
    assert_eq!(
        m.frame.uc.mc.r, [0; 8],
        "32-bit code enters with R8..R15 zero"
    );
    let mut uc = KUcontext::default();
    // Upper halves and R8..R15 as a host could show them: none of it is the 32-bit guest's.
    uc.mc.rax = 0xdead_beef_1234_5678;
    uc.mc.rdi = 0x1_0000_0007;
    uc.mc.r = [0x5555_5555_5555_5555; 8];
    uc.mc.rip = 0x0804_8000;
    uc.mc.eflags = 0x1_0000_0246 | 1 << 16;
    assert_eq!(budget_signal(&mut m, &mut uc), SignalAction::ExitToHost);
    assert_eq!(m.exit.reason, ExitReason::BudgetExpired);
    let st = &m.exit_state;
    assert_eq!((st.gprs[gpr::EAX], st.gprs[gpr::EDI]), (0x1234_5678, 7));
    assert_eq!(st.gprs[gpr::R8..], [0; 8]);
    assert_eq!((st.rip, st.rflags), (0x0804_8000, 0x246), "RF cleared");
}

#[test]
fn a_64_bit_state_enters_and_leaves_with_all_sixteen_registers_whole() {
    let mut m = monitor();
    m.entry.efer = EFER_LMA | 1 << 8;
    m.entry.segs[seg::CS] = Segment::flat_code64(0x33);
    m.entry.segs[seg::SS] = Segment::flat_data(0x2b);
    m.entry.gprs = std::array::from_fn(|i| 0x0123_4567_0000_0000 * (i as u64 + 1) + i as u64);
    m.entry.rip = 0x7fff_1234_5000;
    m.entry.rflags = 0x246;
    m.prepare_entry().unwrap();
    let mc = &m.frame.uc.mc;
    assert_eq!(mc.rax, m.entry.gprs[gpr::EAX]);
    assert_eq!(mc.rdi, m.entry.gprs[gpr::EDI]);
    assert_eq!(mc.r[..], m.entry.gprs[gpr::R8..]);
    assert_eq!((mc.rip, mc.eflags), (0x7fff_1234_5000, 0x246));

    let mut uc = KUcontext::default();
    uc.mc.rax = 0xdead_beef_1234_5678;
    uc.mc.rsp = 0x7fff_ffff_e000;
    uc.mc.r = std::array::from_fn(|i| 0x8000_0000_0000_0000 | i as u64);
    // 64-bit code runs on the host's 64-bit CS, above 4 GiB too.
    uc.mc.cs = 0x33;
    uc.mc.rip = 0x7fff_1234_5010;
    uc.mc.eflags = 0x202;
    assert_eq!(budget_signal(&mut m, &mut uc), SignalAction::ExitToHost);
    assert_eq!(m.exit.reason, ExitReason::BudgetExpired);
    let st = &m.exit_state;
    assert_eq!(st.gprs[gpr::EAX], 0xdead_beef_1234_5678);
    assert_eq!(st.gprs[gpr::ESP], 0x7fff_ffff_e000);
    assert_eq!(st.gprs[gpr::R8..], uc.mc.r);
    assert_eq!(st.rip, 0x7fff_1234_5010);
    assert_eq!(m.frame.uc.mc.cs, 0x33, "entered on the host's 64-bit CS");
    assert_eq!(
        m.frame.uc.mc.ss, 0x2b,
        "and its SS, the guest's being 0x2b too"
    );

    // The host's 32-bit CS with RIP above 4 GiB: no far transfer lands there (compatibility
    // mode's RIP is 32 bits wide), so it is no mode switch, and no exit describes it.
    m.prepare_entry().unwrap();
    uc.mc.cs = 0x23;
    assert_eq!(budget_signal(&mut m, &mut uc), SignalAction::ExitToHost);
    assert!(
        matches!(
            m.exit.reason,
            ExitReason::GuestEscape {
                kind: EscapeKind::LongMode,
                ..
            }
        ),
        "{:?}",
        m.exit.reason
    );
    // Its state is the registers at the signal with the entry's segments as installed (the
    // stub's library hands it back for the guest's #GP(0)).
    let st = &m.exit_state;
    assert_eq!(st.gprs[gpr::EAX], 0xdead_beef_1234_5678);
    assert_eq!(st.gprs[gpr::R8..], uc.mc.r);
    assert_eq!(st.rip, 0x7fff_1234_5010);
    assert_eq!(
        st.segs[seg::CS].selector,
        0x33,
        "the installed CS, not 0x23"
    );
    assert_eq!(st.segs[seg::SS].selector, m.frame.uc.mc.ss);
    assert!(m.escaped);
}

#[test]
fn long_mode_code_that_switches_modes_natively_goes_on_in_the_new_mode() {
    // 64-bit code far-returned to 0x23: the budget ends the run in compatibility mode, the
    // registers whole (R8..R15 as 64-bit code left them), CS the host's 0x23.
    let mut m = monitor();
    m.entry.efer = EFER_LMA | 1 << 8;
    m.entry.cr4 = 0x20;
    m.entry.segs[seg::CS] = Segment::flat_code64(0x33);
    m.entry.segs[seg::SS] = Segment::flat_data(0x2b);
    m.entry.rip = 0x7fff_1234_5000;
    m.prepare_entry().unwrap();
    let mut uc = KUcontext::default();
    uc.mc.cs = 0x23;
    uc.mc.rip = 0x0804_8010;
    uc.mc.rax = 0x1234;
    uc.mc.r = std::array::from_fn(|i| 0x8000_0000_0000_0000 | i as u64);
    assert_eq!(budget_signal(&mut m, &mut uc), SignalAction::ExitToHost);
    assert_eq!(m.exit.reason, ExitReason::BudgetExpired);
    assert!(!m.escaped);
    let st = &m.exit_state;
    assert_eq!(st.segs[seg::CS].selector, 0x23);
    assert_eq!((st.rip, st.gprs[gpr::EAX]), (0x0804_8010, 0x1234));
    assert_eq!(st.gprs[gpr::R8..], uc.mc.r);

    // Compatibility-mode code enters with the guest's R8..R15 and its null FS's 64-bit base
    // (64-bit code it switches to finds them), and a far transfer to 0x33 is 64-bit code.
    let mut m = monitor();
    m.entry.efer = EFER_LMA | 1 << 8;
    m.entry.cr4 = 0x20;
    m.entry.segs[seg::CS] = Segment::flat_code(0x23);
    m.entry.segs[seg::SS] = Segment::flat_data(0x2b);
    m.entry.segs[seg::FS] = Segment {
        base: 0x7f00_0000_1000,
        ..Segment::null(0)
    };
    m.entry.gprs[gpr::R9] = 0xdead_beef_0000_0001;
    m.entry.rip = 0x0804_8000;
    m.prepare_entry().unwrap();
    assert_eq!(m.frame.uc.mc.r[1], 0xdead_beef_0000_0001);
    assert_eq!(m.entry_data_segs.fs_base, 0x7f00_0000_1000);
    let mut uc = KUcontext::default();
    uc.mc.cs = 0x33;
    uc.mc.rip = 0x7fff_1234_5010;
    uc.mc.rax = 1 << 40;
    uc.mc.r[1] = 7;
    assert_eq!(budget_signal(&mut m, &mut uc), SignalAction::ExitToHost);
    assert_eq!(m.exit.reason, ExitReason::BudgetExpired);
    assert!(!m.escaped);
    let st = &m.exit_state;
    assert_eq!(st.segs[seg::CS].selector, 0x33);
    assert_eq!(
        (st.rip, st.gprs[gpr::EAX], st.gprs[gpr::R9]),
        (0x7fff_1234_5010, 1 << 40, 7)
    );

    // Outside long mode 0x33 is an escape still.
    let mut m = monitor();
    let mut uc = KUcontext::default();
    uc.mc.cs = 0x33;
    uc.mc.rip = 0x0804_8000;
    assert_eq!(budget_signal(&mut m, &mut uc), SignalAction::ExitToHost);
    assert!(m.escaped);
}

/// A monitor entered in 64-bit code whose linear page `LONG_PAGE` maps physical 0x10000
/// through 4-level tables (PML4 at CR3, then 0x3000, 0x4000, 0x5000), holding `code` at
/// offset 0x10.
const LONG_PAGE: u64 = 0x7f00_1234_5000;
fn monitor64(code: &[u8]) -> Box<Monitor<FakeRam, FakeHost>> {
    let mut m = monitor();
    let put = |ram: &FakeRam, pa: u64, v: u64| {
        ram.write_u32(pa, v as u32);
        ram.write_u32(pa + 4, (v >> 32) as u32);
    };
    let idx = |shift: u32| (LONG_PAGE >> shift) & 0x1ff;
    put(&m.ram, CR3 + idx(39) * 8, 0x3000 | 7);
    put(&m.ram, 0x3000 + idx(30) * 8, 0x4000 | 7);
    put(&m.ram, 0x4000 + idx(21) * 8, 0x5000 | 7);
    put(&m.ram, 0x5000 + idx(12) * 8, 0x10000 | 7);
    m.ram.0.borrow_mut()[0x10010..0x10010 + code.len()].copy_from_slice(code);
    m.entry.efer = EFER_LMA | 1 << 8;
    m.entry.cr4 = 0x20;
    m.entry.segs[seg::CS] = Segment::flat_code64(0x33);
    m.prepare_entry().unwrap();
    m
}

/// A 64-bit system call seccomp trapped: `after` is where the host reports it.
fn sigsys64(m: &mut Monitor<FakeRam, FakeHost>, after: u64, rax: u64) -> SignalAction {
    let mut uc = KUcontext::default();
    uc.mc.cs = 0x33;
    uc.mc.rip = after;
    uc.mc.rax = rax;
    let mut ctx = SignalContext {
        sig: libc::SIGSYS,
        code: 1, // SYS_SECCOMP
        call_addr: after,
        syscall: rax as i32,
        arch: crate::frame::AUDIT_ARCH_X86_64,
        uc: &mut uc,
        data_segs: [0; 4],
        seg_bases: Some([0x7f00_0000_0000, 0]),
        fpstate: None,
    };
    m.on_signal(&mut ctx)
}

#[test]
fn a_64_bit_syscall_is_rewound_over_0f_05_with_the_full_rax() {
    let mut m = monitor64(&[0x0f, 0x05]);
    let after = LONG_PAGE + 0x12;
    assert_eq!(
        sigsys64(&mut m, after, 0xabcd_0000_0000_0001),
        SignalAction::ExitToHost
    );
    assert!(matches!(m.exit.reason, ExitReason::SystemCall { .. }));
    assert!(m.exit.ecx_clobbered);
    assert_eq!(m.exit_state.rip, LONG_PAGE + 0x10);
    assert_eq!(m.exit_state.gprs[gpr::EAX], 0xabcd_0000_0000_0001);
    assert_eq!(
        m.exit_state.segs[seg::FS].base,
        0x7f00_0000_0000,
        "RDFSBASE's"
    );
}

#[test]
fn a_trapped_64_bit_call_not_after_0f_05_is_an_escape() {
    // INT3 and NOP where SYSCALL should be: the host reported a call the guest did not make.
    let mut m = monitor64(&[0xcc, 0x90]);
    assert_eq!(
        sigsys64(&mut m, LONG_PAGE + 0x12, 39),
        SignalAction::ExitToHost
    );
    assert!(
        matches!(
            m.exit.reason,
            ExitReason::GuestEscape {
                kind: EscapeKind::HostSyscall,
                ..
            }
        ),
        "{:?}",
        m.exit.reason
    );
    assert!(m.escaped);
}
