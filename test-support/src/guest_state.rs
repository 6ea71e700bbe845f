//! Guest states and host XSAVE layouts for the tests and benchmarks of the state translation
//! (accel-core) and of the control-region validation (fuzz checks).

use bochs_ffi::raw::{
    self, plex86_accel_cpu_state as CpuState, plex86_accel_fpu_state as FpuState,
    plex86_accel_segment as BxSegment,
};

const CR4_OSXSAVE: u64 = 1 << 18;
// x87 full-tag-word values (SDM vol. 1, 8.1.7).
const TAG_VALID: u16 = 0;
const TAG_ZERO: u16 = 1;
const TAG_SPECIAL: u16 = 2;
const TAG_EMPTY: u16 = 3;

/// Host layouts for tests and benchmarks.
pub mod layouts {
    use host_driver::XsaveInfo;

    /// An Intel-like layout (MPX areas present but not offered): opmask at 1088.
    pub const INTEL: XsaveInfo = XsaveInfo {
        size: 2688,
        features: 0xe7,
        components: [
            (0, 0),
            (0, 0),
            (576, 256),
            (0, 0),
            (0, 0),
            (1088, 64),
            (1152, 512),
            (1664, 1024),
        ],
    };
    /// An AMD Zen 4-like layout (no MPX area): opmask at 832.
    pub const AMD: XsaveInfo = XsaveInfo {
        size: 2432,
        features: 0xe7,
        components: [
            (0, 0),
            (0, 0),
            (576, 256),
            (0, 0),
            (0, 0),
            (832, 64),
            (896, 512),
            (1408, 1024),
        ],
    };
    /// A host with AVX but no AVX-512.
    pub const AVX_ONLY: XsaveInfo = XsaveInfo {
        size: 832,
        features: 0x7,
        components: [
            (0, 0),
            (0, 0),
            (576, 256),
            (0, 0),
            (0, 0),
            (0, 0),
            (0, 0),
            (0, 0),
        ],
    };
}

/// A Bochs state with a distinct value in every field (a flat 32-bit user-mode setup with
/// XCR0 = 0xe7 and CR4.OSXSAVE), for tests and benchmarks. As in a 32-bit guest, everything
/// 32-bit mode does not have is zero: the upper halves of the registers, R8-R15, ZMM8-31.
pub fn sample_state() -> CpuState {
    let seg = |selector: u16, ty: u16, base: u64| BxSegment {
        selector,
        attr: ty | 0x10 | (3 << 5) | 0x80 | (1 << 14) | (1 << 15),
        limit: 0xfffff,
        valid: 1,
        reserved: 0,
        base,
    };
    let mut fpu = FpuState {
        fcw: 0x0c7a,
        fsw: 0x4541 | (5 << 11), // C3, TOP = 5, C2, C0, SF, IE
        ftw: 0,
        fop: 0x05d9,
        fip: 0x0804_9abc,
        fdp: 0x0805_1234,
        fcs: 0x73,
        fds: 0x7b,
        mxcsr: 0xffc5, // FZ, RC, masks, DAZ, two flags
        st: [[0; 16]; 8],
        zmm: [[0; 64]; 32],
        opmask: [0; 8],
    };
    let mut n: u32 = 0x1234_5679;
    let mut next = || {
        n = n.wrapping_mul(0x9e37_79b9).wrapping_add(0x7f4a_7c15);
        n
    };
    for z in fpu.zmm[..8].iter_mut() {
        for c in z.chunks_mut(4) {
            c.copy_from_slice(&next().to_le_bytes());
        }
    }
    for k in fpu.opmask.iter_mut() {
        *k = u64::from(next()) << 32 | u64::from(next());
    }
    // Physical registers: valid, zero, NaN, infinity, denormal, unnormal, pseudo-denormal, and
    // one empty register with leftover contents.
    let regs: [(u64, u16, u16); 8] = [
        (0xc90f_daa2_2168_c235, 0x4000, TAG_VALID),   // pi
        (0, 0x8000, TAG_ZERO),                        // -0
        (0xc000_0000_0000_0001, 0x7fff, TAG_SPECIAL), // QNaN
        (0x8000_0000_0000_0000, 0xffff, TAG_SPECIAL), // -inf
        (0x0000_0000_dead_beef, 0x0000, TAG_SPECIAL), // denormal
        (0x1234_5678_9abc_def0, 0x3fff, TAG_SPECIAL), // unnormal (J clear)
        (0x8000_0000_0000_0042, 0x0000, TAG_SPECIAL), // pseudo-denormal
        (0xa5a5_a5a5_a5a5_a5a5, 0x1234, TAG_EMPTY),   // empty, stale value
    ];
    for (i, &(frac, se, t)) in regs.iter().enumerate() {
        fpu.st[i][..8].copy_from_slice(&frac.to_le_bytes());
        fpu.st[i][8..10].copy_from_slice(&se.to_le_bytes());
        fpu.ftw |= t << (2 * i);
    }
    CpuState {
        gpr: [
            0x1111_1111,
            0x2222_2222,
            0x3333_3333,
            0x4444_4444,
            0x007f_fff0,
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
            0,
        ],
        rip: 0x0040_1234,
        rflags: 0x0000_0a97, // OF IF SF AF PF CF, bit 1
        mode: raw::plex86_accel_mode_PLEX86_ACCEL_MODE_PROTECTED,
        reserved: 0,
        seg: [
            seg(0x7b, 0x3, 0),
            seg(0x73, 0xb, 0),
            seg(0x7b, 0x3, 0),
            seg(0x7b, 0x3, 0),
            BxSegment {
                selector: 0,
                attr: 0,
                limit: 0,
                valid: 0,
                reserved: 0,
                base: 0,
            },
            seg(0x33, 0x3, 0xb7e0_0000),
        ],
        cr0: 0x8005_003b,
        cr2: 0xbfff_f000,
        cr3: 0x0123_4000,
        cr4: 0x0004_06d0 | CR4_OSXSAVE,
        efer: 0,
        xcr0: 0xe7,
        fpu,
    }
}

