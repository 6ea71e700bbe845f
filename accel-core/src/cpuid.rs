//! CPUID and XCR0: what native code sees (the host's values, since CPUID cannot be trapped
//! here) against the guest CPU model that Bochs emulates.
//!
//! Compared registers: the ones that carry user-visible features (leaf 1 ECX/EDX, 7.0
//! EBX/ECX/EDX, 7.1 EAX, 0xD.0 EAX (XCR0 components), 0xD.1 EAX, 0x80000001 ECX/EDX). Bits
//! the OS controls (OSXSAVE, OSPKE) and the AMD copies of leaf-1 bits in 0x80000001 EDX are left
//! out.

use crate::log::Level;

/// A CPUID function: `(leaf, subleaf) → [eax, ebx, ecx, edx]`.
pub type CpuidFn<'a> = &'a dyn Fn(u32, u32) -> [u32; 4];

/// One compared register and the names of its feature bits.
#[derive(Debug)]
pub struct FeatureRegister {
    /// Leaf.
    pub leaf: u32,
    /// Subleaf.
    pub subleaf: u32,
    /// 0 = EAX, 1 = EBX, 2 = ECX, 3 = EDX.
    pub reg: usize,
    /// Printable location, e.g. "7.0 EBX".
    pub name: &'static str,
    /// (bit, feature name) pairs.
    pub bits: &'static [(u8, &'static str)],
}

