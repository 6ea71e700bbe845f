//! The fixture: guest RAM with page tables for a flat user-mode setup, the callbacks, and
//! [`Guest`], which runs tiny programs through the C ABI.

use bochs_ffi::raw;
use host_driver::GuestRam;
use iced_x86::code_asm::*;
use plex86_accel::ffi::*;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Mutex;
use test_support::pagetables::{self, bits, Mode, PageTables};

pub use test_support::pagetables::layout::*;
/// 1 tick = 1 ns: budgets and charges read directly as host time.
pub const IPS: u64 = 1_000_000_000;
pub const BUDGET: u64 = 2_000_000_000;

pub const DECLINED: u32 = raw::plex86_accel_status_PLEX86_ACCEL_DECLINED;
pub const RAN: u32 = raw::plex86_accel_status_PLEX86_ACCEL_RAN;
pub const FAILED: u32 = raw::plex86_accel_status_PLEX86_ACCEL_FAILED;
pub const BACKOFF: u32 = raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_BACKOFF;

pub fn executor() -> PathBuf {
    test_support::executor_path()
}

pub fn host_xcr0() -> u64 {
    let r = std::arch::x86_64::__cpuid_count(0xd, 0);
    u64::from(r.edx) << 32 | u64::from(r.eax)
}

// ---- callbacks -----------------------------------------------------------------------------

pub type Lines = Mutex<Vec<(c_int, String)>>;

pub unsafe extern "C" fn log_cb(opaque: *mut c_void, level: c_int, message: *const c_char) {
    // SAFETY: `opaque` is the `Lines` leaked by `Guest::new` for the whole test, and the
    // library passes a NUL-terminated message valid during the call.
    let (lines, msg) = unsafe { (&*(opaque as *const Lines), CStr::from_ptr(message)) };
    lines
        .lock()
        .unwrap()
        .push((level, msg.to_string_lossy().into_owned()));
}

/// The guest model: the host's CPUID without POPCNT.
pub unsafe extern "C" fn cpuid_cb(_opaque: *mut c_void, leaf: u32, subleaf: u32, out: *mut u32) {
    let r = std::arch::x86_64::__cpuid_count(leaf, subleaf);
    let mut v = [r.eax, r.ebx, r.ecx, r.edx];
    if leaf == 1 {
        v[2] &= !(1 << 23);
    }
    // SAFETY: the library passes an array of four u32.
    unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), out, 4) };
}

// ---- the guest -------------------------------------------------------------------------------

pub struct Guest {
    pub ram: GuestRam,
    pub tables: PageTables,
    pub accel: *mut raw::plex86_accel,
    pub state: raw::plex86_accel_cpu_state,
    pub exit: raw::plex86_accel_exit,
    pub lines: &'static Lines,
    pub stats: PathBuf,
    _strings: Vec<CString>,
}

pub fn seg(selector: u16, ty: u16) -> raw::plex86_accel_segment {
    raw::plex86_accel_segment {
        selector,
        attr: ty | 0x10 | (3 << 5) | 0x80 | (1 << 14) | (1 << 15),
        limit: 0xfffff,
        valid: 1,
        reserved: 0,
        base: 0,
    }
}

pub fn null_seg() -> raw::plex86_accel_segment {
    raw::plex86_accel_segment {
        selector: 0,
        attr: 0,
        limit: 0,
        valid: 0,
        reserved: 0,
        base: 0,
    }
}

/// A configuration for `ram` with every pointer set by the caller.
pub fn config(ram: &GuestRam) -> raw::plex86_accel_config {
    let mut ranges = [raw::plex86_accel_ram_range { start: 0, end: 0 }; 16];
    ranges[0].end = ram.size();
    raw::plex86_accel_config {
        abi_version: raw::PLEX86_ACCEL_ABI_VERSION,
        struct_size: std::mem::size_of::<raw::plex86_accel_config>() as u32,
        ram_fd: ram.fd().as_raw_fd(),
        n_ram_ranges: 1,
        ram_size: ram.size(),
        ram_ranges: ranges,
        ips: IPS,
        executor_path: std::ptr::null(),
        stats_path: std::ptr::null(),
        min_user_insns: 100,
        flags: 0,
        log: None,
        log_opaque: std::ptr::null_mut(),
        guest_cpuid: None,
        cpuid_opaque: std::ptr::null_mut(),
        stub_base: 0,
    }
}

pub fn init(cfg: &raw::plex86_accel_config) -> Result<*mut raw::plex86_accel, String> {
    crate::select_backend();
    let mut err = [0 as c_char; 256];
    // SAFETY: a complete configuration (its strings outlive the call) and a writable buffer.
    let a = unsafe { plex86_accel_init(cfg, err.as_mut_ptr(), err.len()) };
    if a.is_null() {
        // SAFETY: init NUL-terminated the message within the buffer.
        Err(unsafe { CStr::from_ptr(err.as_ptr()) }
            .to_string_lossy()
            .into_owned())
    } else {
        Ok(a)
    }
}

impl Guest {
    pub fn new(name: &str) -> Guest {
        Self::with_executor(name, executor())
    }

