//! Native runs end to end: exits, charges, declines, MMU coherence, failures.

use crate::cpuinfo;
use crate::fixture::*;
use bochs_ffi::raw;
use iced_x86::code_asm::*;
use plex86_accel::ffi::*;

#[test]
fn hlt_exits_with_exact_state() {
    let mut g = Guest::new("hlt");
    let avx512 = g.state.xcr0 & 0xe0 == 0xe0;
    // XMM0 = 1,2,3,4; XMM1 = 10,20,30,40; YMM0 upper = 5,6,7,8; ZMM0 upper = 9..16; k2, k3.
    for i in 0..4 {
        g.state.fpu.zmm[0][4 * i..4 * i + 4].copy_from_slice(&(i as u32 + 1).to_le_bytes());
        g.state.fpu.zmm[1][4 * i..4 * i + 4].copy_from_slice(&(10 * (i as u32 + 1)).to_le_bytes());
        g.state.fpu.zmm[0][16 + 4 * i..20 + 4 * i].copy_from_slice(&(i as u32 + 5).to_le_bytes());
    }
    for i in 0..8 {
        g.state.fpu.zmm[0][32 + 4 * i..36 + 4 * i].copy_from_slice(&(i as u32 + 9).to_le_bytes());
    }
    g.state.fpu.opmask[2] = 0x00f0;
    g.state.fpu.opmask[3] = 0x0f01;
    let code = g.code(|a| {
        a.mov(eax, 0x1111_1111u32)?;
        a.mov(ecx, 0x2222_2222u32)?;
        a.mov(edx, 0x3333_3333u32)?;
        a.mov(ebx, 0x4444_4444u32)?;
        a.mov(ebp, 0x5555_5555u32)?;
        a.mov(esi, 0x6666_6666u32)?;
        a.mov(edi, 0x7777_7777u32)?;
        a.push(0x1234_5678u32)?;
        a.fld1()?;
        a.fldpi()?;
        a.paddd(xmm0, xmm1)?;
        if avx512 {
            a.vpaddd(zmm2, zmm0, zmm0)?;
            a.korw(k1, k2, k3)?;
        }
        a.stc()?;
        a.hlt()?;
        a.nop()
    });
    let before = g.state;
    g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_PRIVILEGED);
    let s = &g.state;
    assert_eq!(
        s.rip,
        u64::from(CODE) + code.len() as u64 - 2,
        "EIP at the HLT"
    );
    assert_eq!(
        s.gpr,
        [
            0x1111_1111,
            0x2222_2222,
            0x3333_3333,
            0x4444_4444,
            u64::from(STACK_TOP - 20),
            0x5555_5555,
            0x6666_6666,
            0x7777_7777,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0
        ]
    );
    assert_eq!(s.rflags & 0x201, 0x201, "CF from STC, IF");
    assert_eq!(format!("{:?}", s.seg), format!("{:?}", before.seg));
    assert_eq!(
        (s.cr0, s.cr2, s.cr3, s.cr4),
        (before.cr0, before.cr2, before.cr3, before.cr4)
    );
    assert_eq!(g.exit.seg_reload, 0);
    assert_eq!(g.exit.n_code_pages, 0);
    assert_eq!(g.ram.read_u32(STACK_PHYS + 4096 - 20), 0x1234_5678);
    // x87: FLD1 then FLDPI: TOP 6, R7 = 1.0, R6 = pi, both valid, the rest empty.
    assert_eq!((s.fpu.fsw >> 11) & 7, 6);
    assert_eq!(s.fpu.ftw, 0x0fff);
    assert_eq!(s.fpu.st[7][..10], [0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0x3f]);
    assert_eq!(
        s.fpu.st[6][..10],
        [0x35, 0xc2, 0x68, 0x21, 0xa2, 0xda, 0x0f, 0xc9, 0x00, 0x40]
    );
    assert_eq!(s.fpu.fcw, 0x37f);
    // SSE.
    let lanes = |z: &[u8]| {
        (0..z.len() / 4)
            .map(|i| u32::from_le_bytes(z[4 * i..4 * i + 4].try_into().unwrap()))
            .collect::<Vec<_>>()
    };
    assert_eq!(lanes(&s.fpu.zmm[0][..16]), [11, 22, 33, 44]);
    assert_eq!(s.fpu.zmm[1], before.fpu.zmm[1]);
    assert_eq!(s.fpu.mxcsr, 0x1f80);
    if avx512 {
        // ZMM2 = ZMM0 + ZMM0 (with the new XMM0): all three parts at the host's offsets.
        assert_eq!(lanes(&s.fpu.zmm[2][..16]), [22, 44, 66, 88]);
        assert_eq!(lanes(&s.fpu.zmm[2][16..32]), [10, 12, 14, 16]);
        assert_eq!(
            lanes(&s.fpu.zmm[2][32..64]),
            [18, 20, 22, 24, 26, 28, 30, 32]
        );
        assert_eq!(s.fpu.opmask[1], 0x0ff1);
        assert_eq!(s.fpu.opmask[2..4], [0x00f0, 0x0f01]);
    }
    // Emulate the HLT and go on: the NOP is next, then the code runs off into zeros
    // (ADD [EAX], AL) with EAX = 0x11111111: unmapped, a page fault.
    g.state.rip += 1;
    g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_PAGE_FAULT);
    assert_eq!(g.state.rip, u64::from(CODE) + code.len() as u64);
    let v = g.shutdown();
    assert_eq!(v["runs"], 2);
    assert_eq!(v["exits"]["privileged"], 1);
    assert_eq!(v["exits"]["page_fault"], 1);
    assert_eq!(v["exit_instructions"]["privileged"]["hlt"], 1);
    assert!(
        v["demand_fills"].as_u64().unwrap() >= 2,
        "code and stack pages were filled: {v}"
    );
    assert!(v["native_ns"].as_u64().unwrap() > 0);
    assert_eq!(
        v["ticks_charged"], v["native_ns"],
        "1 tick per ns at ips = 1e9"
    );
}