#[rustfmt::skip]
const L1_ECX: &[(u8, &str)] = &[
    (0, "sse3"), (1, "pclmulqdq"), (2, "dtes64"), (3, "monitor"), (4, "ds_cpl"), (5, "vmx"),
    (6, "smx"), (7, "est"), (8, "tm2"), (9, "ssse3"), (10, "cnxt_id"), (11, "sdbg"), (12, "fma"),
    (13, "cx16"), (14, "xtpr"), (15, "pdcm"), (17, "pcid"), (18, "dca"), (19, "sse4_1"),
    (20, "sse4_2"), (21, "x2apic"), (22, "movbe"), (23, "popcnt"), (24, "tsc_deadline"),
    (25, "aes"), (26, "xsave"), (28, "avx"), (29, "f16c"), (30, "rdrand"), (31, "hypervisor"),
];
#[rustfmt::skip]
const L1_EDX: &[(u8, &str)] = &[
    (0, "fpu"), (1, "vme"), (2, "de"), (3, "pse"), (4, "tsc"), (5, "msr"), (6, "pae"), (7, "mce"),
    (8, "cx8"), (9, "apic"), (11, "sep"), (12, "mtrr"), (13, "pge"), (14, "mca"), (15, "cmov"),
    (16, "pat"), (17, "pse36"), (18, "psn"), (19, "clflush"), (21, "ds"), (22, "acpi"), (23, "mmx"),
    (24, "fxsr"), (25, "sse"), (26, "sse2"), (27, "ss"), (28, "htt"), (29, "tm"), (31, "pbe"),
];
#[rustfmt::skip]
const L7_EBX: &[(u8, &str)] = &[
    (0, "fsgsbase"), (1, "tsc_adjust"), (2, "sgx"), (3, "bmi1"), (4, "hle"), (5, "avx2"),
    (6, "fdp_excptn_only"), (7, "smep"), (8, "bmi2"), (9, "erms"), (10, "invpcid"), (11, "rtm"),
    (12, "rdt_m"), (13, "zero_fcs_fds"), (14, "mpx"), (15, "rdt_a"), (16, "avx512f"),
    (17, "avx512dq"), (18, "rdseed"), (19, "adx"), (20, "smap"), (21, "avx512ifma"),
    (23, "clflushopt"), (24, "clwb"), (25, "intel_pt"), (26, "avx512pf"), (27, "avx512er"),
    (28, "avx512cd"), (29, "sha_ni"), (30, "avx512bw"), (31, "avx512vl"),
];
#[rustfmt::skip]
const L7_ECX: &[(u8, &str)] = &[
    (0, "prefetchwt1"), (1, "avx512vbmi"), (2, "umip"), (3, "pku"), (5, "waitpkg"),
    (6, "avx512_vbmi2"), (7, "cet_ss"), (8, "gfni"), (9, "vaes"), (10, "vpclmulqdq"),
    (11, "avx512_vnni"), (12, "avx512_bitalg"), (13, "tme"), (14, "avx512_vpopcntdq"), (16, "la57"),
    (22, "rdpid"), (23, "kl"), (24, "bus_lock_detect"), (25, "cldemote"), (27, "movdiri"),
    (28, "movdir64b"), (29, "enqcmd"), (30, "sgx_lc"), (31, "pks"),
];
#[rustfmt::skip]
const L7_EDX: &[(u8, &str)] = &[
    (2, "avx512_4vnniw"), (3, "avx512_4fmaps"), (4, "fsrm"), (5, "uintr"),
    (8, "avx512_vp2intersect"), (9, "srbds_ctrl"), (10, "md_clear"), (11, "rtm_always_abort"),
    (13, "tsx_force_abort"), (14, "serialize"), (15, "hybrid"), (16, "tsxldtrk"), (18, "pconfig"),
    (19, "arch_lbr"), (20, "ibt"), (22, "amx_bf16"), (23, "avx512_fp16"), (24, "amx_tile"),
    (25, "amx_int8"), (26, "spec_ctrl"), (27, "stibp"), (28, "flush_l1d"),
    (29, "arch_capabilities"), (30, "core_capabilities"), (31, "ssbd"),
];
#[rustfmt::skip]
const L7_1_EAX: &[(u8, &str)] = &[
    (0, "sha512"), (1, "sm3"), (2, "sm4"), (4, "avx_vnni"), (5, "avx512_bf16"), (6, "lass"),
    (7, "cmpccxadd"), (8, "arch_perfmon_ext"), (10, "fzrm"), (11, "fsrs"), (12, "fsrc"),
    (17, "fred"), (18, "lkgs"), (19, "wrmsrns"), (21, "amx_fp16"), (22, "hreset"), (23, "avx_ifma"),
    (26, "lam"), (27, "msrlist"),
];
/// XCR0 state components (leaf 0xD.0 EAX and XCR0 itself).
#[rustfmt::skip]
pub const XCR0_COMPONENTS: &[(u8, &str)] = &[
    (0, "x87"), (1, "sse"), (2, "avx"), (3, "bndregs"), (4, "bndcsr"), (5, "opmask"),
    (6, "zmm_hi256"), (7, "hi16_zmm"), (9, "pkru"), (17, "xtilecfg"), (18, "xtiledata"),
    (19, "apx"),
];
#[rustfmt::skip]
const LD_1_EAX: &[(u8, &str)] = &[
    (0, "xsaveopt"), (1, "xsavec"), (2, "xgetbv1"), (3, "xsaves"), (4, "xfd"),
];
#[rustfmt::skip]
const LX1_ECX: &[(u8, &str)] = &[
    (0, "lahf_lm"), (1, "cmp_legacy"), (2, "svm"), (3, "extapic"), (4, "cr8_legacy"), (5, "abm"),
    (6, "sse4a"), (7, "misalignsse"), (8, "3dnowprefetch"), (9, "osvw"), (10, "ibs"), (11, "xop"),
    (12, "skinit"), (13, "wdt"), (15, "lwp"), (16, "fma4"), (17, "tce"), (19, "nodeid_msr"),
    (21, "tbm"), (22, "topoext"), (23, "perfctr_core"), (24, "perfctr_nb"), (26, "bpext"),
    (27, "ptsc"), (28, "perfctr_llc"), (29, "mwaitx"),
];
#[rustfmt::skip]
const LX1_EDX: &[(u8, &str)] = &[
    (11, "syscall"), (19, "mp"), (20, "nx"), (22, "mmxext"), (25, "fxsr_opt"), (26, "pdpe1gb"),
    (27, "rdtscp"), (29, "lm"), (30, "3dnowext"), (31, "3dnow"),
];