    /// A guest whose accelerator starts `exe` as its executor.
    pub fn with_executor(name: &str, exe: PathBuf) -> Guest {
        let ram = GuestRam::new(RAM_SIZE).expect("guest RAM");
        let tables = PageTables::new(&ram, Mode::TwoLevel);
        let mut g = Guest {
            ram,
            tables,
            accel: std::ptr::null_mut(),
            // SAFETY: plain data, filled in below.
            state: unsafe { std::mem::zeroed() },
            // SAFETY: plain data, written by every run.
            exit: unsafe { std::mem::zeroed() },
            lines: Box::leak(Box::new(Mutex::new(Vec::new()))),
            stats: std::env::temp_dir()
                .join(format!("plex86-accel-{name}-{}.json", std::process::id())),
            _strings: Vec::new(),
        };
        g.tables.map_layout(&g.ram);
        let s = &mut g.state;
        s.seg = [
            seg(0x23, 3),
            seg(0x1b, 0xb),
            seg(0x23, 3),
            seg(0x23, 3),
            null_seg(),
            null_seg(),
        ];
        s.mode = raw::plex86_accel_mode_PLEX86_ACCEL_MODE_PROTECTED;
        s.rflags = 0x202;
        s.gpr[4] = u64::from(STACK_TOP - 16);
        s.rip = u64::from(CODE);
        let (paging_cr0, paging_cr4, _) = Mode::TwoLevel.control_registers();
        s.cr0 = u64::from(paging_cr0);
        s.cr3 = pagetables::CR3;
        s.cr4 = u64::from(paging_cr4 | 0x200 | (1 << 18)); // and OSFXSR, OSXSAVE
        s.xcr0 = host_xcr0() & 0xe7;
        s.fpu.fcw = 0x37f;
        s.fpu.ftw = 0xffff;
        s.fpu.mxcsr = 0x1f80;
        let exe = CString::new(exe.into_os_string().into_encoded_bytes()).unwrap();
        let stats = CString::new(g.stats.clone().into_os_string().into_encoded_bytes()).unwrap();
        let mut cfg = config(&g.ram);
        cfg.executor_path = exe.as_ptr();
        cfg.stats_path = stats.as_ptr();
        cfg.log = Some(log_cb);
        cfg.log_opaque = g.lines as *const Lines as *mut c_void;
        cfg.guest_cpuid = Some(cpuid_cb);
        // cpuid_cb's model lacks POPCNT, which the host has
        cfg.flags = raw::plex86_accel_config_flag_PLEX86_ACCEL_CONFIG_ALLOW_CPU_MISMATCH;
        g.accel = init(&cfg).unwrap_or_else(|e| panic!("init failed: {e}"));
        g._strings = vec![exe, stats];
        g
    }

    pub fn map(&mut self, lin: u32, phys: u64) {
        self.tables.map(&self.ram, lin, phys, bits::URW);
    }

    pub fn code(&mut self, f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
        let mut a = CodeAssembler::new(32).unwrap();
        f(&mut a).unwrap();
        let bytes = a.assemble(u64::from(CODE)).unwrap();
        self.ram.write(CODE_PHYS, &bytes);
        self.state.rip = u64::from(CODE);
        bytes
    }

    pub fn run_with(&mut self, budget: u64, user_insns: u64) -> u32 {
        // SAFETY: the handle, state and exit are valid for the call.
        unsafe {
            plex86_accel_run(
                self.accel,
                &mut self.state,
                budget,
                user_insns,
                &mut self.exit,
            )
        };
        self.exit.status
    }

    /// Runs, calling again after back-off declines: these tests make one short run after
    /// another, which the entry policy answers with a back-off (Bochs would emulate a while and
    /// ask again; nothing changes in between). The back-off itself is tested over a scripted
    /// backend in `accel/tests/entry.rs`, where run lengths do not depend on the machine.
    pub fn run(&mut self) -> u32 {
        for _ in 0..2 {
            let st = self.run_with(BUDGET, 1000);
            if st != DECLINED || self.exit.decline_reason != BACKOFF {
                return st;
            }
        }
        panic!("two back-off declines in a row: {}", self.describe());
    }

    /// Runs and expects RAN with `reason`.
    pub fn ran(&mut self, reason: u32) {
        let st = self.run();
        assert_eq!(
            (st, self.exit.reason),
            (RAN, reason),
            "exit: {}",
            self.describe()
        );
        assert!(self.exit.ticks >= 1);
    }

    /// Tells the library that the plain-RAM ranges are now `ranges`.
    pub fn memory_map_changed(&self, ranges: &[raw::plex86_accel_ram_range]) {
        let n = u32::try_from(ranges.len()).unwrap();
        // SAFETY: `n` readable ranges.
        unsafe { plex86_accel_memory_map_changed(self.accel, ranges.as_ptr(), n) };
    }

    pub fn message(&self) -> String {
        // SAFETY: the library NUL-terminates `message`.
        unsafe { CStr::from_ptr(self.exit.message.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    pub fn describe(&self) -> String {
        format!(
            "status {} reason {} decline {} message {:?} eip {:#x}",
            self.exit.status,
            self.exit.reason,
            self.exit.decline_reason,
            self.message(),
            self.state.rip
        )
    }

    pub fn code_pages(&self) -> Vec<u64> {
        if self.exit.n_code_pages == 0 {
            return vec![];
        }
        // SAFETY: the library keeps `n_code_pages` entries valid until the next call.
        unsafe { std::slice::from_raw_parts(self.exit.code_pages, self.exit.n_code_pages as usize) }
            .to_vec()
    }

    pub fn logged(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .any(|(_, m)| m.contains(needle))
    }

    pub fn shutdown(&mut self) -> serde_json::Value {
        plex86_accel_shutdown(self.accel);
        self.accel = std::ptr::null_mut();
        let text =
            std::fs::read_to_string(&self.stats).expect("statistics JSON written at shutdown");
        let _ = std::fs::remove_file(&self.stats);
        serde_json::from_str(&text).expect("valid JSON")
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if !self.accel.is_null() {
            plex86_accel_shutdown(self.accel);
        }
        let _ = std::fs::remove_file(&self.stats);
    }
}
