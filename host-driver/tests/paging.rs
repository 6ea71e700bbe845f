//! Shadow paging: A/D bits, PSE and PAE/NX walks, read-only-until-dirty, the MMU commands and
//! the code-page write log.

use host_driver::{Access, ExitReason, MmuCommand};
use iced_x86::code_asm::*;
use std::time::Duration;
use test_support::both_executors;
use test_support::vm::*;

fn run_expect_hlt(vm: &mut Vm, cmds: &[MmuCommand]) -> Vec<u64> {
    let exit = vm.run_with(cmds);
    assert_eq!(exit.reason, ExitReason::Privileged, "{:?}", exit.reason);
    let pages = exit.code_pages.as_slice().to_vec();
    vm.state.rip += 1; // skip HLT
    pages
}

both_executors! {
    #[test]
    fn accessed_and_dirty_bits_two_level() {
        let mut vm = Vm::new(Mode::TwoLevel);
        vm.map(DATA, DATA_PHYS, URW);
        vm.ram.write_u32(DATA_PHYS, 41);
        vm.code(|a| {
            a.mov(eax, dword_ptr(DATA))?;
            a.hlt()?;
            a.inc(eax)?;
            a.mov(dword_ptr(DATA + 4), eax)?;
            a.hlt()
        });
        run_expect_hlt(&mut vm, &[]);
        assert_eq!(vm.state.gprs[0], 41);
        assert_eq!(vm.pte(DATA), DATA_PHYS | URW | A, "read sets A only");
        assert_ne!(
            vm.ram.read_u32(vm.pde_addr(DATA)) & A as u32,
            0,
            "PDE accessed"
        );
        run_expect_hlt(&mut vm, &[]);
        assert_eq!(vm.pte(DATA), DATA_PHYS | URW | A | D, "write sets D");
        assert_eq!(vm.ram.read_u32(DATA_PHYS + 4), 42);
    }
}

both_executors! {
    #[test]
    fn read_only_until_dirty_upgrade_pae() {
        let mut vm = Vm::new(Mode::Pae);
        vm.map(DATA, DATA_PHYS, URW | A);
        vm.code(|a| {
            a.mov(eax, dword_ptr(DATA))?;
            a.hlt()?;
            a.mov(dword_ptr(DATA), 0x1234_5678)?;
            a.mov(ebx, dword_ptr(DATA))?;
            a.hlt()
        });
        run_expect_hlt(&mut vm, &[]);
        assert_eq!(vm.pte(DATA) & D, 0, "mirrored read-only while D is clear");
        run_expect_hlt(&mut vm, &[]);
        assert_eq!(
            vm.pte(DATA) & D,
            D,
            "D set before the first write was allowed"
        );
        assert_eq!(vm.state.gprs[3], 0x1234_5678);
        assert_eq!(vm.ram.read_u32(DATA_PHYS), 0x1234_5678);
    }
}