/// The registers compared.
pub const REGISTERS: &[FeatureRegister] = &[
    FeatureRegister {
        leaf: 1,
        subleaf: 0,
        reg: 2,
        name: "1 ECX",
        bits: L1_ECX,
    },
    FeatureRegister {
        leaf: 1,
        subleaf: 0,
        reg: 3,
        name: "1 EDX",
        bits: L1_EDX,
    },
    FeatureRegister {
        leaf: 7,
        subleaf: 0,
        reg: 1,
        name: "7.0 EBX",
        bits: L7_EBX,
    },
    FeatureRegister {
        leaf: 7,
        subleaf: 0,
        reg: 2,
        name: "7.0 ECX",
        bits: L7_ECX,
    },
    FeatureRegister {
        leaf: 7,
        subleaf: 0,
        reg: 3,
        name: "7.0 EDX",
        bits: L7_EDX,
    },
    FeatureRegister {
        leaf: 7,
        subleaf: 1,
        reg: 0,
        name: "7.1 EAX",
        bits: L7_1_EAX,
    },
    FeatureRegister {
        leaf: 0xd,
        subleaf: 0,
        reg: 0,
        name: "0xD.0 EAX",
        bits: XCR0_COMPONENTS,
    },
    FeatureRegister {
        leaf: 0xd,
        subleaf: 1,
        reg: 0,
        name: "0xD.1 EAX",
        bits: LD_1_EAX,
    },
    FeatureRegister {
        leaf: 0x8000_0001,
        subleaf: 0,
        reg: 2,
        name: "0x80000001 ECX",
        bits: LX1_ECX,
    },
    FeatureRegister {
        leaf: 0x8000_0001,
        subleaf: 0,
        reg: 3,
        name: "0x80000001 EDX",
        bits: LX1_EDX,
    },
];

/// One feature bit that differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feature {
    /// Where, e.g. "7.0 EBX".
    pub register: &'static str,
    /// Bit number.
    pub bit: u8,
    /// Name, e.g. "avx512f".
    pub name: &'static str,
}

/// The difference between the host's and the guest model's features.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Features native code sees that the guest model lacks.
    pub host_only: Vec<Feature>,
    /// Features the guest model has that the host lacks (native code gets #UD or, worse, a
    /// different instruction, e.g. LZCNT without ABM runs as BSR).
    pub guest_only: Vec<Feature>,
}

/// Reads `(leaf, subleaf)` if the CPU's maximum leaf covers it, else zeros.
fn read(f: CpuidFn<'_>, leaf: u32, subleaf: u32) -> [u32; 4] {
    let base = leaf & 0x8000_0000;
    if f(base, 0)[0] < leaf {
        return [0; 4];
    }
    if leaf == 7 && subleaf > 0 && f(7, 0)[0] < subleaf {
        return [0; 4];
    }
    f(leaf, subleaf)
}

/// Compares the named feature bits of `host` and `guest`.
pub fn compare(host: CpuidFn<'_>, guest: CpuidFn<'_>) -> Comparison {
    let mut out = Comparison::default();
    for r in REGISTERS {
        let h = read(host, r.leaf, r.subleaf)[r.reg];
        let g = read(guest, r.leaf, r.subleaf)[r.reg];
        for &(bit, name) in r.bits {
            let feature = Feature {
                register: r.name,
                bit,
                name,
            };
            match (h >> bit & 1, g >> bit & 1) {
                (1, 0) => out.host_only.push(feature),
                (0, 1) => out.guest_only.push(feature),
                _ => {}
            }
        }
    }
    out
}

/// Names of the XCR0 components in `mask` ("x87 sse avx"; unknown bits as "bitN").
pub fn xcr0_names(mask: u64) -> String {
    let mut names = Vec::new();
    for bit in 0..64u8 {
        if mask >> bit & 1 != 0 {
            match XCR0_COMPONENTS.iter().find(|(b, _)| *b == bit) {
                Some((_, n)) => names.push((*n).to_string()),
                None => names.push(format!("bit{bit}")),
            }
        }
    }
    if names.is_empty() {
        "none".into()
    } else {
        names.join(" ")
    }
}