#[test]
fn int80_is_a_system_call() {
    let mut g = Guest::new("int80");
    let code = g.code(|a| {
        a.mov(eax, 20)?;
        a.int(0x80)?;
        a.hlt()
    });
    g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_SYSTEM_CALL);
    assert_eq!(g.state.rip, u64::from(CODE) + 5);
    assert_eq!(code[5..7], [0xcd, 0x80]);
    assert_eq!(g.state.gpr[0], 20);
}

#[test]
fn cpuid_exits_or_is_the_hosts_as_the_library_says() {
    let mut g = Guest::new("cpuid");
    let is_hosts = plex86_accel_native_cpuid_is_hosts(g.accel);
    assert_eq!(
        is_hosts == 0,
        cpuinfo::has_flag("cpuid_fault"),
        "library vs /proc/cpuinfo"
    );
    g.code(|a| {
        a.mov(eax, 0)?;
        a.cpuid()?;
        a.hlt()
    });
    if is_hosts == 0 {
        g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_CPUID);
        assert_eq!(g.state.rip, u64::from(CODE) + 5, "stopped before the CPUID");
        assert!(g.logged("CPUID faulting: native CPUID exits"));
        assert_eq!(g.shutdown()["exits"]["cpuid"], 1);
    } else {
        g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_PRIVILEGED);
        assert_eq!(
            g.state.rip,
            u64::from(CODE) + 7,
            "CPUID ran natively, stopped at HLT"
        );
        assert!(g.logged("no CPUID faulting on this host"));
    }
    assert_eq!(plex86_accel_native_cpuid_is_hosts(std::ptr::null()), 1);
}

#[test]
fn budget_expiry_charges_the_native_time() {
    let mut g = Guest::new("budget");
    g.code(|a| {
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        a.inc(eax)?;
        a.jmp(top)
    });
    let st = g.run_with(3_000_000, 1000); // 3 ms
    assert_eq!(
        (st, g.exit.reason),
        (
            RAN,
            raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_BUDGET_EXPIRED
        ),
        "{}",
        g.describe()
    );
    assert!(
        g.exit.ticks >= 2_500_000 && g.exit.ticks < 1_000_000_000,
        "ticks {}",
        g.exit.ticks
    );
    assert!(g.state.gpr[0] > 1000, "the loop ran natively");
    assert!(g.state.rip == u64::from(CODE) || g.state.rip == u64::from(CODE) + 1);
}

