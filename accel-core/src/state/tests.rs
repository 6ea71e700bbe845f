use super::*;
use test_support::guest_state::layouts::{AMD, AVX_ONLY, INTEL};
use test_support::guest_state::sample_state;

fn bytes_eq(a: &CpuState, b: &CpuState) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

fn round_trip(cpu: &CpuState, xs: &XsaveInfo) -> (CpuState, u32, Box<GuestState>) {
    let mut gs = Box::new(GuestState::default());
    to_guest(cpu, xs, &mut gs);
    let mut back = *cpu;
    // Scribble over everything the exit path must rewrite.
    back.gpr[..8].fill(0);
    back.rip = 0;
    back.rflags = 0;
    back.fpu = FpuState {
        fcw: 0,
        fsw: 0,
        ftw: 0,
        fop: 0,
        fip: 0,
        fdp: 0,
        fcs: 0,
        fds: 0,
        mxcsr: 0,
        st: [[0xee; 16]; 8],
        zmm: {
            // ZMM8-31 are not the driver's (32-bit mode): from_guest keeps them
            let mut z = cpu.fpu.zmm;
            z[..8].fill([0xee; 64]);
            z
        },
        opmask: [0xee; 8],
    };
    let reload = from_guest(&gs, xs, &mut back);
    (back, reload, gs)
}

#[test]
fn sample_state_tags_match_the_values() {
    let cpu = sample_state();
    for phys in 0..8 {
        let t = (cpu.fpu.ftw >> (2 * phys)) & 3;
        if t != tag::EMPTY {
            assert_eq!(classify(&cpu.fpu.st[phys][..10]), t, "register {phys}");
        }
    }
    assert_eq!(cpu.fpu.ftw >> 14, tag::EMPTY);
}

#[test]
fn round_trip_is_exact_with_both_layouts() {
    let cpu = sample_state();
    for xs in [INTEL, AMD] {
        let (back, reload, gs) = round_trip(&cpu, &xs);
        assert_eq!(reload, 0);
        assert!(
            bytes_eq(&back, &cpu),
            "layout {xs:?}:\n{back:?}\n!=\n{cpu:?}"
        );
        assert_eq!(gs.xsave.xstate_bv(), 0xe7);
        assert_eq!(gs.xcr0, 0xe7);
    }
}

#[test]
fn image_uses_the_hosts_offsets() {
    let cpu = sample_state();
    for xs in [INTEL, AMD] {
        let mut gs = GuestState::default();
        to_guest(&cpu, &xs, &mut gs);
        let img = &gs.xsave.0;
        let (avx, k, zhi) = (
            xs.components[2].0 as usize,
            xs.components[5].0 as usize,
            xs.components[6].0 as usize,
        );
        for r in 0..8 {
            assert_eq!(
                img[160 + 16 * r..176 + 16 * r],
                cpu.fpu.zmm[r][..16],
                "xmm{r}"
            );
            assert_eq!(
                img[avx + 16 * r..avx + 16 * r + 16],
                cpu.fpu.zmm[r][16..32],
                "ymm{r} upper"
            );
            assert_eq!(
                img[zhi + 32 * r..zhi + 32 * r + 32],
                cpu.fpu.zmm[r][32..64],
                "zmm{r} upper"
            );
            assert_eq!(gs.xsave.u64_at(k + 8 * r), cpu.fpu.opmask[r], "k{r}");
        }
        // XMM8-15, YMM8-15, ZMM8-15 upper and Hi16_ZMM: unreachable, zero.
        assert!(img[288..416].iter().all(|&b| b == 0));
        assert!(img[avx + 128..avx + 256].iter().all(|&b| b == 0));
        assert!(img[zhi + 256..zhi + 512].iter().all(|&b| b == 0));
        let hi16 = xs.components[7].0 as usize;
        assert!(img[hi16..hi16 + 1024].iter().all(|&b| b == 0));
        // Header: XCOMP_BV and reserved bytes zero.
        assert!(img[520..576].iter().all(|&b| b == 0));
    }
    // AMD and Intel images differ exactly in where the AVX-512 state lives.
    let (mut a, mut i) = (GuestState::default(), GuestState::default());
    to_guest(&cpu, &AMD, &mut a);
    to_guest(&cpu, &INTEL, &mut i);
    assert_eq!(a.xsave.0[..832], i.xsave.0[..832]);
    assert_eq!(a.xsave.u64_at(832), cpu.fpu.opmask[0]);
    assert_eq!(i.xsave.u64_at(1088), cpu.fpu.opmask[0]);
}