/// The log lines of the comparison: one INFO line per feature native code sees that the guest
/// model lacks, a summary, and the XCR0 line (`host_xcr0`: what the host enables;
/// `guest_xcr0_max`: the components the guest model supports, CPUID 0xD.0 EDX:EAX).
pub fn report(
    cmp: &Comparison,
    host_xcr0: Option<u64>,
    guest_xcr0_max: u64,
) -> Vec<(Level, String)> {
    let mut lines = Vec::new();
    for f in &cmp.host_only {
        lines.push((
            Level::Info,
            format!(
                "CPUID: native code sees {} (leaf {} bit {}), which the guest CPU model lacks",
                f.name, f.register, f.bit
            ),
        ));
    }
    let names = |v: &[Feature]| v.iter().map(|f| f.name).collect::<Vec<_>>().join(" ");
    let mut summary = format!(
        "CPUID: {} feature(s) visible to native code that the guest CPU model lacks",
        cmp.host_only.len()
    );
    if cmp.guest_only.is_empty() {
        summary.push_str("; the host has every feature of the guest model");
    } else {
        summary.push_str(&format!(
            "; {} guest feature(s) missing on the host (run natively they fault or behave differently): {}",
            cmp.guest_only.len(),
            names(&cmp.guest_only)
        ));
    }
    lines.push((Level::Info, summary));
    match host_xcr0 {
        Some(h) => {
            let extra = h & !guest_xcr0_max;
            let mut l = format!(
                "XCR0: host {h:#x} ({}), guest model supports {guest_xcr0_max:#x} ({})",
                xcr0_names(h),
                xcr0_names(guest_xcr0_max)
            );
            if extra != 0 {
                l.push_str(&format!(
                    "; native code can use {} although the guest cannot enable it",
                    xcr0_names(extra)
                ));
            }
            lines.push((Level::Info, l));
        }
        None => lines.push((Level::Info, "XCR0: the host has no XSAVE enabled".into())),
    }
    lines
}

/// Instruction-set extensions that 32-bit user code (CPL 3) can execute once CPUID reports them,
/// by the names of [`REGISTERS`]. If the guest model lacks one the host has, a program that
/// uses it (after reading the host's CPUID natively, on hosts without CPUID faulting, or
/// without asking) executes it natively, and where Bochs emulates one of its instructions
/// (after an exit, or in the emulated first instructions after each return from the kernel) the
/// program gets #UD. Left out, because emulating them as a CPU without them does gives the same
/// results: `hle` (XACQUIRE/XRELEASE are prefixes such a CPU ignores), `3dnowprefetch`,
/// `prefetchwt1` and `cldemote` (hints Bochs executes as NOPs in every model), `erms`/`fsrm`
/// (speed hints); and what user code cannot execute in 32-bit mode or without the kernel's
/// help (`fsgsbase`, `monitor`, `xsaves`, system and mitigation bits), SYSENTER/SYSCALL (exits of
/// their own) and RDTSC (it traps natively, so Bochs always answers it).
#[rustfmt::skip]
pub const USER_EXTENSIONS: &[&str] = &[
    // leaf 1
    "sse3", "pclmulqdq", "ssse3", "fma", "cx16", "sse4_1", "sse4_2", "movbe", "popcnt", "aes",
    "xsave", "avx", "f16c", "rdrand", "fpu", "cx8", "cmov", "clflush", "mmx", "fxsr", "sse",
    "sse2",
    // leaf 7.0
    "bmi1", "avx2", "bmi2", "rtm", "mpx", "avx512f", "avx512dq", "rdseed", "adx", "avx512ifma",
    "clflushopt", "clwb", "avx512pf", "avx512er", "avx512cd", "sha_ni", "avx512bw", "avx512vl",
    "avx512vbmi", "pku", "waitpkg", "avx512_vbmi2", "gfni", "vaes", "vpclmulqdq", "avx512_vnni",
    "avx512_bitalg", "avx512_vpopcntdq", "rdpid", "kl", "movdiri", "movdir64b", "enqcmd",
    "avx512_4vnniw", "avx512_4fmaps", "uintr", "avx512_vp2intersect", "serialize", "tsxldtrk",
    "amx_bf16", "avx512_fp16", "amx_tile", "amx_int8",
    // leaf 7.1
    "sha512", "sm3", "sm4", "avx_vnni", "avx512_bf16", "cmpccxadd", "amx_fp16", "avx_ifma",
    // leaf 0xD.1
    "xsaveopt", "xsavec", "xgetbv1",
    // leaf 0x80000001
    "abm", "sse4a", "misalignsse", "xop", "fma4", "tbm", "lwp", "mwaitx", "mmxext", "rdtscp",
    "3dnowext", "3dnow",
];