#[test]
fn policy_declines() {
    let mut g = Guest::new("declines");
    g.code(|a| a.hlt());
    assert_eq!(g.run_with(BUDGET, 30), DECLINED);
    assert_eq!(
        (g.exit.decline_reason, g.exit.retry_after_ticks),
        (1, 70),
        "short burst"
    );
    assert_eq!(g.run_with(10_000, 1000), DECLINED);
    assert_eq!(
        (g.exit.decline_reason, g.exit.retry_after_ticks),
        (3, 10_000),
        "no budget (< 14 µs)"
    );
    g.state.seg[3].selector = 0x27; // LDT selector
    let before = format!("{:?}", g.state);
    assert_eq!(g.run(), DECLINED);
    assert_eq!(g.exit.decline_reason, 2);
    assert_eq!(
        format!("{:?}", g.state),
        before,
        "a decline changes nothing"
    );
    assert!(g.logged("LDT selector"));
    g.state.seg[3].selector = 0x23;
    plex86_accel_note_declined(g.accel, 17);
    plex86_accel_note_declined(g.accel, 17);
    plex86_accel_note_declined(g.accel, 99);
    g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_PRIVILEGED);
    let v = g.shutdown();
    assert_eq!(v["declines"]["short_burst"], 1);
    assert_eq!(v["declines"]["no_budget"], 1);
    assert_eq!(v["declines"]["unsupported_state"], 1);
    assert_eq!(v["declines"]["event_pending"], 2);
    assert_eq!(v["declines"]["unknown"], 1);
    assert_eq!(v["calls"], 4);
}

/// ABI 6: a long-mode state reaches the library. Today's executor declines 64-bit mode with a
/// reason of its own (it runs 32-bit code only) and changes nothing; the stub executor does
/// not decline it for its mode (this state's tables are 32-bit ones, so what the run makes of
/// it is not the point). Both decline compatibility mode; the 32-bit state still runs after
/// it. The Bochs-side long-mode reasons are counted under their names; a 64-bit INVLPG is
/// accepted.
#[test]
fn long_mode_reaches_the_library_through_the_c_abi() {
    let mut g = Guest::new("long-mode");
    g.code(|a| a.hlt());
    let legacy = g.state;
    g.state.mode = raw::plex86_accel_mode_PLEX86_ACCEL_MODE_LONG_64;
    g.state.efer |= 0x500; // LME, LMA
    g.state.seg[1].attr = (g.state.seg[1].attr & !(1 << 14)) | 1 << 13; // L=1, D=0
    g.state.gpr[4] = 0x7ffd_0000_1230;
    g.state.gpr[15] = 0x8000_0000_0000_0001;
    g.state.rip = 0x5555_5555_4000;
    g.state.seg[4].base = 0x7f00_1234_5000;
    let before = format!("{:?}", g.state);
    let long64 = g.run_with(BUDGET, 1000);
    let long64_decline = raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_LONG_MODE_64;
    if crate::BACKEND_RUNS_64BIT_CODE {
        assert!(
            long64 != DECLINED || g.exit.decline_reason != long64_decline,
            "the stub runs 64-bit code"
        );
    } else {
        assert_eq!(long64, DECLINED);
        assert_eq!(g.exit.decline_reason, long64_decline);
        assert!(g.exit.retry_after_ticks > 0);
        assert_eq!(
            format!("{:?}", g.state),
            before,
            "a decline changes nothing"
        );
        assert!(g.logged("long mode: this executor runs 32-bit code only"));
    }
    // Compatibility mode: declined by today's executor alone; a backend with the stub does
    // not decline it for its mode (what the run makes of this state is not the point).
    g.state.mode = raw::plex86_accel_mode_PLEX86_ACCEL_MODE_LONG_COMPAT;
    g.state.seg[1].attr = (g.state.seg[1].attr & !(1 << 13)) | 1 << 14; // L=0, D=1
    let compat = g.run_with(BUDGET, 1000);
    let compat_decline = raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_LONG_MODE_COMPAT;
    if crate::BACKEND_RUNS_64BIT_CODE {
        assert!(
            compat != DECLINED || g.exit.decline_reason != compat_decline,
            "the stub runs compatibility-mode code"
        );
    } else {
        assert_eq!(compat, DECLINED);
        assert_eq!(g.exit.decline_reason, compat_decline);
    }
    plex86_accel_invlpg(g.accel, 0xffff_8880_0000_1000);
    plex86_accel_invlpg(g.accel, 0x7f00_1234_5000);
    for r in [
        raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_LA57,
        raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_LAM,
        raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_USER_CET,
        raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_UINTR,
        raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_PKE,
    ] {
        plex86_accel_note_declined(g.accel, r);
    }
    g.state = legacy;
    g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_PRIVILEGED);
    let v = g.shutdown();
    let declined_64 = u64::from(!crate::BACKEND_RUNS_64BIT_CODE);
    assert_eq!(v["declines"]["long_mode_64"], declined_64);
    assert_eq!(v["declines"]["long_mode_compat"], declined_64);
    for name in ["la57", "lam", "user_cet", "uintr", "pke"] {
        assert_eq!(v["declines"][name], 1, "{name}");
    }
    assert_eq!(v["declines"]["unknown"], 0);
    assert_eq!(v["mmu"]["invlpg"], 2);
    // The 32-bit run, and on the stub the 64-bit one if it was entered.
    let runs = v["runs"].as_u64().unwrap();
    assert!(
        runs == 1 || (crate::BACKEND_RUNS_64BIT_CODE && runs == 2),
        "{runs} runs"
    );
}

