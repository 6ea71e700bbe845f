//! Costs on Bochs's hook path: the state conversion both ways (per native run) and a declined
//! entry (per policy decline), in the safe core and through the C ABI.
//!
//! `cargo bench -p accel-core --bench state`. The C-ABI policy decline needs the executor
//! (`$PLEX86_EXECUTOR`, or `plex86-executor` built next to this bench's target directory);
//! without it only the null accelerator's C-ABI path is measured.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use host_driver::{DriverError, ExitRecord, GuestState, MmuCommand, XsaveInfo};
use plex86_accel::ffi::{plex86_accel_init, plex86_accel_run, plex86_accel_shutdown};
use plex86_accel::state;
use plex86_accel::{log::Logger, AccelOps, Accelerator, Backend, Config, CpuState, RunOutcome};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;
use test_support::guest_state::{layouts, sample_state};

/// A backend that is never entered (declines stop before it).
struct Idle;

impl Backend for Idle {
    fn xsave_info(&self) -> XsaveInfo {
        layouts::AMD
    }
    fn run(
        &mut self,
        _: &mut GuestState,
        _: Duration,
        _: &[MmuCommand],
    ) -> Result<&ExitRecord, DriverError> {
        unreachable!("declined entries never run")
    }
    fn respawn(&mut self, _: &[Range<u64>]) -> Result<(), String> {
        Ok(())
    }
    fn describe(&self) -> String {
        "idle".into()
    }
    fn ran_on(&self) -> plex86_accel::Which {
        plex86_accel::Which::Executor
    }
}

fn conversions(c: &mut Criterion) {
    let cpu = sample_state();
    for (name, xs) in [("amd", layouts::AMD), ("intel", layouts::INTEL)] {
        let mut gs = Box::new(GuestState::default());
        c.bench_function(&format!("to_guest ({name} layout)"), |b| {
            b.iter(|| state::to_guest(black_box(&cpu), black_box(&xs), &mut gs))
        });
        state::to_guest(&cpu, &xs, &mut gs);
        let mut back = cpu;
        c.bench_function(&format!("from_guest ({name} layout)"), |b| {
            b.iter(|| state::from_guest(black_box(&gs), black_box(&xs), &mut back))
        });
    }
}

fn core_decline(c: &mut Criterion) {
    let cfg = Config {
        ram_size: 16 << 20,
        ram_map: std::iter::once(0..16 << 20).collect(),
        ips: 60_000_000,
        executor_path: None,
        stats_path: None,
        min_user_insns: 1000,
        prealloc_ram: false,
        allow_cpu_mismatch: false,
        cpu_model_host: false,
        stub_base: host_driver::protocol::stub::DEFAULT_BASE,
    };
    let mut a = Accelerator::with_backend(
        Idle,
        &cfg,
        Logger::new(std::sync::Arc::new(|_, _| {})),
        None,
        None,
    );
    let mut cpu = sample_state();
    c.bench_function("core: policy decline (short burst)", |b| {
        b.iter(|| {
            matches!(
                black_box(a.run(&mut cpu, 1_000_000, 10)),
                RunOutcome::Declined { .. }
            )
        })
    });
    c.bench_function("core: policy decline (state checked, unsupported)", |b| {
        let mut bad = sample_state();
        bad.seg[5].selector |= 4; // LDT selector in GS: found after checking the other five
        b.iter(|| {
            matches!(
                black_box(a.run(&mut bad, 1_000_000, 5000)),
                RunOutcome::Declined { .. }
            )
        })
    });
}

fn executor() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PLEX86_EXECUTOR") {
        return Some(p.into());
    }
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("plex86-executor");
    p.is_file().then_some(p)
}

fn c_abi_decline(c: &mut Criterion) {
    let ram = host_driver::GuestRam::new(16 << 20).expect("guest RAM");
    let mut cfg = plex86_accel_test_config(&ram);
    let run = |c: &mut Criterion,
               name: &str,
               accel: *mut bochs_ffi::raw::plex86_accel,
               user_insns: u64| {
        let mut cpu: CpuState = sample_state();
        // SAFETY: plain data; every field is written by the runs below before it is read.
        let mut exit: bochs_ffi::raw::plex86_accel_exit = unsafe { std::mem::zeroed() };
        c.bench_function(name, |b| {
            b.iter(|| {
                // SAFETY: valid handle, state and exit for the duration of the call.
                unsafe { plex86_accel_run(accel, &mut cpu, 1_000_000, user_insns, &mut exit) };
                assert_eq!(exit.status, 0);
            })
        });
    };
    let path = executor();
    if let Some(p) = &path {
        let c_path = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        cfg.executor_path = c_path.as_ptr();
        let mut err = [0 as std::ffi::c_char; 256];
        // SAFETY: a complete configuration and a writable error buffer.
        let accel = unsafe { plex86_accel_init(&cfg, err.as_mut_ptr(), err.len()) };
        assert!(!accel.is_null(), "init failed");
        run(c, "C ABI: policy decline (short burst)", accel, 10);
        plex86_accel_shutdown(accel);
        cfg.executor_path = std::ptr::null();
    } else {
        eprintln!("no plex86-executor found: skipping the C-ABI policy decline");
    }
    std::env::set_var("PLEX86_ACCEL_BACKEND", "null");
    let mut err = [0 as std::ffi::c_char; 256];
    // SAFETY: as above.
    let accel = unsafe { plex86_accel_init(&cfg, err.as_mut_ptr(), err.len()) };
    std::env::remove_var("PLEX86_ACCEL_BACKEND");
    assert!(!accel.is_null());
    run(c, "C ABI: null accelerator decline", accel, 10);
    plex86_accel_shutdown(accel);
}

fn plex86_accel_test_config(ram: &host_driver::GuestRam) -> bochs_ffi::raw::plex86_accel_config {
    use std::os::fd::AsRawFd;
    let mut ranges = [bochs_ffi::raw::plex86_accel_ram_range { start: 0, end: 0 }; 16];
    ranges[0].end = ram.size();
    bochs_ffi::raw::plex86_accel_config {
        abi_version: bochs_ffi::ABI_VERSION,
        struct_size: std::mem::size_of::<bochs_ffi::raw::plex86_accel_config>() as u32,
        ram_fd: ram.fd().as_raw_fd(),
        n_ram_ranges: 1,
        ram_size: ram.size(),
        ram_ranges: ranges,
        ips: 60_000_000,
        executor_path: std::ptr::null(),
        stats_path: std::ptr::null(),
        min_user_insns: 1000,
        flags: 0,
        log: None,
        log_opaque: std::ptr::null_mut(),
        guest_cpuid: None,
        cpuid_opaque: std::ptr::null_mut(),
        stub_base: 0,
    }
}

criterion_group!(benches, conversions, core_decline, c_abi_decline);
criterion_main!(benches);