both_executors! {
    #[test]
    fn fill_limit_ends_the_run_at_the_access_that_needed_the_last_fill() {
        // Code and stack are mirrored by the first run's fills too: count from a warmed-up mirror.
        let mut vm = Vm::with_fill_limit(Mode::TwoLevel, 3);
        for i in 0..4 {
            // Accessed clear: each page is filled at its own access, never ahead of it (the
            // stub's fill-ahead mirrors only pages the guest has used already).
            vm.map(DATA + i * 0x1000, DATA_PHYS + u64::from(i) * 0x1000, URW);
            vm.ram.write_u32(DATA_PHYS + u64::from(i) * 0x1000, 10 + i);
        }
        vm.code(|a| {
            a.hlt()?;
            a.mov(eax, dword_ptr(DATA))?;
            a.add(eax, dword_ptr(DATA + 0x1000))?;
            a.add(eax, dword_ptr(DATA + 0x2000))?;
            a.add(eax, dword_ptr(DATA + 0x3000))?;
            a.hlt()
        });
        // Run 1 mirrors the code page and stops at the first HLT (one fill).
        run_expect_hlt(&mut vm, &[]);
        // Run 2: fills for the three first data pages, the third being the limit: that load, whose
        // page is mirrored now, has not happened yet.
        let start = vm.state.rip;
        let exit = vm.run();
        assert_eq!(exit.reason, ExitReason::FillLimit, "{:?}", exit.reason);
        assert_eq!(exit.demand_fills, 3);
        assert!(
            exit.fill_time() > Duration::ZERO && exit.fill_time() <= exit.native_time(),
            "fill time {:?} of {:?}",
            exit.fill_time(),
            exit.native_time()
        );
        assert_eq!(
            vm.state.gprs[0],
            10 + 11,
            "two loads done, the third not yet"
        );
        assert!(vm.state.rip > start);
        // The next run starts with that load (its page is mirrored) and fills the last page.
        let exit = vm.run();
        assert_eq!(exit.reason, ExitReason::Privileged, "{:?}", exit.reason);
        assert_eq!(vm.state.gprs[0], 10 + 11 + 12 + 13);
        // The HLT again, everything mirrored: no fill, no fill time.
        let exit = vm.run();
        assert_eq!(exit.reason, ExitReason::Privileged, "{:?}", exit.reason);
        assert_eq!((exit.demand_fills, exit.fill_time()), (0, Duration::ZERO));
    }
}

both_executors! {
    #[test]
    fn pse_4mib_page() {
        let mut vm = Vm::new(Mode::TwoLevel);
        let lin = 0x0c00_0000u32;
        let pde = vm.pde_addr(lin);
        vm.ram.write_u32(pde, 0x0080_0000 | (URW | PS) as u32);
        vm.ram.write_u32(0x0080_0000 + 0x1234, 7);
        vm.code(|a| {
            a.mov(eax, dword_ptr(lin + 0x1234))?;
            a.mov(dword_ptr(lin + 0x3f_f000), eax)?;
            a.hlt()
        });
        run_expect_hlt(&mut vm, &[]);
        assert_eq!(vm.state.gprs[0], 7);
        assert_eq!(vm.ram.read_u32(0x00bf_f000), 7);
        assert_eq!(u64::from(vm.ram.read_u32(pde)) & (A | D), A | D);
    }
}

both_executors! {
    #[test]
    fn pae_2mib_pages_with_and_without_nx() {
        let mut vm = Vm::new(Mode::Pae);
        let exec_lin = 0x0a00_0000u32;
        let nx_lin = 0x0a20_0000u32;
        let pde_x = vm.pde_addr(exec_lin);
        let pde_nx = vm.pde_addr(nx_lin);
        vm.ram.write_u64(pde_x, 0x0080_0000 | URW | PS);
        vm.ram.write_u64(pde_nx, 0x00a0_0000 | URW | PS | NX);
        vm.ram.write(0x0080_0000 + 0x5000, &[0xf4]); // hlt inside the executable 2 MiB page
        vm.ram.write_u32(0x00a0_0000 + 0x10, 99);
        vm.code(|a| {
            a.mov(eax, dword_ptr(nx_lin + 0x10))?;
            a.mov(ecx, exec_lin + 0x5000)?;
            a.jmp(ecx)
        });
        let exit = vm.run();
        assert_eq!(exit.reason, ExitReason::Privileged);
        assert_eq!(vm.state.rip, u64::from(exec_lin + 0x5000));
        assert_eq!(vm.state.gprs[0], 99, "data read from an NX page");
        vm.state.rip = u64::from(nx_lin + 0x10);
        let exit = vm.run();
        assert_eq!(
            exit.reason,
            ExitReason::PageFault {
                linear: u64::from(nx_lin + 0x10),
                access: Access::Fetch,
                error_code: 0x15
            }
        );
        assert_eq!(vm.ram.read_u64(pde_nx) & A, A);
    }
}