/// A 64-bit user-mode state (mode LONG_64, EFER.LMA, CS.L) with a distinct value in every
/// field, high halves included: 16 GPRs, RIP above 4 GiB, RFLAGS, FS/GS bases above 4 GiB,
/// CR2/CR3 above 4 GiB, ZMM0-31 and k0-7.
pub fn sample_long_state() -> CpuState {
    let mut cpu = sample_state();
    let mut n: u64 = 0x0123_4567_89ab_cdef;
    let mut next = || {
        n = n
            .wrapping_mul(0x5851_f42d_4c95_7f2d)
            .wrapping_add(0x1405_7b7e_f767_814f);
        n
    };
    for g in cpu.gpr.iter_mut() {
        *g = next() | 1 << 63;
    }
    cpu.gpr[4] = 0x7ffd_1234_5670; // RSP
    cpu.rip = 0x5555_5555_8123;
    cpu.rflags = 0x0020_0a97; // ID, OF IF SF AF PF CF, bit 1
    cpu.mode = raw::plex86_accel_mode_PLEX86_ACCEL_MODE_LONG_64;
    let code64 = 0xb | 0x10 | (3 << 5) | 0x80 | (1 << 13) | (1 << 15);
    cpu.seg[1] = BxSegment {
        selector: 0x33,
        attr: code64,
        limit: 0xfffff,
        valid: 1,
        reserved: 0,
        base: 0,
    };
    cpu.seg[2].selector = 0x2b;
    cpu.seg[4] = BxSegment {
        selector: 0,
        attr: 0,
        limit: 0,
        valid: 0,
        reserved: 0,
        base: 0x7f3c_aa55_0740, // TLS: a null selector with a 64-bit base
    };
    cpu.seg[5] = BxSegment {
        selector: 0,
        attr: 0,
        limit: 0,
        valid: 0,
        reserved: 0,
        base: 0xffff_8880_0000_1000,
    };
    cpu.cr2 = 0x7f3c_dead_b000;
    cpu.cr3 = 0x0000_0001_2345_6000 | 0x5; // a PCID in the low bits
    cpu.cr4 |= 1 << 17 | 1 << 5; // PCIDE, PAE
    cpu.efer = 0xd01; // SCE, LME, LMA, NXE
    for z in cpu.fpu.zmm.iter_mut() {
        for c in z.chunks_mut(8) {
            c.copy_from_slice(&next().to_le_bytes());
        }
    }
    for k in cpu.fpu.opmask.iter_mut() {
        *k = next();
    }
    cpu
}
