//! Bad input: configurations init refuses, bad pointers and stale handles (reported, never
//! followed).

use crate::fixture::*;
use bochs_ffi::raw;
use host_driver::GuestRam;
use plex86_accel::ffi::*;
use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::Mutex;

#[test]
fn init_rejects_bad_configurations_clearly() {
    let ram = GuestRam::new(RAM_SIZE).unwrap();
    let exe = CString::new(executor().into_os_string().into_encoded_bytes()).unwrap();
    let bad = |f: &dyn Fn(&mut raw::plex86_accel_config)| {
        let mut c = config(&ram);
        c.executor_path = exe.as_ptr();
        f(&mut c);
        init(&c).map(|a| plex86_accel_shutdown(a)).unwrap_err()
    };
    let e = bad(&|c| c.abi_version = 1);
    assert!(
        e.contains("abi_version is 1") && e.contains("ABI 10"),
        "{e}"
    );
    let e = bad(&|c| c.struct_size = 100);
    let size = std::mem::size_of::<raw::plex86_accel_config>();
    assert!(
        e.contains("struct_size is 100") && e.contains(&size.to_string()),
        "{e}"
    );
    assert!(bad(&|c| c.ram_fd = -1).contains("ram_fd -1: Bad file descriptor"));
    assert!(bad(&|c| c.ram_fd = 999_999).contains("Bad file descriptor"));
    assert!(bad(&|c| c.ips = 0).contains("ips is 0"));
    assert!(bad(&|c| c.ram_size = 4097).contains("ram_size"));
    assert!(bad(&|c| c.n_ram_ranges = 17).contains("n_ram_ranges is 17"));
    assert!(bad(&|c| c.ram_ranges[0].end = RAM_SIZE * 2).contains("beyond ram_size"));
    let e = bad(&|c| c.flags = 0x19);
    assert!(
        e.contains("config.flags is 0x19") && e.contains("flag 0x18"),
        "{e}"
    );
    assert!(bad(&|c| c.n_ram_ranges = 0).contains("no plain-RAM range"));
    let e = bad(&|c| c.stub_base = 0x1000);
    assert!(
        e.contains("stub_base=0x1000") && e.contains("2 MiB-aligned"),
        "{e}"
    );
    let e = bad(&|c| c.stub_base = 0x8000_0000);
    assert!(e.contains("below 4 GiB"), "{e}");
    let missing = CString::new("/nonexistent/dir/plex86-executor").unwrap();
    let e = bad(&|c| c.executor_path = missing.as_ptr());
    assert!(e.contains("/nonexistent/dir/plex86-executor"), "{e}");
    // Default location: next to the library (here the test binary), named in the message.
    if std::env::var_os("PLEX86_EXECUTOR").is_none() {
        let e = bad(&|c| c.executor_path = std::ptr::null());
        let deps = std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .join("plex86-executor");
        assert!(
            e.contains(&deps.display().to_string()) && e.contains("$PLEX86_EXECUTOR unset"),
            "{e}"
        );
    }
    // NULL config, NULL or tiny error buffers.
    let mut err = [0x55 as c_char; 8];
    // SAFETY: NULL config is allowed; the buffer is writable.
    assert!(unsafe { plex86_accel_init(std::ptr::null(), err.as_mut_ptr(), err.len()) }.is_null());
    // SAFETY: the library NUL-terminated within the 8 bytes.
    let msg = unsafe { CStr::from_ptr(err.as_ptr()) };
    assert_eq!(msg.to_str().unwrap(), "config ");
    let mut c = config(&ram);
    c.abi_version = 9;
    // SAFETY: no error buffer: only the result tells.
    assert!(unsafe { plex86_accel_init(&c, std::ptr::null_mut(), 0) }.is_null());
    // A failure after the configuration was read is logged through its callback too.
    let lines: &'static Lines = Box::leak(Box::new(Mutex::new(Vec::new())));
    let mut c = config(&ram);
    c.ips = 0;
    c.log = Some(log_cb);
    c.log_opaque = lines as *const Lines as *mut c_void;
    assert!(init(&c).is_err());
    assert!(lines
        .lock()
        .unwrap()
        .iter()
        .any(|(l, m)| *l == 2 && m.contains("init failed: config: ips is 0")));
}

#[test]
fn run_and_notifications_reject_bad_pointers() {
    let mut g = Guest::new("badptr");
    g.code(|a| a.hlt());
    // SAFETY: NULL accel with a valid state and exit.
    unsafe {
        plex86_accel_run(
            std::ptr::null_mut(),
            &mut g.state,
            BUDGET,
            1000,
            &mut g.exit,
        )
    };
    assert_eq!((g.exit.status, g.exit.lost_native_progress), (FAILED, 0));
    assert!(g.message().contains("accel is NULL"));
    // SAFETY: NULL exit: nothing can be reported, nothing happens.
    unsafe { plex86_accel_run(g.accel, &mut g.state, BUDGET, 1000, std::ptr::null_mut()) };
    assert!(g.logged("exit is NULL"));
    // SAFETY: NULL ranges with a count: logged, treated as no RAM.
    unsafe { plex86_accel_memory_map_changed(g.accel, std::ptr::null(), 3) };
    assert!(g.logged("ranges is NULL or misaligned with n_ranges = 3"));
    // The accelerator still works; with no RAM, the fetch needs emulation.
    g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_NEEDS_EMULATION);
    // SAFETY: NULL state is checked.
    unsafe { plex86_accel_run(g.accel, std::ptr::null_mut(), BUDGET, 1000, &mut g.exit) };
    assert_eq!((g.exit.status, g.exit.lost_native_progress), (FAILED, 0));
    assert!(g.message().contains("state is NULL"));
    // Like every FAILED, it disabled the accelerator.
    assert_eq!(g.run(), DECLINED);
    assert_eq!(g.exit.decline_reason, 4);
    let stale = g.accel;
    g.shutdown();
    // After shutdown the handle is unknown: reported, never followed.
    // SAFETY: the stale handle is only compared against live ones.
    unsafe { plex86_accel_run(stale, &mut g.state, BUDGET, 1000, &mut g.exit) };
    assert_eq!(g.exit.status, FAILED);
    assert!(
        g.message().contains("not a live accelerator handle"),
        "{}",
        g.message()
    );
    plex86_accel_flush_tlb(stale, 1);
    plex86_accel_shutdown(stale);
    plex86_accel_shutdown(std::ptr::null_mut());
}

#[test]
fn abi_version() {
    assert_eq!(plex86_accel_abi_version(), 10);
}
