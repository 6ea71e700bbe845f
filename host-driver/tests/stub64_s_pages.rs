//! What 64-bit guest code finds at S's addresses when its own tables map nothing there
//! (issue 15, item 4). Without protection keys the stub's pages answer native accesses: reads
//! succeed everywhere in S, writes in the stub's own pages, and a jump into its code runs the
//! stub (contained). What the guest cannot find there is anything of another guest process:
//! the stub scrubs the last exit's signal frame and published words, and the library the op
//! batches that described another process's mappings, before a run begins.

use host_driver::protocol::stub::{DEFAULT_BASE, LIB, STUB, S_LEN};
use host_driver::{Access, ExitReason, MmuCommand};
use iced_x86::code_asm::*;
use test_support::pagetables::bits::{G, URW};
use test_support::vm64::layout64::*;
use test_support::vm64::*;

/// The lines of the stub's /proc/PID/maps that are not guest-RAM mirrors.
fn stub_own_maps(vm: &Vm64) -> Vec<String> {
    let pid = vm.stub.pid().expect("a stub");
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .filter(|l| !l.contains("plex86-guest-ram"))
        // (the control memfd's inode differs in a fresh stub)
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn every_page_of_s_answers_as_the_layout_says_and_the_stub_s_mappings_stay() {
    let mut vm = Vm64::new();
    let maps = stub_own_maps(&vm);
    for off in (0..S_LEN).step_by(4096) {
        let addr = DEFAULT_BASE + off;
        let (code, lib) = (off < LIB, (LIB..STUB).contains(&off));
        for op in ['r', 'w', 'x'] {
            vm.state = state64();
            vm.code(|a| {
                a.mov(rbx, addr)?;
                match op {
                    'r' => a.mov(al, byte_ptr(rbx))?,
                    'w' => a.mov(byte_ptr(rbx), 0xc3u32)?,
                    _ => a.call(rbx)?,
                }
                a.hlt()
            });
            let at = format!("S+{off:#07x} {op}");
            let pid = vm.stub.pid();
            let exit = vm.run();
            let fault = |access| ExitReason::PageFault {
                linear: addr,
                access,
                error_code: if access == Access::Write { 6 } else { 0x14 },
            };
            match op {
                // Native reads succeed: the leak docs/ARCHITECTURE.md names.
                'r' => assert_eq!(exit.reason, ExitReason::Privileged, "{at}"),
                // The code page and the library's pages are read-only: the guest's own #PF.
                'w' if code || lib => {
                    assert_eq!(exit.reason, fault(Access::Write), "{at}");
                    assert_eq!(vm.state.rip, CODE + 10, "{at}: at the write");
                }
                // The stub's pages are the guest's to write (nothing is read from them unchecked).
                'w' => assert_eq!(exit.reason, ExitReason::Privileged, "{at}"),
                // Running the stub's code with the guest's registers: its filter or its
                // checks catch it, the process takes #GP(0) and a fresh stub goes on.
                'x' if code => {
                    assert!(exit.escape_contained, "{at}: {:?}", exit.reason);
                    assert_ne!(vm.stub.pid(), pid, "{at}: a fresh stub");
                }
                // Data pages are not executable: the guest's own #PF at the target.
                _ => {
                    assert_eq!(exit.reason, fault(Access::Fetch), "{at}");
                    assert_eq!(vm.state.rip, addr, "{at}");
                }
            }
        }
    }
    assert_eq!(
        stub_own_maps(&vm),
        maps,
        "the stub's own mappings are as they were"
    );
}

/// Values of "process A" all share these top bits (a canonical user address too).
const MARK: u64 = 0x5ec2_e7a5_0000;

#[test]
fn a_process_entered_after_another_finds_nothing_of_its_in_s() {
    let mut vm = Vm64::new();
    // The code page is global: it stays mirrored across the flush, so that B runs without a
    // single fault (each would put a signal frame of B's own over A's).
    vm.map(CODE, CODE_PHYS, URW | G);
    // A: every GPR but RSP, XMM0-15, the FS base and a page it touches carry the mark, and
    // it exits through a signal (HLT) as every run does.
    vm.map(MARK, DATA_PHYS + 0x1000, URW);
    vm.state.segs[4].base = MARK + 0x2000;
    vm.code(|a| {
        let regs = [
            rax, rcx, rdx, rbx, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15,
        ];
        let xmms = [
            xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13,
            xmm14, xmm15,
        ];
        a.mov(rax, MARK)?;
        a.mov(byte_ptr(rax), 1u32)?;
        for (i, x) in xmms.iter().enumerate() {
            a.mov(rax, MARK + 0x100 + i as u64)?;
            a.movq(*x, rax)?;
        }
        for (i, r) in regs.iter().enumerate() {
            a.mov(*r, MARK + 0x200 + i as u64)?;
        }
        a.hlt()
    });
    assert_eq!(vm.run().reason, ExitReason::Privileged);
    assert_eq!(vm.state.gprs[3], MARK + 0x203, "A ran");
    // B, after a switch of address space (the flush a CR3 load sends): counts the quadwords
    // of S that carry the mark.
    vm.state = state64();
    vm.code(|a| {
        let (mut scan, mut next) = (a.create_label(), a.create_label());
        a.mov(rsi, DEFAULT_BASE)?;
        a.mov(rdi, DEFAULT_BASE + S_LEN)?;
        a.xor(ecx, ecx)?;
        a.set_label(&mut scan)?;
        a.mov(rax, qword_ptr(rsi))?;
        a.shr(rax, 24)?;
        a.cmp(rax, (MARK >> 24) as i32)?;
        a.jne(next)?;
        a.inc(rcx)?;
        a.set_label(&mut next)?;
        a.add(rsi, 8)?;
        a.cmp(rsi, rdi)?;
        a.jb(scan)?;
        a.hlt()
    });
    let exit = vm.run_with(&[MmuCommand::FlushNonGlobal]);
    assert_eq!(exit.reason, ExitReason::Privileged);
    assert_eq!(vm.state.gprs[1], 0, "quadwords of A's in S");
}