#[test]
fn legacy_area_fields_and_stack_order() {
    let cpu = sample_state();
    let mut gs = GuestState::default();
    to_guest(&cpu, &AMD, &mut gs);
    let img = &gs.xsave;
    assert_eq!(get_u16(img, 0), 0x0c7a);
    assert_eq!(get_u16(img, 2), cpu.fpu.fsw);
    assert_eq!(img.0[4], 0x7f, "R7 empty, the rest not");
    assert_eq!(img.0[5], 0);
    assert_eq!(get_u16(img, 6), 0x05d9);
    assert_eq!(get_u32(img, 8), 0x0804_9abc);
    assert_eq!(get_u16(img, 12), 0x73);
    assert_eq!(get_u32(img, 16), 0x0805_1234);
    assert_eq!(get_u16(img, 20), 0x7b);
    assert_eq!(get_u32(img, 24), cpu.fpu.mxcsr);
    assert_eq!(get_u32(img, 28), MXCSR_MASK);
    // TOP = 5: ST(0) = R5, ST(1) = R6, ST(2) = R7, ST(3) = R0, ...
    for i in 0..8 {
        let phys = (5 + i) & 7;
        assert_eq!(
            img.0[32 + 16 * i..42 + 16 * i],
            cpu.fpu.st[phys][..10],
            "ST({i})"
        );
        assert!(img.0[42 + 16 * i..48 + 16 * i].iter().all(|&b| b == 0));
    }
}

#[test]
fn every_top_value_round_trips() {
    let mut cpu = sample_state();
    for top in 0..8u16 {
        cpu.fpu.fsw = (cpu.fpu.fsw & !0x3800) | (top << 11);
        let (back, _, _) = round_trip(&cpu, &INTEL);
        assert!(bytes_eq(&back, &cpu), "TOP {top}");
    }
}

#[test]
fn tag_word_conversions() {
    assert_eq!(abridged_tag(0xffff), 0);
    assert_eq!(abridged_tag(0x0000), 0xff);
    assert_eq!(abridged_tag(0b11_10_01_00_11_11_10_01), 0b0111_0011);
    let reg = |frac: u64, se: u16| {
        let mut r = [0u8; 10];
        r[..8].copy_from_slice(&frac.to_le_bytes());
        r[8..].copy_from_slice(&se.to_le_bytes());
        r
    };
    assert_eq!(classify(&reg(0x8000_0000_0000_0000, 0x3fff)), tag::VALID); // 1.0
    assert_eq!(classify(&reg(0x8000_0000_0000_0000, 0xbfff)), tag::VALID); // -1.0
    assert_eq!(classify(&reg(0, 0)), tag::ZERO);
    assert_eq!(classify(&reg(0, 0x8000)), tag::ZERO);
    assert_eq!(classify(&reg(1, 0)), tag::SPECIAL); // denormal
    assert_eq!(classify(&reg(0x8000_0000_0000_0000, 0)), tag::SPECIAL); // pseudo-denormal
    assert_eq!(classify(&reg(0x8000_0000_0000_0000, 0x7fff)), tag::SPECIAL); // +inf
    assert_eq!(classify(&reg(0xc000_0000_0000_0000, 0xffff)), tag::SPECIAL); // -QNaN
    assert_eq!(classify(&reg(0, 0x7fff)), tag::SPECIAL); // pseudo-infinity
    assert_eq!(classify(&reg(0x4000_0000_0000_0000, 0x4000)), tag::SPECIAL); // unnormal
                                                                             // Full tag: empty registers stay empty whatever they hold; the others are classified.
    let mut stack = [[0u8; 10]; 8];
    stack[0] = reg(0x8000_0000_0000_0000, 0x3fff); // ST(0) valid
    stack[1] = reg(0, 0); // ST(1) zero
    stack[2] = reg(1, 0); // ST(2) special
                          // TOP = 6: ST(0) = R6, ST(1) = R7, ST(2) = R0.
    let ftw = full_tag(0b1100_0001, &stack, 6);
    assert_eq!(ftw, 0b01_00_11_11_11_11_11_10);
}

