use super::config::{c_string, check_writable};
use super::registry::{lookup, register, REPORTED};
use super::*;
use crate::log::{Level, Logger};
use crate::NullAccel;
use std::ffi::CStr;

fn same<T>(_: T, _: T) {}

#[test]
fn exports_have_the_headers_signatures() {
    // Each pair must have the same type: compile errors when the header and the exports
    // drift apart. (The bindings' declarations resolve to these very definitions.)
    same(
        raw::plex86_accel_abi_version as unsafe extern "C" fn() -> _,
        plex86_accel_abi_version as unsafe extern "C" fn() -> _,
    );
    same(
        raw::plex86_accel_init as unsafe extern "C" fn(_, _, _) -> _,
        plex86_accel_init as unsafe extern "C" fn(_, _, _) -> _,
    );
    same(
        raw::plex86_accel_run as unsafe extern "C" fn(_, _, _, _, _),
        plex86_accel_run as unsafe extern "C" fn(_, _, _, _, _),
    );
    same(
        raw::plex86_accel_note_declined as unsafe extern "C" fn(_, _),
        plex86_accel_note_declined as unsafe extern "C" fn(_, _),
    );
    same(
        raw::plex86_accel_flush_tlb as unsafe extern "C" fn(_, _),
        plex86_accel_flush_tlb as unsafe extern "C" fn(_, _),
    );
    same(
        raw::plex86_accel_invlpg as unsafe extern "C" fn(_, _),
        plex86_accel_invlpg as unsafe extern "C" fn(_, _),
    );
    same(
        raw::plex86_accel_protect_code_page as unsafe extern "C" fn(_, _),
        plex86_accel_protect_code_page as unsafe extern "C" fn(_, _),
    );
    same(
        raw::plex86_accel_memory_map_changed as unsafe extern "C" fn(_, _, _),
        plex86_accel_memory_map_changed as unsafe extern "C" fn(_, _, _),
    );
    same(
        raw::plex86_accel_native_cpuid_is_hosts as unsafe extern "C" fn(_) -> _,
        plex86_accel_native_cpuid_is_hosts as unsafe extern "C" fn(_) -> _,
    );
    same(
        raw::plex86_accel_shutdown as unsafe extern "C" fn(_),
        plex86_accel_shutdown as unsafe extern "C" fn(_),
    );
    assert_eq!(plex86_accel_abi_version(), bochs_ffi::ABI_VERSION);
}

#[test]
fn the_statistics_path_is_checked_at_start_and_left_as_it_was() {
    let dir = std::env::temp_dir().join(format!("plex86-stats-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("stats.json");
    check_writable(&file).unwrap();
    assert!(!file.exists(), "a file the check created is removed");
    std::fs::write(&file, "old").unwrap();
    check_writable(&file).unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "old");
    assert!(check_writable(&dir).is_err(), "a directory");
    assert!(check_writable(&dir.join("missing/stats.json")).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn messages_are_truncated_and_terminated() {
    let mut buf = [1 as c_char; 8];
    copy_message(&mut buf, "héllo world");
    let bytes: Vec<u8> = buf.iter().map(|&c| c as u8).collect();
    assert_eq!(
        CStr::from_bytes_until_nul(&bytes)
            .unwrap()
            .to_str()
            .unwrap(),
        "héllo "
    );
    let mut one = [1 as c_char; 1];
    copy_message(&mut one, "x");
    assert_eq!(one[0], 0);
    copy_message(&mut [], "x");
    assert_eq!(c_string("a\0b").as_bytes(), b"a\\0b");
}

#[test]
fn stray_handles_are_reported_not_followed() {
    let bogus = 0x1000 as *mut raw::plex86_accel;
    assert!(matches!(with_core(bogus, |_| ()), Err(CallError::Unknown)));
    assert!(matches!(
        with_core(std::ptr::null_mut(), |_| ()),
        Err(CallError::Null)
    ));
    assert!(matches!(
        notify(bogus, "t", |_| panic!("followed")),
        Err(CallError::Unknown)
    ));
    // Calls with the stray handle touch no live accelerator, and each is reported.
    let (log, lines) = Logger::capture();
    let live = register(Box::new(NullAccel::new(log, None)));
    let logged = lines.lock().unwrap().len();
    REPORTED.with(|r| r.borrow_mut().clear());
    plex86_accel_shutdown(bogus);
    plex86_accel_flush_tlb(bogus, 1);
    assert_eq!(plex86_accel_native_cpuid_is_hosts(bogus), 1);
    let reported = REPORTED.with(|r| r.take());
    let unknown = CallError::Unknown.message();
    for what in [
        "plex86_accel_shutdown",
        "plex86_accel_flush_tlb",
        "plex86_accel_native_cpuid_is_hosts",
    ] {
        let line = format!("plex86-accel: {what}: {unknown}");
        assert!(reported.contains(&line), "{line}: {reported:?}");
    }
    assert!(unknown.contains("not a live accelerator handle"));
    assert!(matches!(with_core(bogus, |_| ()), Err(CallError::Unknown)));
    assert!(
        lookup(live).is_some(),
        "shutting down a stray pointer removed nothing"
    );
    assert!(with_core(live, |_| ()).is_ok(), "the live handle survives");
    assert_eq!(
        lines.lock().unwrap().len(),
        logged,
        "nothing logged on the live one"
    );
    plex86_accel_shutdown(live);
    assert!(matches!(with_core(live, |_| ()), Err(CallError::Unknown)));
}

#[test]
fn panics_become_failures_and_disable_the_core() {
    let (log, lines) = Logger::capture();
    let ptr = register(Box::new(NullAccel::new(log, None)));
    let r: Result<(), CallError> = with_core(ptr, |_| panic!("boom"));
    let e = r.unwrap_err();
    assert!(e.message().contains("boom"));
    assert!(!e.lost_native_progress());
    assert!(lines
        .lock()
        .unwrap()
        .iter()
        .any(|(l, m)| *l == Level::Panic && m.contains("boom")));
    // Still usable afterwards (not poisoned), and re-entrant calls are refused.
    let inner = with_core(ptr, |_| {
        matches!(with_core(ptr, |_| ()), Err(CallError::Busy))
    })
    .unwrap();
    assert!(inner);
    plex86_accel_shutdown(ptr);
    assert!(matches!(with_core(ptr, |_| ()), Err(CallError::Unknown)));
}