/// What native user code can use on this host that the guest CPU model does not emulate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserGap {
    /// [`USER_EXTENSIONS`] the host has and the model lacks.
    pub extensions: Vec<&'static str>,
    /// XCR0 components the host enables (native XSAVE/XRSTOR use them) beyond the model's.
    pub xcr0: u64,
}

impl UserGap {
    /// Nothing missing.
    pub fn is_empty(&self) -> bool {
        self.extensions.is_empty() && self.xcr0 == 0
    }

    /// "instruction-set extensions a b; XSAVE components c d".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.extensions.is_empty() {
            parts.push(format!(
                "instruction-set extension(s) {}",
                self.extensions.join(" ")
            ));
        }
        if self.xcr0 != 0 {
            parts.push(format!("XSAVE component(s) {}", xcr0_names(self.xcr0)));
        }
        parts.join("; ")
    }
}

/// The part of `cmp` that native user code could execute (see [`USER_EXTENSIONS`]), and the
/// XCR0 components of `host_xcr0` beyond `guest_xcr0_max`.
pub fn user_gap(cmp: &Comparison, host_xcr0: Option<u64>, guest_xcr0_max: u64) -> UserGap {
    UserGap {
        extensions: cmp
            .host_only
            .iter()
            .filter(|f| f.register != "0xD.0 EAX" && USER_EXTENSIONS.contains(&f.name))
            .map(|f| f.name)
            .collect(),
        xcr0: host_xcr0.unwrap_or(0) & !guest_xcr0_max,
    }
}

/// How the guest CPU model is chosen, for [`admit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelChoice {
    /// A hand-picked model (`cpu: model=NAME`): a gap is refused.
    Named,
    /// A hand-picked model and `allow_cpu_mismatch=1`: a gap is accepted with a warning.
    NamedMismatchAllowed,
    /// `cpu: model=host`: the model already has every host feature Bochs can emulate; what is
    /// still missing no model of this Bochs has, so it is reported, not refused.
    Host,
}

/// Decides whether acceleration may start with this gap: `Ok` with the lines to log (none when
/// there is no gap), or `Err` with the refusal message.
pub fn admit(gap: &UserGap, choice: ModelChoice) -> Result<Vec<(Level, String)>, String> {
    if gap.is_empty() {
        return Ok(Vec::new());
    }
    let what = gap.describe();
    match choice {
        ModelChoice::Named => Err(format!(
            "the guest CPU model does not emulate what native user code can use on this host: {what}. \
             Use `cpu: model=host`, or accept that results may differ from emulation with \
             `plex86accel: allow_cpu_mismatch=1`"
        )),
        ModelChoice::NamedMismatchAllowed => Ok(vec![(
            Level::Error,
            format!(
                "allow_cpu_mismatch=1: native user code can use {what}, which the guest CPU model \
                 does not emulate; a guest program that uses them can fault where Bochs emulates \
                 them, and give results that differ from emulation (risk accepted by the bochsrc)"
            ),
        )]),
        ModelChoice::Host => Ok(vec![(
            Level::Error,
            format!(
                "cpu: model=host: native user code can use {what}, which this Bochs cannot emulate \
                 and hides from the guest's CPUID (native CPUID still shows it on hosts without \
                 CPUID faulting): a guest program that uses them anyway gets #UD (SIGILL) wherever \
                 Bochs emulates one of those instructions"
            ),
        )]),
    }
}

/// The host's CPUID, as native code sees it.
pub fn host_cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = std::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// The XCR0 components a CPUID function reports as supported (0xD.0 EDX:EAX).
pub fn supported_xcr0(f: CpuidFn<'_>) -> u64 {
    let r = read(f, 0xd, 0);
    u64::from(r[3]) << 32 | u64::from(r[0])
}

#[cfg(test)]
mod tests;