#[test]
fn inconsistent_tags_are_recomputed_like_hardware() {
    // Bochs says "valid" for a register holding zero: FXSAVE/FXRSTOR would say "zero".
    let mut cpu = sample_state();
    cpu.fpu.ftw &= !(3 << 2); // R1 (-0) tagged valid
    let (back, _, _) = round_trip(&cpu, &AMD);
    assert_eq!((back.fpu.ftw >> 2) & 3, tag::ZERO);
    assert_eq!(back.fpu.ftw & !(3 << 2), cpu.fpu.ftw & !(3 << 2));
}

#[test]
fn all_empty_and_init_states() {
    let mut cpu = sample_state();
    cpu.fpu.ftw = 0xffff;
    let (back, _, gs) = round_trip(&cpu, &AMD);
    assert_eq!(gs.xsave.0[4], 0);
    assert!(bytes_eq(&back, &cpu));
    // A component whose XSTATE_BV bit the executor cleared comes back in its initial state.
    let cpu = sample_state();
    let mut gs = GuestState::default();
    to_guest(&cpu, &INTEL, &mut gs);
    gs.xsave.set_u64_at(512, xfeature::SSE); // x87, AVX, opmask, ZMM_Hi256 in init state
    let mut back = cpu;
    from_guest(&gs, &INTEL, &mut back);
    assert_eq!(
        (back.fpu.fcw, back.fpu.fsw, back.fpu.ftw, back.fpu.fop),
        (FCW_INIT, 0, 0xffff, 0)
    );
    assert_eq!(
        (back.fpu.fip, back.fpu.fcs, back.fpu.fdp, back.fpu.fds),
        (0, 0, 0, 0)
    );
    assert_eq!(back.fpu.st, [[0; 16]; 8]);
    assert_eq!(back.fpu.opmask, [0; 8]);
    for r in 0..8 {
        assert_eq!(back.fpu.zmm[r][..16], cpu.fpu.zmm[r][..16], "xmm{r} kept");
        assert!(
            back.fpu.zmm[r][16..].iter().all(|&b| b == 0),
            "zmm{r} upper initialised"
        );
    }
    assert_eq!(
        back.fpu.mxcsr, cpu.fpu.mxcsr,
        "MXCSR is read whatever XSTATE_BV says"
    );
    gs.xsave.set_u64_at(512, 0);
    from_guest(&gs, &INTEL, &mut back);
    assert!(back.fpu.zmm.iter().all(|z| z.iter().all(|&b| b == 0)));
}

#[test]
fn xcr0_limits_what_is_transferred() {
    // Guest without OSXSAVE: x87 and SSE only; AVX/AVX-512 state stays Bochs's.
    let mut cpu = sample_state();
    cpu.cr4 &= !CR4_OSXSAVE;
    assert_eq!(effective_xcr0(&cpu), 3);
    let mut gs = GuestState::default();
    to_guest(&cpu, &INTEL, &mut gs);
    assert_eq!(gs.xcr0, 3);
    assert_eq!(gs.xsave.xstate_bv(), 3);
    assert!(gs.xsave.0[576..2688].iter().all(|&b| b == 0));
    let mut back = cpu;
    back.fpu.opmask = [7; 8];
    back.fpu.zmm[3][40] = 0x99;
    from_guest(&gs, &INTEL, &mut back);
    assert_eq!(back.fpu.opmask, [7; 8], "not transferred: untouched");
    assert_eq!(back.fpu.zmm[3][40], 0x99);
    assert_eq!(back.fpu.zmm[3][..16], cpu.fpu.zmm[3][..16]);
    // Guest XCR0 = x87|SSE|AVX on an AVX-512 host; and an AVX-only host.
    let mut cpu = sample_state();
    cpu.xcr0 = 7;
    for xs in [INTEL, AMD, AVX_ONLY] {
        let (back, _, gs) = round_trip(&cpu, &xs);
        assert_eq!(gs.xsave.xstate_bv(), 7);
        let mut want = cpu;
        want.fpu.opmask = [0xee; 8]; // scribbled by round_trip, not transferred
        for z in want.fpu.zmm[..8].iter_mut() {
            z[32..].fill(0xee);
        }
        assert!(bytes_eq(&back, &want), "{xs:?}");
    }
}