both_executors! {
    #[test]
    fn tables_are_rewalked_before_a_fault_is_reported() {
        let mut vm = Vm::new(Mode::TwoLevel);
        vm.map(DATA, DATA_PHYS, 0); // not present
        vm.ram.write_u32(DATA_PHYS, 5);
        vm.code(|a| {
            a.mov(eax, dword_ptr(DATA))?;
            a.hlt()
        });
        let exit = vm.run();
        assert_eq!(
            exit.reason,
            ExitReason::PageFault {
                linear: u64::from(DATA),
                access: Access::Read,
                error_code: 4
            }
        );
        vm.map(DATA, DATA_PHYS, URW); // the guest fixes its PTE (no INVLPG needed for not-present)
        run_expect_hlt(&mut vm, &[]);
        assert_eq!(vm.state.gprs[0], 5);
    }
}

/// Maps DATA to physical page `a` (value 1) and DATA+4K to `b` (value 2), global as asked,
/// reads both, then remaps them to pages holding 11 and 12.
fn remap_fixture(global_first: bool) -> Vm {
    let mut vm = Vm::new(Mode::TwoLevel);
    let g = if global_first { G } else { 0 };
    vm.map(DATA, DATA_PHYS, URW | g);
    vm.map(DATA + 0x1000, DATA_PHYS + 0x1000, URW);
    vm.ram.write_u32(DATA_PHYS, 1);
    vm.ram.write_u32(DATA_PHYS + 0x1000, 2);
    vm.ram.write_u32(DATA_PHYS + 0x2000, 11);
    vm.ram.write_u32(DATA_PHYS + 0x3000, 12);
    vm.code(|a| {
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        a.mov(eax, dword_ptr(DATA))?;
        a.mov(ebx, dword_ptr(DATA + 0x1000))?;
        a.hlt()?;
        a.jmp(top)
    });
    run_expect_hlt(&mut vm, &[]);
    assert_eq!((vm.state.gprs[0], vm.state.gprs[3]), (1, 2));
    vm.map(DATA, DATA_PHYS + 0x2000, URW | g);
    vm.map(DATA + 0x1000, DATA_PHYS + 0x3000, URW);
    // Without a command the mirrors are stale, like a TLB.
    vm.state.rip = u64::from(CODE);
    run_expect_hlt(&mut vm, &[]);
    assert_eq!((vm.state.gprs[0], vm.state.gprs[3]), (1, 2));
    vm.state.rip = u64::from(CODE);
    vm
}

both_executors! {
    #[test]
    fn invalidate_page_command() {
        let mut vm = remap_fixture(false);
        run_expect_hlt(
            &mut vm,
            &[MmuCommand::InvalidatePage(u64::from(DATA + 0x1000 + 0x123))],
        );
        assert_eq!((vm.state.gprs[0], vm.state.gprs[3]), (1, 12));
    }
}

both_executors! {
    #[test]
    fn flush_all_command() {
        let mut vm = remap_fixture(true);
        run_expect_hlt(&mut vm, &[MmuCommand::FlushAll]);
        assert_eq!((vm.state.gprs[0], vm.state.gprs[3]), (11, 12));
    }
}

both_executors! {
    #[test]
    fn flush_non_global_command_keeps_global_pages() {
        let mut vm = remap_fixture(true);
        run_expect_hlt(&mut vm, &[MmuCommand::FlushNonGlobal]);
        assert_eq!((vm.state.gprs[0], vm.state.gprs[3]), (1, 12));
        vm.state.rip = u64::from(CODE);
        run_expect_hlt(&mut vm, &[MmuCommand::FlushAll]);
        assert_eq!((vm.state.gprs[0], vm.state.gprs[3]), (11, 12));
    }
}