#[test]
fn tlb_notifications_keep_the_mirror_coherent() {
    let mut g = Guest::new("tlb");
    g.ram.write_u32(DATA_PHYS, 111);
    g.ram.write_u32(DATA_PHYS + 0x8000, 222);
    g.code(|a| {
        a.mov(eax, dword_ptr(DATA))?;
        a.hlt()
    });
    let read = |g: &mut Guest| {
        g.state.rip = u64::from(CODE);
        g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_PRIVILEGED);
        g.state.gpr[0]
    };
    assert_eq!(read(&mut g), 111);
    // Remap DATA: the mirror, like a TLB, keeps the old translation until told.
    g.map(DATA, DATA_PHYS + 0x8000);
    assert_eq!(read(&mut g), 111);
    plex86_accel_invlpg(g.accel, u64::from(DATA) + 0x10);
    assert_eq!(read(&mut g), 222);
    g.map(DATA, DATA_PHYS);
    plex86_accel_flush_tlb(g.accel, 0);
    assert_eq!(read(&mut g), 111);
    g.map(DATA, DATA_PHYS + 0x8000);
    plex86_accel_flush_tlb(g.accel, 1);
    assert_eq!(read(&mut g), 222);
    // A CR3 change that Bochs did not report: the library flushes by itself.
    // A second page directory sharing the first one's page table for 4 MiB..8 MiB.
    g.ram.write(0x9000, &[0; 4096]);
    g.ram.write_u32(0x9000 + 4, g.ram.read_u32(0x1000 + 4));
    g.map(DATA, DATA_PHYS);
    g.state.cr3 = 0x9000;
    assert_eq!(read(&mut g), 111);
    // The memory map loses the data page: the access needs emulation.
    let ranges = [
        raw::plex86_accel_ram_range {
            start: 0,
            end: DATA_PHYS,
        },
        raw::plex86_accel_ram_range {
            start: DATA_PHYS + 0x1000,
            end: RAM_SIZE,
        },
    ];
    g.memory_map_changed(&ranges);
    g.state.rip = u64::from(CODE);
    g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_NEEDS_EMULATION);
    assert_eq!(g.state.rip, u64::from(CODE));
    let v = g.shutdown();
    assert_eq!(v["mmu"]["invlpg"], 1);
    assert_eq!(v["mmu"]["flush_all"], 1);
    assert_eq!(v["mmu"]["flush_non_global"], 1);
    assert_eq!(v["mmu"]["unreported_cr3_flushes"], 1);
    assert_eq!(v["mmu"]["memory_map_changes"], 1);
    assert_eq!(v["mmu"]["respawns"], 1);
    assert_eq!(v["exits"]["needs_emulation"], 1);
}

#[test]
fn written_code_pages_are_reported() {
    let mut g = Guest::new("codepages");
    g.code(|a| {
        a.mov(eax, dword_ptr(DATA))?; // mirrored read-only first
        a.mov(dword_ptr(DATA + 0x100), 0x5a5a_5a5au32)?;
        a.mov(dword_ptr(DATA + 0x200), 0x6b6b_6b6bu32)?;
        a.hlt()
    });
    plex86_accel_protect_code_page(g.accel, DATA_PHYS + 0x123);
    plex86_accel_protect_code_page(g.accel, DATA_PHYS);
    g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_PRIVILEGED);
    assert_eq!(g.code_pages(), vec![DATA_PHYS]);
    assert_eq!(
        g.ram.read_u32(DATA_PHYS + 0x200),
        0x6b6b_6b6b,
        "the writes happened"
    );
    // Not protected any more: a second run reports nothing.
    g.state.rip = u64::from(CODE);
    g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_PRIVILEGED);
    assert!(g.code_pages().is_empty());
    let v = g.shutdown();
    assert_eq!(v["code_pages"]["protect_requests"], 2);
    assert_eq!(v["code_pages"]["write_protects_sent"], 1);
    assert_eq!(v["code_pages"]["invalidations"], 1);
}

