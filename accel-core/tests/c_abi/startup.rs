//! Start-up: what init logs, refuses and allocates.

use crate::fixture::*;
use bochs_ffi::raw;
use host_driver::GuestRam;
use plex86_accel::ffi::*;
use std::ffi::{c_void, CString};
use std::sync::Mutex;

#[test]
fn startup_and_cpuid_comparison_are_logged() {
    let g = Guest::new("logs");
    assert!(g.logged("started: executor"));
    assert!(g.logged(
        "CPUID: native code sees popcnt (leaf 1 ECX bit 23), which the guest CPU model lacks"
    ));
    assert!(g.logged("CPUID: 1 feature(s) visible to native code"));
    assert!(g.logged("XCR0: host"));
    let lines = g.lines.lock().unwrap();
    let accepted = "allow_cpu_mismatch=1: native user code can use instruction-set extension(s) popcnt, which the guest CPU model does not emulate";
    assert!(
        lines
            .iter()
            .any(|(l, m)| *l == 2 && m.starts_with(accepted)),
        "the accepted mismatch as an ERROR: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .all(|(l, m)| *l == 1 || m.starts_with("allow_cpu_mismatch=1:")),
        "the rest INFO: {lines:?}"
    );
}

#[test]
fn cpu_model_gap_is_refused_unless_model_host_or_accepted() {
    let ram = GuestRam::new(RAM_SIZE).unwrap();
    let exe = CString::new(executor().into_os_string().into_encoded_bytes()).unwrap();
    let mut c = config(&ram);
    c.executor_path = exe.as_ptr();
    c.guest_cpuid = Some(cpuid_cb); // lacks POPCNT
    let e = init(&c).expect_err("a model without POPCNT on a host with it is refused");
    assert!(
        e.contains("instruction-set extension(s) popcnt.") && e.contains("`cpu: model=host`"),
        "{e}"
    );
    let lines: &'static Lines = Box::leak(Box::new(Mutex::new(Vec::new())));
    c.log = Some(log_cb);
    c.log_opaque = lines as *const Lines as *mut c_void;
    c.flags = raw::plex86_accel_config_flag_PLEX86_ACCEL_CONFIG_CPU_MODEL_HOST;
    let a = init(&c).unwrap_or_else(|e| panic!("model=host is never refused: {e}"));
    plex86_accel_shutdown(a);
    let lines = lines.lock().unwrap();
    assert!(
        lines.iter().any(|(l, m)| *l == 2
            && m.starts_with("cpu: model=host: native user code can use instruction-set extension(s) popcnt, which this Bochs cannot emulate")),
        "{lines:?}"
    );
}

#[test]
fn prealloc_flag_allocates_all_of_guest_ram() {
    let allocated = |ram: &GuestRam| {
        let f = std::fs::File::from(ram.fd().try_clone_to_owned().unwrap());
        std::os::unix::fs::MetadataExt::blocks(&f.metadata().unwrap()) * 512
    };
    for prealloc in [false, true] {
        let ram = GuestRam::new(RAM_SIZE).unwrap();
        let lines: &'static Lines = Box::leak(Box::new(Mutex::new(Vec::new())));
        let exe = CString::new(executor().into_os_string().into_encoded_bytes()).unwrap();
        let mut c = config(&ram);
        c.executor_path = exe.as_ptr();
        c.log = Some(log_cb);
        c.log_opaque = lines as *const Lines as *mut c_void;
        if prealloc {
            c.flags = raw::plex86_accel_config_flag_PLEX86_ACCEL_CONFIG_PREALLOC_RAM;
        }
        let a = init(&c).unwrap_or_else(|e| panic!("init failed: {e}"));
        // Shutdown waits for an allocation still running and logs its outcome.
        plex86_accel_shutdown(a);
        let logged = lines
            .lock()
            .unwrap()
            .iter()
            .any(|(level, m)| *level == 1 && m.contains("guest RAM allocated up front"));
        assert_eq!(logged, prealloc, "{:?}", lines.lock().unwrap());
        if prealloc {
            assert_eq!(allocated(&ram), RAM_SIZE);
        } else {
            assert!(
                allocated(&ram) < RAM_SIZE,
                "nothing allocates RAM without the flag"
            );
        }
    }
}
