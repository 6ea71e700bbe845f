use super::*;
use core::mem::{align_of, offset_of, size_of};

#[test]
fn guest_state_layout_is_pinned() {
    assert_eq!(size_of::<Segment>(), 16);
    assert_eq!(offset_of!(Segment, selector), 0);
    assert_eq!(offset_of!(Segment, attr), 2);
    assert_eq!(offset_of!(Segment, limit), 4);
    assert_eq!(offset_of!(Segment, base), 8);
    assert_eq!(offset_of!(Segment, flags), 12);
    assert_eq!(offset_of!(GuestState, gprs), 0);
    assert_eq!(offset_of!(GuestState, eip), 32);
    assert_eq!(offset_of!(GuestState, eflags), 36);
    assert_eq!(offset_of!(GuestState, segs), 40);
    assert_eq!(offset_of!(GuestState, cr0), 136);
    assert_eq!(offset_of!(GuestState, cr2), 140);
    assert_eq!(offset_of!(GuestState, cr3), 144);
    assert_eq!(offset_of!(GuestState, cr4), 148);
    assert_eq!(offset_of!(GuestState, efer), 152);
    assert_eq!(offset_of!(GuestState, xcr0), 160);
    assert_eq!(offset_of!(GuestState, xsave), 192);
    assert_eq!(size_of::<GuestState>(), 192 + XSAVE_AREA_SIZE);
    assert_eq!(align_of::<GuestState>(), 64);
}

#[test]
fn control_region_layout_is_pinned() {
    assert_eq!(offset_of!(LibArea, magic), 0);
    assert_eq!(offset_of!(LibArea, version), 8);
    assert_eq!(offset_of!(LibArea, library_pid), 12);
    assert_eq!(offset_of!(LibArea, ram_size), 16);
    assert_eq!(offset_of!(LibArea, n_ram_ranges), 24);
    assert_eq!(offset_of!(LibArea, budget_clock), 28);
    assert_eq!(offset_of!(LibArea, ram_ranges), 32);
    assert_eq!(offset_of!(LibArea, req_seq), 1056);
    assert_eq!(offset_of!(LibArea, req_kind), 1060);
    assert_eq!(offset_of!(LibArea, budget_ns), 1064);
    assert_eq!(offset_of!(LibArea, n_commands), 1072);
    assert_eq!(offset_of!(LibArea, spin), 1076);
    assert_eq!(offset_of!(LibArea, max_fills), 1080);
    assert_eq!(offset_of!(LibArea, commands), 1088);
    assert_eq!(offset_of!(LibArea, state), 5184);
    assert_eq!(size_of::<LibArea>(), 5184 + size_of::<GuestState>());
    assert_eq!(EXEC_AREA_OFFSET, 12288);
    assert_eq!(offset_of!(ExecArea, resp_seq), 0);
    assert_eq!(offset_of!(ExecArea, status), 4);
    assert_eq!(offset_of!(ExecArea, xsave_size), 8);
    assert_eq!(offset_of!(ExecArea, fail_code), 12);
    assert_eq!(offset_of!(ExecArea, xsave_features), 16);
    assert_eq!(offset_of!(ExecArea, exec_sleeping), 24);
    assert_eq!(offset_of!(ExecArea, msg_len), 28);
    assert_eq!(offset_of!(ExecArea, cpuid_faulting), 32);
    assert_eq!(offset_of!(ExecArea, msg), 36);
    assert_eq!(offset_of!(ExecArea, exit), 296);
    assert_eq!(offset_of!(RawExit, native_ns), 32);
    assert_eq!(offset_of!(RawExit, fill_ns), 40);
    assert_eq!(offset_of!(RawExit, demand_fills), 52);
    assert_eq!(offset_of!(RawExit, code_pages), 56);
    assert_eq!(offset_of!(ExecArea, state), 2432);
    assert_eq!(REGION_SIZE, 12288 + 8192);
}

#[test]
fn raw_reason_round_trips() {
    // Every value from 1 to the highest reason decodes, to itself; nothing else does.
    let highest = RawReason::Cpuid as u32;
    for v in 0..64 {
        match RawReason::from_u32(v) {
            Some(r) => assert_eq!(r as u32, v),
            None => assert!(v == 0 || v > highest, "{v} does not decode"),
        }
    }
    assert_eq!(RawReason::from_u32(highest), Some(RawReason::Cpuid));
}
