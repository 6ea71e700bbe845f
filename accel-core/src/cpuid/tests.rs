use super::*;
use std::collections::HashMap;

fn cpu(regs: &[((u32, u32), [u32; 4])]) -> impl Fn(u32, u32) -> [u32; 4] {
    let m: HashMap<(u32, u32), [u32; 4]> = regs.iter().copied().collect();
    move |l, s| m.get(&(l, s)).copied().unwrap_or([0; 4])
}

#[test]
fn names_the_differences() {
    let host = cpu(&[
        ((0, 0), [0xd, 0, 0, 0]),
        (
            (1, 0),
            [
                0,
                0,
                (1 << 28) | (1 << 27) | (1 << 31),
                (1 << 25) | (1 << 26),
            ],
        ),
        ((7, 0), [1, (1 << 16) | (1 << 5), 1 << 4, 0]),
        ((7, 1), [1 << 5, 0, 0, 0]),
        ((0xd, 0), [0xe7, 0, 0, 0]),
        ((0x8000_0000, 0), [0x8000_0001, 0, 0, 0]),
        ((0x8000_0001, 0), [0, 0, 1 << 5, (1 << 11) | 1]),
    ]);
    let guest = cpu(&[
        ((0, 0), [0xd, 0, 0, 0]),
        ((1, 0), [0, 0, 1 << 28, (1 << 25) | (1 << 26) | (1 << 11)]),
        ((7, 0), [0, 1 << 5, 0, 0]),
        ((7, 1), [1 << 4, 0, 0, 0]), // invisible: guest 7.0 EAX says no subleaf 1
        ((0xd, 0), [0x7, 0, 0, 0]),
        ((0x8000_0000, 0), [0x8000_0001, 0, 0, 0]),
        ((0x8000_0001, 0), [0, 0, 0, 0]),
    ]);
    let cmp = compare(&host, &guest);
    let host_only: Vec<&str> = cmp.host_only.iter().map(|f| f.name).collect();
    assert_eq!(
        host_only,
        [
            "hypervisor",
            "avx512f",
            "avx512_bf16",
            "opmask",
            "zmm_hi256",
            "hi16_zmm",
            "abm",
            "syscall"
        ]
    );
    assert_eq!(
        cmp.guest_only.iter().map(|f| f.name).collect::<Vec<_>>(),
        ["sep"]
    );
    assert_eq!(
        cmp.host_only[1],
        Feature {
            register: "7.0 EBX",
            bit: 16,
            name: "avx512f"
        }
    );
    // OSXSAVE (1 ECX 27), OSPKE (7.0 ECX 4) and the AMD leaf-1 copy (0x80000001 EDX 0)
    // are not compared.
    let lines = report(&cmp, Some(0xe7), supported_xcr0(&guest));
    assert_eq!(lines.len(), host_only.len() + 2);
    assert_eq!(
        lines[1].1,
        "CPUID: native code sees avx512f (leaf 7.0 EBX bit 16), which the guest CPU model lacks"
    );
    assert!(lines[host_only.len()].1.contains("8 feature(s)"));
    assert!(lines[host_only.len()]
        .1
        .contains("1 guest feature(s) missing on the host"));
    assert!(lines[host_only.len()].1.ends_with(": sep"));
    let x = &lines.last().unwrap().1;
    assert!(
        x.contains("host 0xe7 (x87 sse avx opmask zmm_hi256 hi16_zmm)"),
        "{x}"
    );
    assert!(x.contains("guest model supports 0x7 (x87 sse avx)"), "{x}");
    assert!(
        x.ends_with(
            "native code can use opmask zmm_hi256 hi16_zmm although the guest cannot enable it"
        ),
        "{x}"
    );
    assert!(lines.iter().all(|(l, _)| *l == Level::Info));
}

fn gap_of(host: &[((u32, u32), [u32; 4])], guest: &[((u32, u32), [u32; 4])]) -> UserGap {
    let (h, g) = (cpu(host), cpu(guest));
    let cmp = compare(&h, &g);
    user_gap(&cmp, Some(supported_xcr0(&h)), supported_xcr0(&g))
}

