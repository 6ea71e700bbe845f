//! The log and the statistics: exit instructions, the final table, XCR0 and CPUID reports.

use super::*;

#[test]
fn exit_instructions_are_named_for_the_statistics() {
    let (mem, gs) = paging_setup();
    mem.put(0x10000, &[0x8e, 0xd8, 0xf4]); // mov ds, eax; hlt
    let mut cpu = sample_state();
    cpu.cr0 = gs.cr0;
    cpu.cr3 = gs.cr3;
    cpu.cr4 &= !(1 << 5);
    cpu.rip = 0x40_0000;
    let mut hlt = step(ExitReason::Privileged);
    hlt.mutate = Some(Box::new(|g: &mut GuestState| g.rip = 0x40_0002));
    let mut t = accel_with(
        vec![
            step(ExitReason::SegmentLoad),
            hlt,
            step(ExitReason::Privileged),
            step(ExitReason::Rdtsc { rdtscp: false }),
        ],
        config(),
        Some(Box::new(mem)),
    );
    run(&mut t, &mut cpu);
    assert_eq!(cpu.rip, 0x40_0000);
    run(&mut t, &mut cpu);
    assert_eq!(cpu.rip, 0x40_0002);
    cpu.rip = 0x80_0000; // unmapped: counted as undecoded
    run(&mut t, &mut cpu);
    run(&mut t, &mut cpu); // RDTSC: not decoded at all
    let st = t.accel.stats();
    let mut named: Vec<(usize, String, u64)> = st
        .instructions
        .iter()
        .map(|(&(r, k), &n)| (r, k.label(), n))
        .collect();
    named.sort();
    assert_eq!(
        named,
        vec![(10, "hlt".to_string(), 1), (11, "mov ds".to_string(), 1)]
    );
    assert_eq!(st.undecoded, 1);
}

#[test]
fn finish_logs_the_table_and_writes_json_once() {
    let dir = std::env::temp_dir().join(format!("plex86-accel-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("stats.json");
    let mut cfg = config();
    cfg.stats_path = Some(path.clone());
    let mut t = accel_with(vec![step(ExitReason::Privileged)], cfg, None);
    let mut cpu = sample_state();
    run(&mut t, &mut cpu);
    t.accel.note_declined(17);
    t.accel.finish();
    t.accel.finish();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(v["runs"], 1);
    assert_eq!(v["exits"]["privileged"], 1);
    assert_eq!(v["declines"]["event_pending"], 1);
    let lines = t.lines.lock().unwrap();
    assert_eq!(
        lines
            .iter()
            .filter(|(_, m)| m.starts_with("statistics:"))
            .count(),
        1
    );
    assert!(lines
        .iter()
        .any(|(_, m)| m.starts_with("started: fake backend")));
    assert!(lines
        .iter()
        .any(|(_, m)| m.starts_with("guest XCR0 in force: 0xe7")));
    drop(lines);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn xcr0_leak_is_logged_once_per_value() {
    let mut t = accel(vec![]);
    let mut cpu = sample_state();
    cpu.xcr0 = 7;
    run(&mut t, &mut cpu);
    run(&mut t, &mut cpu);
    let lines = t.lines.lock().unwrap();
    let x: Vec<&String> = lines
        .iter()
        .map(|(_, m)| m)
        .filter(|m| m.starts_with("guest XCR0"))
        .collect();
    assert_eq!(x.len(), 1);
    assert!(
        x[0].contains("native code can also use opmask zmm_hi256 hi16_zmm"),
        "{}",
        x[0]
    );
}

#[test]
fn cpuid_comparison_is_logged() {
    let t = accel(vec![]);
    let guest = |leaf: u32, sub: u32| {
        let mut r = cpuid::host_cpuid(leaf, sub);
        if leaf == 1 {
            r[2] &= !(1 << 23); // the guest model lacks POPCNT
        }
        r
    };
    let cmp = cpuid::compare(&cpuid::host_cpuid, &guest);
    t.accel
        .log_cpuid(Some((&cmp, cpuid::supported_xcr0(&guest))));
    let lines = t.lines.lock().unwrap();
    assert!(lines.iter().any(|(_, m)| m
        == "CPUID: native code sees popcnt (leaf 1 ECX bit 23), which the guest CPU model lacks"));
    assert!(lines
        .iter()
        .any(|(_, m)| m.starts_with("CPUID: 1 feature(s)")));
    assert!(lines.iter().any(|(_, m)| m.starts_with("XCR0: host 0xe7")));
}