both_executors! {
    #[test]
    fn commands_without_entry_and_many_pages() {
        let mut vm = Vm::new(Mode::TwoLevel);
        for i in 0..1500u32 {
            vm.map(
                0x0100_0000 + i * 4096,
                0x0040_0000 + u64::from(i) * 4096,
                URW | A | D,
            );
        }
        vm.code(|a| {
            a.mov(ebx, 0x0100_0000)?;
            a.mov(ecx, 1500)?;
            let mut l = a.create_label();
            a.set_label(&mut l)?;
            a.add(eax, dword_ptr(ebx))?;
            a.mov(dword_ptr(ebx), ecx)?;
            a.add(ebx, 4096)?;
            a.dec(ecx)?;
            a.jnz(l)?;
            a.hlt()
        });
        run_expect_hlt(&mut vm, &[]);
        assert_eq!(vm.ram.read_u32(0x0040_0000), 1500);
        vm.exe.apply_commands(&[MmuCommand::FlushAll]).unwrap();
        let cmds: Vec<MmuCommand> = (0..600)
            .map(|i| MmuCommand::InvalidatePage(0x0100_0000 + i * 4096))
            .collect();
        vm.state.rip = u64::from(CODE);
        vm.state.gprs[0] = 0;
        run_expect_hlt(&mut vm, &cmds);
        assert_eq!(vm.state.gprs[0], u64::from((1..=1500).sum::<u32>()));
    }
}

both_executors! {
    #[test]
    fn write_protect_logs_code_page_writes() {
        let mut vm = Vm::new(Mode::TwoLevel);
        vm.map(DATA, DATA_PHYS, URW | A | D);
        vm.map(DATA + 0x1000, DATA_PHYS + 0x1000, URW | A | D);
        vm.code(|a| {
            let mut top = a.create_label();
            a.set_label(&mut top)?;
            a.mov(dword_ptr(DATA), eax)?;
            a.hlt()?;
            a.mov(dword_ptr(DATA + 0x1000), eax)?;
            a.hlt()?;
            a.jmp(top)
        });
        vm.state.gprs[0] = 1;
        // The first page is mirrored writable, then write-protected.
        assert!(run_expect_hlt(&mut vm, &[]).is_empty());
        vm.state.rip = u64::from(CODE);
        vm.state.gprs[0] = 2;
        let log = run_expect_hlt(
            &mut vm,
            &[MmuCommand::WriteProtectPhysPage(DATA_PHYS + 0x10)],
        );
        assert_eq!(
            log,
            vec![DATA_PHYS],
            "native write to a write-protected page is logged"
        );
        assert_eq!(vm.ram.read_u32(DATA_PHYS), 2, "and then allowed");
        // The second page is write-protected before it is ever mirrored.
        vm.state.gprs[0] = 3;
        let log = run_expect_hlt(
            &mut vm,
            &[MmuCommand::WriteProtectPhysPage(DATA_PHYS + 0x1000)],
        );
        assert_eq!(log, vec![DATA_PHYS + 0x1000]);
        assert_eq!(vm.ram.read_u32(DATA_PHYS + 0x1000), 3);
        // Writes after the log are not logged again.
        vm.state.rip = u64::from(CODE);
        assert!(run_expect_hlt(&mut vm, &[]).is_empty());
        assert!(run_expect_hlt(&mut vm, &[]).is_empty());
    }
}

both_executors! {
    #[test]
    fn aliased_physical_page_is_write_protected_everywhere() {
        let mut vm = Vm::new(Mode::Pae);
        vm.map(DATA, DATA_PHYS, URW | A | D);
        vm.map(DATA + 0x5000, DATA_PHYS, URW | A | D); // alias
        vm.code(|a| {
            a.mov(dword_ptr(DATA), 1)?;
            a.mov(dword_ptr(DATA + 0x5000), 2)?;
            a.hlt()?;
            a.mov(dword_ptr(DATA + 0x5004), 3)?;
            a.hlt()
        });
        assert!(run_expect_hlt(&mut vm, &[]).is_empty());
        let log = run_expect_hlt(&mut vm, &[MmuCommand::WriteProtectPhysPage(DATA_PHYS)]);
        assert_eq!(log, vec![DATA_PHYS]);
        assert_eq!(vm.ram.read_u32(DATA_PHYS + 4), 3);
    }
}

/// A guest large page (4 MiB with PSE, 2 MiB with PAE) mirrored piece by piece: an INVLPG of any
/// address in it must drop every piece, as a TLB drops the one translation. Linux unmaps, zaps,
/// mprotects and collapses a huge page with a single INVLPG per 2/4 MiB.
struct LargePage {
    vm: Vm,
    lin: u32,
}