#[test]
fn segments_translate_and_reload_mask() {
    let cpu = sample_state();
    let mut gs = GuestState::default();
    to_guest(&cpu, &AMD, &mut gs);
    assert_eq!(
        gs.segs[1],
        Segment {
            selector: 0x73,
            attr: 0xc0fb,
            limit: 0xfffff,
            base: 0,
            flags: 0,
            reserved: 0
        }
    );
    assert_eq!(gs.segs[5].base, 0xb7e0_0000);
    assert_eq!(gs.segs[4], Segment::null(0));
    let mut c = cpu;
    c.seg[4] = BxSegment {
        selector: 3,
        attr: 0x1234,
        limit: 5,
        valid: 0,
        reserved: 0,
        base: 6,
    };
    to_guest(&c, &AMD, &mut gs);
    assert_eq!(gs.segs[4], Segment::null(3), "valid=0 is a null register");
    // Exit with DS and GS loaded natively with selectors the monitor did not install.
    to_guest(&cpu, &AMD, &mut gs);
    gs.segs[3] = Segment {
        selector: 0x2b,
        flags: SEG_NOT_INSTALLED,
        ..gs.segs[3]
    };
    gs.segs[5] = Segment {
        selector: 0x7b,
        flags: SEG_NOT_INSTALLED,
        ..gs.segs[5]
    };
    let mut back = cpu;
    assert_eq!(from_guest(&gs, &AMD, &mut back), (1 << 3) | (1 << 5));
    assert_eq!(back.seg[3].selector, 0x2b);
    assert_eq!(back.seg[5].selector, 0x7b);
    assert_eq!(
        (back.seg[3].attr, back.seg[3].base, back.seg[3].valid),
        (cpu.seg[3].attr, 0, 1)
    );
    assert_eq!(
        back.seg[5].base, 0xb7e0_0000,
        "descriptor cache is Bochs's to reload"
    );
}

#[test]
fn control_registers_are_bochss() {
    let cpu = sample_state();
    let mut gs = GuestState::default();
    to_guest(&cpu, &AMD, &mut gs);
    assert_eq!(
        (gs.cr0, gs.cr2, gs.cr3, gs.cr4, gs.efer),
        (cpu.cr0, cpu.cr2, cpu.cr3, cpu.cr4, cpu.efer)
    );
    gs.cr3 = 0;
    gs.cr2 = 0;
    let mut back = cpu;
    from_guest(&gs, &AMD, &mut back);
    assert_eq!((back.cr2, back.cr3), (cpu.cr2, cpu.cr3));
}

#[test]
fn image_passes_the_drivers_header_rules() {
    // XCOMP_BV = 0, XSTATE_BV within XCR0, reserved header bytes zero, MXCSR reserved zero.
    for xs in [INTEL, AMD, AVX_ONLY] {
        let mut cpu = sample_state();
        cpu.xcr0 &= xs.features;
        let mut gs = GuestState::default();
        to_guest(&cpu, &xs, &mut gs);
        assert_eq!(gs.xsave.xcomp_bv(), 0);
        assert_eq!(gs.xsave.xstate_bv() & !gs.xcr0, 0);
        assert!(gs.xsave.0[528..576].iter().all(|&b| b == 0));
        assert_eq!(gs.xsave.mxcsr() & !0xffff, 0);
    }
}

/// The host driver's verdict on a Bochs state, asked as the accelerator asks it: after
/// translation (RF cleared, invalid caches as null attributes, XCR0 in force).
fn verdict(s: &CpuState, xs: &XsaveInfo) -> Result<(), String> {
    let mut gs = Box::new(GuestState::default());
    to_guest(s, xs, &mut gs);
    host_driver::validate_entry(&gs, *xs).map_err(|e| e.to_string())
}

fn unsupported(f: impl Fn(&mut CpuState)) -> String {
    let mut s = sample_state();
    f(&mut s);
    verdict(&s, &AMD).expect_err("the driver refuses this state")
}

