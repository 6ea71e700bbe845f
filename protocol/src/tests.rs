use super::*;
use core::mem::{align_of, offset_of, size_of};

#[test]
fn guest_state_layout_is_pinned() {
    assert_eq!(size_of::<Segment>(), 24);
    assert_eq!(offset_of!(Segment, selector), 0);
    assert_eq!(offset_of!(Segment, attr), 2);
    assert_eq!(offset_of!(Segment, limit), 4);
    assert_eq!(offset_of!(Segment, base), 8);
    assert_eq!(offset_of!(Segment, flags), 16);
    assert_eq!(offset_of!(Segment, reserved), 20);
    assert_eq!(offset_of!(GuestState, gprs), 0);
    assert_eq!(offset_of!(GuestState, rip), 128);
    assert_eq!(offset_of!(GuestState, rflags), 136);
    assert_eq!(offset_of!(GuestState, segs), 144);
    assert_eq!(offset_of!(GuestState, cr0), 288);
    assert_eq!(offset_of!(GuestState, cr2), 296);
    assert_eq!(offset_of!(GuestState, cr3), 304);
    assert_eq!(offset_of!(GuestState, cr4), 312);
    assert_eq!(offset_of!(GuestState, efer), 320);
    assert_eq!(offset_of!(GuestState, xcr0), 328);
    assert_eq!(offset_of!(GuestState, reserved), 336);
    assert_eq!(offset_of!(GuestState, xsave), 384);
    assert_eq!(size_of::<GuestState>(), 384 + XSAVE_AREA_SIZE);
    assert_eq!(align_of::<GuestState>(), 64);
}

#[test]
fn the_mode_follows_efer_lma_and_cs_l() {
    let mut st = GuestState::default();
    st.segs[seg::CS] = Segment::flat_code(0x73);
    assert!(!st.long_mode() && !st.code64());
    st.efer = EFER_LMA | 1 << 8 | 1 << 11;
    assert!(st.long_mode() && !st.code64(), "compatibility mode");
    st.segs[seg::CS] = Segment::flat_code64(0x33);
    assert!(st.segs[seg::CS].long() && !st.segs[seg::CS].db());
    assert!(st.long_mode() && st.code64(), "64-bit mode");
    st.efer = 1 << 8;
    assert!(!st.code64(), "CS.L means nothing outside long mode");
    assert_eq!((gpr::EAX, gpr::EDI, gpr::R8, gpr::R15), (0, 7, 8, 15));
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
    assert_eq!(offset_of!(RawExit, reason), 0);
    assert_eq!(offset_of!(RawExit, vector), 4);
    assert_eq!(offset_of!(RawExit, error_code), 8);
    assert_eq!(offset_of!(RawExit, access), 12);
    assert_eq!(offset_of!(RawExit, linear), 16);
    assert_eq!(offset_of!(RawExit, detail), 24);
    assert_eq!(offset_of!(RawExit, native_ns), 32);
    assert_eq!(offset_of!(RawExit, fill_ns), 40);
    assert_eq!(offset_of!(RawExit, n_code_pages), 48);
    assert_eq!(offset_of!(RawExit, demand_fills), 52);
    assert_eq!(offset_of!(RawExit, flags), 56);
    assert_eq!(offset_of!(RawExit, reserved), 60);
    assert_eq!(offset_of!(RawExit, code_pages), 64);
    assert_eq!(size_of::<RawExit>(), 64 + 8 * MAX_CODE_PAGES);
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