/// Where the large pages of these tests live: linear, and the physical pages behind the first
/// mapping and the one the guest remaps to (both aligned to 4 MiB).
const LARGE_LIN: u32 = 0x0c00_0000;
const LARGE_PHYS_OLD: u64 = 0x0080_0000;
const LARGE_PHYS_NEW: u64 = 0x00c0_0000;

impl LargePage {
    /// Maps LARGE_LIN as one large page with `flags`, whose code reads (and, if `write`,
    /// writes) three pieces, none of them the first, the middle or the last.
    fn new(mode: Mode, flags: u64, write: bool) -> LargePage {
        let mut vm = Vm::new(mode);
        let pages = if mode == Mode::Pae { 512 } else { 1024 };
        let lin = LARGE_LIN;
        vm.write_entry(vm.pde_addr(lin), LARGE_PHYS_OLD | PS | flags);
        let pieces = Self::pieces(pages);
        for (i, p) in pieces.iter().enumerate() {
            vm.ram
                .write_u32(LARGE_PHYS_OLD + u64::from(*p) * 4096, 100 + i as u32);
            vm.ram
                .write_u32(LARGE_PHYS_NEW + u64::from(*p) * 4096, 200 + i as u32);
        }
        vm.code(|a| {
            let mut top = a.create_label();
            a.set_label(&mut top)?;
            for (p, reg) in pieces.iter().zip([eax, ebx, ecx]) {
                a.mov(reg, dword_ptr(lin + p * 4096))?;
                if write {
                    a.mov(dword_ptr(lin + p * 4096 + 8), 0x5555)?;
                }
            }
            a.hlt()?;
            a.jmp(top)
        });
        let mut lp = LargePage { vm, lin };
        run_expect_hlt(&mut lp.vm, &[]);
        assert_eq!(lp.values(), [100, 101, 102], "first run: the old page");
        lp
    }

    fn pieces(pages: u32) -> [u32; 3] {
        [1, 5, pages - 2]
    }

    fn values(&self) -> [u64; 3] {
        let g = &self.vm.state.gprs;
        [g[0], g[3], g[1]]
    }

    /// The INVLPG positions that matter: the first, a middle and the last 4 KiB.
    fn invlpg_positions(pages: u32) -> [u32; 3] {
        [0, pages / 2, pages - 1]
    }

    fn rerun_after(&mut self, pde: u64, invlpg_at: u32) -> ExitReason {
        let pa = self.vm.pde_addr(self.lin);
        self.vm.write_entry(pa, pde);
        self.vm.state.rip = u64::from(CODE);
        let addr = self.lin + invlpg_at * 4096 + 0x10;
        self.vm
            .run_with(&[MmuCommand::InvalidatePage(u64::from(addr))])
            .reason
    }
}

both_executors! {
    #[test]
    fn invlpg_in_a_large_page_drops_every_piece_after_a_remap() {
        for mode in [Mode::TwoLevel, Mode::Pae] {
            let pages = if mode == Mode::Pae { 512 } else { 1024 };
            for at in LargePage::invlpg_positions(pages) {
                let mut lp = LargePage::new(mode, URW | A | D, true);
                let reason = lp.rerun_after(LARGE_PHYS_NEW | PS | URW | A | D, at);
                assert_eq!(
                    reason,
                    ExitReason::Privileged,
                    "{mode:?} at {at}: {reason:?}"
                );
                assert_eq!(
                    lp.values(),
                    [200, 201, 202],
                    "{mode:?} INVLPG at piece {at}"
                );
                for p in LargePage::pieces(pages) {
                    let off = u64::from(p) * 4096 + 8;
                    let (old, new) = (
                        lp.vm.ram.read_u32(LARGE_PHYS_OLD + off),
                        lp.vm.ram.read_u32(LARGE_PHYS_NEW + off),
                    );
                    assert_eq!(
                        (old, new),
                        (0x5555, 0x5555),
                        "{mode:?} at {at}: writes of piece {p}"
                    );
                }
                // Once more, the writes of the second run must land in the new page only.
                lp.vm.ram.write_u32(LARGE_PHYS_OLD + 4096 + 8, 0);
                lp.vm.state.rip = u64::from(CODE);
                run_expect_hlt(&mut lp.vm, &[]);
                assert_eq!(
                    lp.vm.ram.read_u32(LARGE_PHYS_OLD + 4096 + 8),
                    0,
                    "{mode:?} at {at}"
                );
            }
        }
    }
}