#[test]
fn natively_loaded_selectors_ask_for_a_reload() {
    // Another of the guest's selectors, copied natively (CS's into DS): Bochs reloads DS.
    let mut g = Guest::new("segreload");
    g.code(|a| {
        a.mov(ax, cs)?;
        a.mov(ds, ax)?;
        a.hlt()
    });
    g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_PRIVILEGED);
    assert_eq!(g.exit.seg_reload, 1 << 3);
    assert_eq!(
        g.state.seg[3].selector, g.state.seg[1].selector,
        "the guest's CS selector"
    );
    // The host's data selector loads natively: passed on for Bochs to reload from the guest's
    // GDT (Bochs stops if the guest could not have loaded it).
    let mut g = Guest::new("hostsel");
    g.code(|a| {
        a.mov(eax, 0x2bu32)?;
        a.mov(ds, ax)?;
        a.hlt()
    });
    g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_PRIVILEGED);
    assert_eq!(g.exit.seg_reload, 1 << 3);
    assert_eq!(g.state.seg[3].selector, 0x2b);
    // An ordinary segment load (a selector the host cannot load: index 8 is the host's TSS)
    // exits before it happens, at the instruction.
    let mut g = Guest::new("segload");
    let code = g.code(|a| {
        a.mov(eax, 0x43u32)?;
        a.mov(es, ax)?;
        a.hlt()
    });
    g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_SEGMENT_LOAD);
    assert_eq!(g.state.rip, u64::from(CODE) + 5);
    assert_eq!(code[5..8], [0x66, 0x8e, 0xc0]);
    assert_eq!((g.exit.seg_reload, g.state.seg[0].selector), (0, 0x23));
    let v = g.shutdown();
    assert_eq!(v["exit_instructions"]["segment_load"]["mov es"], 1, "{v}");
}

#[test]
fn guest_escape_fails_and_disables_or_is_contained() {
    let mut g = Guest::new("escape");
    g.code(|a| {
        a.jmp_far(0x33, CODE + 0x100)?;
        a.hlt()
    });
    if crate::BACKEND_CONTAINS_ESCAPES {
        // The stub: RAN with CONTAINED_ESCAPE at the state where it was caught (the 64-bit
        // fetch of the zeroes at CODE + 0x100: `add [rax], al` faults on RAX = 0), the entry's
        // segments; a fresh stub runs the next entry.
        let entry = g.state;
        g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_CONTAINED_ESCAPE);
        assert_eq!(g.state.rip, u64::from(CODE) + 0x100, "{}", g.describe());
        let sel = |s: &raw::plex86_accel_cpu_state| s.seg.map(|x| (x.selector, x.attr, x.base));
        assert_eq!(sel(&g.state), sel(&entry), "the entry's segments");
        assert!(g.logged("contained guest escape: guest escape: guest code reached 64-bit mode"));
        assert!(g.logged(&format!(
            "guest CR3 {:#x}, RIP {:#x}",
            entry.cr3,
            CODE + 0x100
        )));
        g.code(|a| a.hlt());
        g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_PRIVILEGED);
        let v = g.shutdown();
        assert_eq!(v["failures"], 0);
        assert_eq!(v["escapes"]["contained"], 1);
        assert_eq!(v["exits"]["contained_escape"], 1);
        return;
    }
    assert_eq!(g.run(), FAILED, "{}", g.describe());
    assert_eq!(g.exit.lost_native_progress, 1);
    assert!(g.message().contains("guest escape"), "{}", g.message());
    assert!(g.logged("accelerator disabled"));
    assert_eq!(g.run(), DECLINED);
    assert_eq!(
        (g.exit.decline_reason, g.exit.retry_after_ticks),
        (4, 1 << 62),
        "DISABLED: never, without overflow"
    );
    let v = g.shutdown();
    assert_eq!(v["failures"], 1);
    assert!(v["failure"].as_str().unwrap().contains("guest escape"));
}

#[test]
fn syscall_on_amd_loses_eip_and_fails() {
    let mut g = Guest::new("syscall");
    g.code(|a| {
        a.mov(eax, 20)?;
        a.syscall()?;
        a.hlt()
    });
    if !cpuinfo::is_amd() {
        // Intel: SYSCALL is #UD in compatibility mode, an exact exit.
        g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_INVALID_OPCODE);
        return;
    }
    assert_eq!(g.run(), FAILED, "{}", g.describe());
    assert_eq!(g.exit.lost_native_progress, 1);
    assert!(
        g.message().contains("SYSCALL executed natively"),
        "{}",
        g.message()
    );
}