#[test]
fn states_the_driver_refuses() {
    assert!(unsupported(|s| s.seg[3].selector = 0x7f).contains("LDT"));
    assert!(unsupported(|s| s.seg[1].attr |= 4).contains("conforming"));
    assert!(unsupported(|s| {
        s.seg[4] = s.seg[1];
        s.seg[4].selector = 0x63;
        s.seg[4].attr |= 4;
    })
    .contains("conforming"));
    assert!(unsupported(|s| s.seg[1].selector = 0x70).contains("CS"));
    assert!(unsupported(|s| s.seg[1].attr = s.seg[0].attr).contains("CS"));
    assert!(
        unsupported(|s| s.seg[1].attr |= 1 << 13).contains("CS"),
        "64-bit code"
    );
    assert!(
        unsupported(|s| s.seg[1].attr &= !(3 << 5)).contains("CS"),
        "DPL 0"
    );
    assert!(
        unsupported(|s| s.seg[2].attr &= !2).contains("SS"),
        "read-only stack"
    );
    assert!(unsupported(|s| s.seg[2].valid = 0).contains("SS"));
    assert!(
        unsupported(|s| s.seg[3].attr &= !0x80).contains("cannot be mirrored"),
        "not present"
    );
    assert!(
        unsupported(|s| s.seg[5].attr = (s.seg[5].attr & !0xf) | 0x8)
            .contains("cannot be mirrored"),
        "execute-only"
    );
    assert!(
        unsupported(|s| s.seg[5].attr &= !(1 << 5)).contains("cannot be mirrored"),
        "DPL 2"
    );
    assert!(unsupported(|s| s.seg[3].base = 0x1000).contains("a GDT index"));
    assert!(unsupported(|s| s.seg[5].limit = 0x10_0000).contains("limit"));
    assert!(unsupported(|s| s.rflags &= !0x200).contains("IF=1"));
    assert!(unsupported(|s| s.rflags |= 0x3000).contains("IOPL"));
    let mut rf = sample_state();
    rf.rflags |= 1 << 16;
    assert_eq!(
        verdict(&rf, &AMD),
        Ok(()),
        "RF=1 (after a return from a fault) is entered"
    );
    assert!(unsupported(|s| s.rflags |= 1 << 14).contains("NT"));
    assert!(unsupported(|s| s.rflags |= 1 << 3).contains("reserved"));
    assert!(unsupported(|s| s.rflags &= !2).contains("reserved"));
    assert!(unsupported(|s| s.cr0 &= !1).contains("PE"));
    assert!(unsupported(|s| s.xcr0 |= 0x200).contains("XCR0"), "PKRU");
    assert!(unsupported(|s| s.xcr0 = 0x27).contains("part of AVX-512"));
    assert!(unsupported(|s| s.fpu.mxcsr = 0x1_0000).contains("MXCSR"));
}

#[test]
fn states_the_driver_runs() {
    let ok = |f: &dyn Fn(&mut CpuState)| {
        let mut s = sample_state();
        f(&mut s);
        assert_eq!(verdict(&s, &AMD), Ok(()));
    };
    ok(&|s| {
        s.seg[0] = bochs_ffi::raw::plex86_accel_segment {
            selector: 0,
            attr: 0,
            limit: 0,
            valid: 0,
            reserved: 0,
            base: 0,
        }
    });
    ok(&|s| s.seg[4].selector = 3); // null with RPL 3
    ok(&|s| s.seg[5].attr = (s.seg[5].attr & !0xf) | 0xb); // readable code in GS
    ok(&|s| s.seg[5].attr = (s.seg[5].attr & !0xf) | 0x5); // expand-down read-only data
    ok(&|s| s.seg[1].attr &= !(1 << 14)); // 16-bit code
    ok(&|s| s.rflags |= 0xcd5 | (1 << 18) | (1 << 21)); // arithmetic flags, DF, AC, ID
    ok(&|s| {
        s.cr4 &= !CR4_OSXSAVE;
        s.xcr0 = 0x2e7; // not in force without OSXSAVE
    });
    // With XCR0 beyond an AVX-only host's features, the same state is unsupported.
    assert!(verdict(&sample_state(), &AVX_ONLY).is_err());
    let mut s = sample_state();
    s.xcr0 = 7;
    assert_eq!(verdict(&s, &AVX_ONLY), Ok(()));
}

