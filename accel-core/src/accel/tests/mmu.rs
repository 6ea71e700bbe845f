//! MMU coherence: notifications, code pages, paging changes, memory-map changes.

use super::*;

#[test]
fn notifications_become_deduplicated_commands_sent_once() {
    let mut t = accel(vec![]);
    t.accel.invlpg(0x0804_8123);
    t.accel.invlpg(0x0804_8fff);
    t.accel.flush_tlb(false);
    t.accel.protect_code_page(0x0012_3456);
    t.accel.protect_code_page(0x0012_3000);
    t.accel.protect_code_page(RAM + 0x1000); // outside RAM: ignored
    let mut cpu = sample_state();
    run(&mut t, &mut cpu);
    assert_eq!(
        commands_of(&t, 0),
        vec![
            MmuCommand::FlushNonGlobal,
            MmuCommand::InvalidatePage(0x0804_8000),
            MmuCommand::WriteProtectPhysPage(0x0012_3000)
        ]
    );
    run(&mut t, &mut cpu);
    assert!(commands_of(&t, 1).is_empty(), "sent once");
    // Already protected and not written since: no new command.
    t.accel.protect_code_page(0x0012_3000);
    run(&mut t, &mut cpu);
    assert!(commands_of(&t, 2).is_empty());
    let st = t.accel.stats();
    assert_eq!(
        (
            st.invlpg,
            st.flush_non_global,
            st.protect_requests,
            st.write_protects_sent,
            st.commands_sent
        ),
        (2, 1, 4, 1, 3)
    );
}

#[test]
fn written_code_pages_are_reported_and_unprotected() {
    let mut s = step(ExitReason::Privileged);
    s.pages = vec![0x0012_3000];
    let mut t = accel(vec![s]);
    t.accel.protect_code_page(0x0012_3000);
    let mut cpu = sample_state();
    match run(&mut t, &mut cpu) {
        RunOutcome::Ran { code_pages, .. } => assert_eq!(code_pages, &[0x0012_3000]),
        o => panic!("{o:?}"),
    }
    assert_eq!(t.accel.stats().code_page_invalidations, 1);
    // Bochs decodes the page again and asks for protection again: it is sent again.
    t.accel.protect_code_page(0x0012_3000);
    run(&mut t, &mut cpu);
    assert_eq!(
        commands_of(&t, 1),
        vec![MmuCommand::WriteProtectPhysPage(0x0012_3000)]
    );
}

#[test]
fn paging_changes_add_flushes() {
    let mut t = accel(vec![]);
    let mut cpu = sample_state();
    run(&mut t, &mut cpu);
    assert!(
        commands_of(&t, 0).is_empty(),
        "a fresh mirror needs no flush"
    );
    // CR3 changed and Bochs reported the flush: only what Bochs reported.
    cpu.cr3 += 0x1000;
    t.accel.flush_tlb(false);
    run(&mut t, &mut cpu);
    assert_eq!(commands_of(&t, 1), vec![MmuCommand::FlushNonGlobal]);
    // CR3 changed without a report: a full flush, counted.
    cpu.cr3 += 0x1000;
    run(&mut t, &mut cpu);
    assert_eq!(commands_of(&t, 2), vec![MmuCommand::FlushAll]);
    assert_eq!(t.accel.stats().unreported_cr3_flushes, 1);
    // Paging-mode bits: PAE, PGE, NXE, WP.
    for f in [
        |c: &mut CpuState| c.cr4 ^= 1 << 5,
        |c: &mut CpuState| c.cr4 ^= 1 << 7,
        |c: &mut CpuState| c.efer ^= 1 << 11,
        |c: &mut CpuState| c.cr0 ^= 1 << 16,
    ] {
        f(&mut cpu);
        let n = t.log.lock().unwrap().runs.len();
        run(&mut t, &mut cpu);
        assert_eq!(commands_of(&t, n), vec![MmuCommand::FlushAll]);
    }
    assert_eq!(t.accel.stats().paging_mode_flushes, 4);
    // Other CR4 bits do not matter.
    cpu.cr4 ^= 1 << 9;
    let n = t.log.lock().unwrap().runs.len();
    run(&mut t, &mut cpu);
    assert!(commands_of(&t, n).is_empty());
}

#[test]
fn memory_map_change_restarts_the_executor_and_reprotects() {
    let mut t = accel(vec![]);
    t.accel.protect_code_page(0x5000);
    let mut cpu = sample_state();
    run(&mut t, &mut cpu);
    // Same map: just a flush.
    t.accel.memory_map_changed(&[(0, RAM)]);
    run(&mut t, &mut cpu);
    assert_eq!(commands_of(&t, 1), vec![MmuCommand::FlushAll]);
    assert!(t.log.lock().unwrap().respawns.is_empty());
    // A hole: restart with the new map; the protection is sent to the new executor.
    t.accel
        .memory_map_changed(&[(0, 0xa0000), (0x10_0000, RAM), (0xc0000, 0xc8000)]);
    t.accel.invlpg(0x1000);
    run(&mut t, &mut cpu);
    assert_eq!(
        t.log.lock().unwrap().respawns,
        vec![vec![0..0xa0000, 0xc0000..0xc8000, 0x10_0000..RAM]]
    );
    assert_eq!(
        commands_of(&t, 2),
        vec![MmuCommand::WriteProtectPhysPage(0x5000)]
    );
    let st = t.accel.stats();
    assert_eq!((st.memory_map_changes, st.respawns), (2, 1));
    // A failing restart: FAILED without lost progress.
    t.accel.backend.respawn_error = Some("spawn failed".into());
    t.accel.memory_map_changed(&[(0, RAM)]);
    match run(&mut t, &mut cpu) {
        RunOutcome::Failed {
            message,
            lost_native_progress: false,
        } => assert!(message.contains("spawn failed")),
        o => panic!("{o:?}"),
    }
}