#[test]
fn user_gap_keeps_only_what_user_code_can_execute() {
    // host: avx512f (7.0 EBX 16), hle (7.0 EBX 4), rtm (7.0 EBX 11), erms (7.0 EBX 9),
    // hypervisor (1 ECX 31), 3dnowprefetch (0x80000001 ECX 8), XCR0 x87 sse avx opmask
    let host = [
        ((0, 0), [0xd, 0, 0, 0]),
        ((1, 0), [0, 0, 1 << 31, 0]),
        (
            (7, 0),
            [0, (1 << 16) | (1 << 4) | (1 << 11) | (1 << 9), 0, 0],
        ),
        ((0xd, 0), [0x27, 0, 0, 0]),
        ((0x8000_0000, 0), [0x8000_0001, 0, 0, 0]),
        ((0x8000_0001, 0), [0, 0, 1 << 8, 0]),
    ];
    let guest = [((0, 0), [0xd, 0, 0, 0]), ((0xd, 0), [0x7, 0, 0, 0])];
    let gap = gap_of(&host, &guest);
    assert_eq!(gap.extensions, ["rtm", "avx512f"]);
    assert_eq!(gap.xcr0, 0x20);
    assert_eq!(
        gap.describe(),
        "instruction-set extension(s) rtm avx512f; XSAVE component(s) opmask"
    );
    // the same host as its own model: nothing missing
    assert!(gap_of(&host, &host).is_empty());
}

#[test]
fn admit_refuses_warns_or_reports() {
    let gap = UserGap {
        extensions: vec!["avx512f", "sha_ni"],
        xcr0: 0xe0,
    };
    let refusal = admit(&gap, ModelChoice::Named).unwrap_err();
    assert!(refusal.contains("avx512f sha_ni"), "{refusal}");
    assert!(refusal.contains("opmask zmm_hi256 hi16_zmm"), "{refusal}");
    assert!(refusal.contains("cpu: model=host"), "{refusal}");
    assert!(refusal.contains("allow_cpu_mismatch=1"), "{refusal}");
    for choice in [ModelChoice::NamedMismatchAllowed, ModelChoice::Host] {
        let lines = admit(&gap, choice).expect("accepted");
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].0, Level::Error);
        assert!(lines[0].1.contains("avx512f sha_ni"), "{}", lines[0].1);
    }
    assert!(admit(&gap, ModelChoice::NamedMismatchAllowed).unwrap()[0]
        .1
        .starts_with("allow_cpu_mismatch=1"));
    assert!(admit(&gap, ModelChoice::Host).unwrap()[0]
        .1
        .starts_with("cpu: model=host"));
    for choice in [
        ModelChoice::Named,
        ModelChoice::NamedMismatchAllowed,
        ModelChoice::Host,
    ] {
        assert_eq!(admit(&UserGap::default(), choice), Ok(Vec::new()));
    }
}

#[test]
fn user_extensions_are_named_bits() {
    for name in USER_EXTENSIONS {
        assert!(
            REGISTERS
                .iter()
                .filter(|r| r.name != "0xD.0 EAX")
                .any(|r| r.bits.iter().any(|(_, n)| n == name)),
            "{name} is not a feature bit of REGISTERS"
        );
    }
}

#[test]
fn leaves_beyond_the_maximum_read_as_zero() {
    let low = cpu(&[((0, 0), [1, 0, 0, 0]), ((7, 0), [0, u32::MAX, 0, 0])]);
    assert_eq!(read(&low, 7, 0), [0; 4]);
    let cmp = compare(&low, &low);
    assert_eq!(cmp, Comparison::default());
    assert_eq!(supported_xcr0(&low), 0);
}

#[test]
fn xcr0_naming() {
    assert_eq!(xcr0_names(0), "none");
    assert_eq!(xcr0_names(0x207), "x87 sse avx pkru");
    assert_eq!(xcr0_names(1 << 40), "bit40");
}

#[test]
fn host_cpuid_is_sane() {
    let v = host_cpuid(0, 0);
    assert!(v[0] >= 1);
    assert_ne!(host_cpuid(1, 0)[3] & (1 << 25), 0, "x86-64 hosts have SSE");
    assert_ne!(supported_xcr0(&host_cpuid) & 3, 0);
}