/// The XSAVE image of 64-bit mode: ZMM0-31 (XMM8-15 in the legacy area, YMM/ZMM_Hi256 of 16
/// registers, Hi16_ZMM) and k0-k7 round-trip exactly, in both hosts' layouts.
#[test]
fn long_mode_xsave_round_trip_carries_zmm0_31_and_k0_7() {
    use test_support::guest_state::sample_long_state;
    let cpu = sample_long_state();
    for xs in [INTEL, AMD] {
        let mut img = XsaveImage::initial();
        build_xsave_regs(&cpu.fpu, 0xe7, &xs, &mut img, LONG_VECTOR_REGS);
        assert_eq!(img.xstate_bv(), 0xe7);
        let (avx, k, zhi, hi16) = (
            xs.components[2].0 as usize,
            xs.components[5].0 as usize,
            xs.components[6].0 as usize,
            xs.components[7].0 as usize,
        );
        for r in 0..16 {
            assert_eq!(
                img.0[160 + 16 * r..176 + 16 * r],
                cpu.fpu.zmm[r][..16],
                "xmm{r}"
            );
            assert_eq!(
                img.0[avx + 16 * r..avx + 16 * r + 16],
                cpu.fpu.zmm[r][16..32]
            );
            assert_eq!(img.0[zhi + 32 * r..zhi + 32 * r + 32], cpu.fpu.zmm[r][32..]);
        }
        for r in 16..32 {
            let o = hi16 + 64 * (r - 16);
            assert_eq!(img.0[o..o + 64], cpu.fpu.zmm[r], "zmm{r}");
        }
        for r in 0..8 {
            assert_eq!(img.u64_at(k + 8 * r), cpu.fpu.opmask[r], "k{r}");
        }
        let mut back = cpu.fpu;
        back.zmm = [[0x5a; 64]; 32];
        back.opmask = [0x5a; 8];
        read_xsave_regs(&img, 0xe7, &xs, &mut back, LONG_VECTOR_REGS);
        assert_eq!(
            format!("{back:?}"),
            format!("{:?}", cpu.fpu),
            "layout {xs:?}"
        );
        // Hi16_ZMM in its initial state (XSTATE_BV bit clear): ZMM16-31 read as zero.
        img.set_u64_at(512, 0x67);
        read_xsave_regs(&img, 0xe7, &xs, &mut back, LONG_VECTOR_REGS);
        assert!(back.zmm[16..].iter().all(|z| z.iter().all(|&b| b == 0)));
        assert_eq!(back.zmm[..16], cpu.fpu.zmm[..16]);
    }
    // Without AVX-512 on the host: the 16 XMM/YMM registers, nothing of the rest.
    let mut img = XsaveImage::initial();
    build_xsave_regs(&cpu.fpu, 0xe7, &AVX_ONLY, &mut img, LONG_VECTOR_REGS);
    assert_eq!(img.xstate_bv(), 0x7);
    let mut back = cpu.fpu;
    read_xsave_regs(&img, 0x7, &AVX_ONLY, &mut back, LONG_VECTOR_REGS);
    for r in 0..16 {
        assert_eq!(back.zmm[r][..32], cpu.fpu.zmm[r][..32]);
    }
}

/// The 32-bit builders are the long ones limited to ZMM0-7: the image of a 32-bit state is
/// byte for byte what ABI 5 built (XSTATE_BV keeps Hi16_ZMM's bit over a zero area).
#[test]
fn the_32_bit_image_is_unchanged_by_the_wider_state() {
    let mut cpu = sample_state();
    let mut a = XsaveImage::initial();
    build_xsave(&cpu.fpu, 0xe7, &AMD, &mut a);
    // Registers 8-31 hold values: the 32-bit image must not show them.
    for z in cpu.fpu.zmm[8..].iter_mut() {
        *z = [0xa5; 64];
    }
    let mut b = XsaveImage::initial();
    build_xsave(&cpu.fpu, 0xe7, &AMD, &mut b);
    assert_eq!(a.0[..], b.0[..]);
    assert_eq!(b.xstate_bv(), 0xe7);
    assert!(b.0[288..416].iter().all(|&x| x == 0), "XMM8-15 zero");
    let mut back = cpu.fpu;
    read_xsave(&b, 0xe7, &AMD, &mut back);
    assert_eq!(back.zmm[8..], cpu.fpu.zmm[8..], "ZMM8-31 not touched");
}