both_executors! {
    #[test]
    fn invlpg_in_a_large_page_drops_every_piece_after_an_unmap() {
        for mode in [Mode::TwoLevel, Mode::Pae] {
            let pages = if mode == Mode::Pae { 512 } else { 1024 };
            for at in LargePage::invlpg_positions(pages) {
                // Read-only (no R/W) and writable mirrors alike.
                for (flags, write) in [(P | US | A, false), (URW | A | D, true)] {
                    let mut lp = LargePage::new(mode, flags, write);
                    let reason = lp.rerun_after(0, at);
                    let first = lp.lin + LargePage::pieces(pages)[0] * 4096;
                    assert_eq!(
                        reason,
                        ExitReason::PageFault {
                            linear: u64::from(first),
                            access: Access::Read,
                            error_code: 4
                        },
                        "{mode:?} flags {flags:#x}: INVLPG at piece {at} left a stale piece"
                    );
                }
            }
        }
    }
}

both_executors! {
    #[test]
    fn invlpg_in_a_large_page_drops_write_access_after_mprotect() {
        for mode in [Mode::TwoLevel, Mode::Pae] {
            let pages = if mode == Mode::Pae { 512 } else { 1024 };
            for at in LargePage::invlpg_positions(pages) {
                let mut lp = LargePage::new(mode, URW | A | D, true);
                let reason = lp.rerun_after(LARGE_PHYS_OLD | PS | P | US | A | D, at);
                let first = lp.lin + LargePage::pieces(pages)[0] * 4096 + 8;
                assert_eq!(
                    reason,
                    ExitReason::PageFault {
                        linear: u64::from(first),
                        access: Access::Write,
                        error_code: 4 | 2 | 1
                    },
                    "{mode:?}: INVLPG at piece {at} left a piece writable"
                );
            }
        }
    }
}

both_executors! {
    /// SGDT whose operand crosses into a page not mirrored yet: the host kernel's UMIP emulation
    /// reports a fault at the operand's start, on a page mirrored writable already. That is no
    /// missing fill: the emulator must perform the instruction (before, the executor re-filled the
    /// first page until the fill limit or the budget ended the run).
    #[test]
    fn umip_operand_across_a_page_needs_emulation() {
        let umip = std::fs::read_to_string("/proc/cpuinfo")
            .expect("/proc/cpuinfo")
            .split_whitespace()
            .any(|w| w == "umip");
        let mut vm = Vm::new(Mode::TwoLevel);
        vm.map(DATA, DATA_PHYS, URW | A | D);
        // Accessed clear: not mirrored ahead by the first page's fill (the stub's fill-ahead).
        vm.map(DATA + 0x1000, DATA_PHYS + 0x1000, URW);
        let operand = DATA + 0xffe;
        vm.code(|a| {
            a.mov(dword_ptr(DATA), 1)?; // mirrors the first page, writable
            a.sgdt(ptr(operand))?;
            a.hlt()
        });
        let exit = vm.run();
        if umip {
            assert_eq!(
                exit.reason,
                ExitReason::NeedsEmulation {
                    linear: u64::from(operand),
                    access: Access::Write
                }
            );
            assert_eq!(
                exit.demand_fills, 2,
                "the code page and the first data page"
            );
        } else {
            // Without UMIP SGDT runs natively (and the second page is filled).
            assert_eq!(exit.reason, ExitReason::Privileged, "{:?}", exit.reason);
        }
    }
}
