//! Drives the C ABI end to end without Bochs: guest RAM in a memfd with synthetic page tables,
//! tiny user-mode programs assembled with iced-x86, and the real executor.
//!
//! The executor binary: `$PLEX86_EXECUTOR`, else `plex86-executor` of this target directory
//! (built here with `cargo build -p host-driver --bin plex86-executor` when needed).

use bochs_ffi::raw;
use host_driver::GuestRam;
use iced_x86::code_asm::*;
use plex86_accel::ffi::*;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

const RAM_SIZE: u64 = 16 << 20;
const CODE: u32 = 0x0040_0000;
const CODE_PHYS: u64 = 0x0010_0000;
const DATA: u32 = 0x0050_0000;
const DATA_PHYS: u64 = 0x0020_0000;
const STACK_TOP: u32 = 0x0080_0000;
const STACK_PHYS: u64 = 0x0030_0000;
const URW: u32 = 7;
/// 1 tick = 1 ns: budgets and charges read directly as host time.
const IPS: u64 = 1_000_000_000;
const BUDGET: u64 = 2_000_000_000;

const DECLINED: u32 = raw::plex86_accel_status_PLEX86_ACCEL_DECLINED;
const RAN: u32 = raw::plex86_accel_status_PLEX86_ACCEL_RAN;
const FAILED: u32 = raw::plex86_accel_status_PLEX86_ACCEL_FAILED;
const BACKOFF: u32 = raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_BACKOFF;

fn executor() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os("PLEX86_EXECUTOR") {
            return p.into();
        }
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "host-driver",
            "--bin",
            "plex86-executor",
        ]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let built = cmd
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .is_ok_and(|s| s.success());
        let p = profile_dir.join("plex86-executor");
        assert!(
            p.is_file(),
            "no executor at {} (build ok: {built})",
            p.display()
        );
        p
    })
    .clone()
}

#[path = "../../host-driver/tests/common/cpuinfo.rs"]
mod cpuinfo;

fn host_xcr0() -> u64 {
    let r = std::arch::x86_64::__cpuid_count(0xd, 0);
    u64::from(r.edx) << 32 | u64::from(r.eax)
}

// ---- callbacks -----------------------------------------------------------------------------

type Lines = Mutex<Vec<(c_int, String)>>;

unsafe extern "C" fn log_cb(opaque: *mut c_void, level: c_int, message: *const c_char) {
    // SAFETY: `opaque` is the `Lines` leaked by `Guest::new` for the whole test, and the
    // library passes a NUL-terminated message valid during the call.
    let (lines, msg) = unsafe { (&*(opaque as *const Lines), CStr::from_ptr(message)) };
    lines
        .lock()
        .unwrap()
        .push((level, msg.to_string_lossy().into_owned()));
}

/// The guest model: the host's CPUID without POPCNT.
unsafe extern "C" fn cpuid_cb(_opaque: *mut c_void, leaf: u32, subleaf: u32, out: *mut u32) {
    let r = std::arch::x86_64::__cpuid_count(leaf, subleaf);
    let mut v = [r.eax, r.ebx, r.ecx, r.edx];
    if leaf == 1 {
        v[2] &= !(1 << 23);
    }
    // SAFETY: the library passes an array of four u32.
    unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), out, 4) };
}

// ---- the guest -------------------------------------------------------------------------------

struct Guest {
    ram: GuestRam,
    accel: *mut raw::plex86_accel,
    state: raw::plex86_accel_cpu_state,
    exit: raw::plex86_accel_exit,
    lines: &'static Lines,
    stats: PathBuf,
    _strings: Vec<CString>,
}

fn seg(selector: u16, ty: u16) -> raw::plex86_accel_segment {
    raw::plex86_accel_segment {
        selector,
        attr: ty | 0x10 | (3 << 5) | 0x80 | (1 << 14) | (1 << 15),
        limit: 0xfffff,
        base: 0,
        valid: 1,
    }
}

fn null_seg() -> raw::plex86_accel_segment {
    raw::plex86_accel_segment {
        selector: 0,
        attr: 0,
        limit: 0,
        base: 0,
        valid: 0,
    }
}

/// A configuration for `ram` with every pointer set by the caller.
fn config(ram: &GuestRam) -> raw::plex86_accel_config {
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
    }
}

fn init(cfg: &raw::plex86_accel_config) -> Result<*mut raw::plex86_accel, String> {
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
    fn new(name: &str) -> Guest {
        let ram = GuestRam::new(RAM_SIZE).expect("guest RAM");
        // 2-level paging, CR3 = 0x1000; one page table at 0x2000 covers 0x400000-0x7fffff.
        ram.write_u32(0x1000 + 4, 0x2000 | URW);
        let mut g = Guest {
            ram,
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
        for i in 0..16u32 {
            g.map(CODE + i * 4096, CODE_PHYS + u64::from(i) * 4096);
            g.map(DATA + i * 4096, DATA_PHYS + u64::from(i) * 4096);
            g.map(STACK_TOP - (i + 1) * 4096, STACK_PHYS + u64::from(i) * 4096);
        }
        let s = &mut g.state;
        s.seg = [
            seg(0x23, 3),
            seg(0x1b, 0xb),
            seg(0x23, 3),
            seg(0x23, 3),
            null_seg(),
            null_seg(),
        ];
        s.eflags = 0x202;
        s.gpr[4] = STACK_TOP - 16;
        s.eip = CODE;
        s.cr0 = 0x8001_0031;
        s.cr3 = 0x1000;
        s.cr4 = 0x90 | 0x200 | (1 << 18); // PSE, PGE, OSFXSR, OSXSAVE
        s.xcr0 = host_xcr0() & 0xe7;
        s.fpu.fcw = 0x37f;
        s.fpu.ftw = 0xffff;
        s.fpu.mxcsr = 0x1f80;
        let exe = CString::new(executor().into_os_string().into_encoded_bytes()).unwrap();
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

    fn map(&self, lin: u32, phys: u64) {
        let pte = 0x2000 + u64::from((lin >> 12) & 0x3ff) * 4;
        assert_eq!(lin >> 22, 1);
        self.ram.write_u32(pte, phys as u32 | URW);
    }

    fn code(&mut self, f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
        let mut a = CodeAssembler::new(32).unwrap();
        f(&mut a).unwrap();
        let bytes = a.assemble(u64::from(CODE)).unwrap();
        self.ram.write(CODE_PHYS, &bytes);
        self.state.eip = CODE;
        bytes
    }

    fn run_with(&mut self, budget: u64, user_insns: u64) -> u32 {
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
    /// backend in `accel/tests.rs`, where run lengths do not depend on the machine.
    fn run(&mut self) -> u32 {
        for _ in 0..2 {
            let st = self.run_with(BUDGET, 1000);
            if st != DECLINED || self.exit.decline_reason != BACKOFF {
                return st;
            }
        }
        panic!("two back-off declines in a row: {}", self.describe());
    }

    /// Runs and expects RAN with `reason`.
    fn ran(&mut self, reason: u32) {
        let st = self.run();
        assert_eq!(
            (st, self.exit.reason),
            (RAN, reason),
            "exit: {}",
            self.describe()
        );
        assert!(self.exit.ticks >= 1);
    }

    fn message(&self) -> String {
        // SAFETY: the library NUL-terminates `message`.
        unsafe { CStr::from_ptr(self.exit.message.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    fn describe(&self) -> String {
        format!(
            "status {} reason {} decline {} message {:?} eip {:#x}",
            self.exit.status,
            self.exit.reason,
            self.exit.decline_reason,
            self.message(),
            self.state.eip
        )
    }

    fn code_pages(&self) -> Vec<u64> {
        if self.exit.n_code_pages == 0 {
            return vec![];
        }
        // SAFETY: the library keeps `n_code_pages` entries valid until the next call.
        unsafe { std::slice::from_raw_parts(self.exit.code_pages, self.exit.n_code_pages as usize) }
            .to_vec()
    }

    fn logged(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .any(|(_, m)| m.contains(needle))
    }

    fn shutdown(&mut self) -> serde_json::Value {
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

// ---- runs ------------------------------------------------------------------------------------

#[test]
fn hlt_exits_with_exact_state() {
    let mut g = Guest::new("hlt");
    let avx512 = g.state.xcr0 & 0xe0 == 0xe0;
    // XMM0 = 1,2,3,4; XMM1 = 10,20,30,40; YMM0 upper = 5,6,7,8; ZMM0 upper = 9..16; k2, k3.
    for i in 0..4 {
        g.state.fpu.zmm[0][4 * i..4 * i + 4].copy_from_slice(&(i as u32 + 1).to_le_bytes());
        g.state.fpu.zmm[1][4 * i..4 * i + 4].copy_from_slice(&(10 * (i as u32 + 1)).to_le_bytes());
        g.state.fpu.zmm[0][16 + 4 * i..20 + 4 * i].copy_from_slice(&(i as u32 + 5).to_le_bytes());
    }
    for i in 0..8 {
        g.state.fpu.zmm[0][32 + 4 * i..36 + 4 * i].copy_from_slice(&(i as u32 + 9).to_le_bytes());
    }
    g.state.fpu.opmask[2] = 0x00f0;
    g.state.fpu.opmask[3] = 0x0f01;
    let code = g.code(|a| {
        a.mov(eax, 0x1111_1111u32)?;
        a.mov(ecx, 0x2222_2222u32)?;
        a.mov(edx, 0x3333_3333u32)?;
        a.mov(ebx, 0x4444_4444u32)?;
        a.mov(ebp, 0x5555_5555u32)?;
        a.mov(esi, 0x6666_6666u32)?;
        a.mov(edi, 0x7777_7777u32)?;
        a.push(0x1234_5678u32)?;
        a.fld1()?;
        a.fldpi()?;
        a.paddd(xmm0, xmm1)?;
        if avx512 {
            a.vpaddd(zmm2, zmm0, zmm0)?;
            a.korw(k1, k2, k3)?;
        }
        a.stc()?;
        a.hlt()?;
        a.nop()
    });
    let before = g.state;
    g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_PRIVILEGED);
    let s = &g.state;
    assert_eq!(s.eip, CODE + code.len() as u32 - 2, "EIP at the HLT");
    assert_eq!(
        s.gpr,
        [
            0x1111_1111,
            0x2222_2222,
            0x3333_3333,
            0x4444_4444,
            STACK_TOP - 20,
            0x5555_5555,
            0x6666_6666,
            0x7777_7777
        ]
    );
    assert_eq!(s.eflags & 0x201, 0x201, "CF from STC, IF");
    assert_eq!(format!("{:?}", s.seg), format!("{:?}", before.seg));
    assert_eq!(
        (s.cr0, s.cr2, s.cr3, s.cr4),
        (before.cr0, before.cr2, before.cr3, before.cr4)
    );
    assert_eq!(g.exit.seg_reload, 0);
    assert_eq!(g.exit.n_code_pages, 0);
    assert_eq!(g.ram.read_u32(STACK_PHYS + 4096 - 20), 0x1234_5678);
    // x87: FLD1 then FLDPI: TOP 6, R7 = 1.0, R6 = pi, both valid, the rest empty.
    assert_eq!((s.fpu.fsw >> 11) & 7, 6);
    assert_eq!(s.fpu.ftw, 0x0fff);
    assert_eq!(s.fpu.st[7][..10], [0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0x3f]);
    assert_eq!(
        s.fpu.st[6][..10],
        [0x35, 0xc2, 0x68, 0x21, 0xa2, 0xda, 0x0f, 0xc9, 0x00, 0x40]
    );
    assert_eq!(s.fpu.fcw, 0x37f);
    // SSE.
    let lanes = |z: &[u8]| {
        (0..z.len() / 4)
            .map(|i| u32::from_le_bytes(z[4 * i..4 * i + 4].try_into().unwrap()))
            .collect::<Vec<_>>()
    };
    assert_eq!(lanes(&s.fpu.zmm[0][..16]), [11, 22, 33, 44]);
    assert_eq!(s.fpu.zmm[1], before.fpu.zmm[1]);
    assert_eq!(s.fpu.mxcsr, 0x1f80);
    if avx512 {
        // ZMM2 = ZMM0 + ZMM0 (with the new XMM0): all three parts at the host's offsets.
        assert_eq!(lanes(&s.fpu.zmm[2][..16]), [22, 44, 66, 88]);
        assert_eq!(lanes(&s.fpu.zmm[2][16..32]), [10, 12, 14, 16]);
        assert_eq!(
            lanes(&s.fpu.zmm[2][32..64]),
            [18, 20, 22, 24, 26, 28, 30, 32]
        );
        assert_eq!(s.fpu.opmask[1], 0x0ff1);
        assert_eq!(s.fpu.opmask[2..4], [0x00f0, 0x0f01]);
    }
    // Emulate the HLT and go on: the NOP is next, then the code runs off into zeros
    // (ADD [EAX], AL) with EAX = 0x11111111: unmapped, a page fault.
    g.state.eip += 1;
    g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_PAGE_FAULT);
    assert_eq!(g.state.eip, CODE + code.len() as u32);
    let v = g.shutdown();
    assert_eq!(v["runs"], 2);
    assert_eq!(v["exits"]["privileged"], 1);
    assert_eq!(v["exits"]["page_fault"], 1);
    assert_eq!(v["exit_instructions"]["privileged"]["hlt"], 1);
    assert!(
        v["demand_fills"].as_u64().unwrap() >= 2,
        "code and stack pages were filled: {v}"
    );
    assert!(v["native_ns"].as_u64().unwrap() > 0);
    assert_eq!(
        v["ticks_charged"], v["native_ns"],
        "1 tick per ns at ips = 1e9"
    );
}

#[test]
fn int80_is_a_system_call() {
    let mut g = Guest::new("int80");
    let code = g.code(|a| {
        a.mov(eax, 20)?;
        a.int(0x80)?;
        a.hlt()
    });
    g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_SYSTEM_CALL);
    assert_eq!(g.state.eip, CODE + 5);
    assert_eq!(code[5..7], [0xcd, 0x80]);
    assert_eq!(g.state.gpr[0], 20);
}

#[test]
fn cpuid_exits_or_is_the_hosts_as_the_library_says() {
    let mut g = Guest::new("cpuid");
    let is_hosts = plex86_accel_native_cpuid_is_hosts(g.accel);
    assert_eq!(
        is_hosts == 0,
        cpuinfo::has_flag("cpuid_fault"),
        "library vs /proc/cpuinfo"
    );
    g.code(|a| {
        a.mov(eax, 0)?;
        a.cpuid()?;
        a.hlt()
    });
    if is_hosts == 0 {
        g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_CPUID);
        assert_eq!(g.state.eip, CODE + 5, "stopped before the CPUID");
        assert!(g.logged("CPUID faulting: native CPUID exits"));
        assert_eq!(g.shutdown()["exits"]["cpuid"], 1);
    } else {
        g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_PRIVILEGED);
        assert_eq!(g.state.eip, CODE + 7, "CPUID ran natively, stopped at HLT");
        assert!(g.logged("no CPUID faulting on this host"));
    }
    assert_eq!(plex86_accel_native_cpuid_is_hosts(std::ptr::null()), 1);
}

#[test]
fn budget_expiry_charges_the_native_time() {
    let mut g = Guest::new("budget");
    g.code(|a| {
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        a.inc(eax)?;
        a.jmp(top)
    });
    let st = g.run_with(3_000_000, 1000); // 3 ms
    assert_eq!(
        (st, g.exit.reason),
        (
            RAN,
            raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_BUDGET_EXPIRED
        ),
        "{}",
        g.describe()
    );
    assert!(
        g.exit.ticks >= 2_500_000 && g.exit.ticks < 1_000_000_000,
        "ticks {}",
        g.exit.ticks
    );
    assert!(g.state.gpr[0] > 1000, "the loop ran natively");
    assert!(g.state.eip == CODE || g.state.eip == CODE + 1);
}

#[test]
fn policy_declines() {
    let mut g = Guest::new("declines");
    g.code(|a| a.hlt());
    assert_eq!(g.run_with(BUDGET, 30), DECLINED);
    assert_eq!(
        (g.exit.decline_reason, g.exit.retry_after_ticks),
        (1, 70),
        "short burst"
    );
    assert_eq!(g.run_with(10_000, 1000), DECLINED);
    assert_eq!(
        (g.exit.decline_reason, g.exit.retry_after_ticks),
        (3, 10_000),
        "no budget (< 14 µs)"
    );
    g.state.seg[3].selector = 0x27; // LDT selector
    let before = format!("{:?}", g.state);
    assert_eq!(g.run(), DECLINED);
    assert_eq!(g.exit.decline_reason, 2);
    assert_eq!(
        format!("{:?}", g.state),
        before,
        "a decline changes nothing"
    );
    assert!(g.logged("LDT selector"));
    g.state.seg[3].selector = 0x23;
    plex86_accel_note_declined(g.accel, 17);
    plex86_accel_note_declined(g.accel, 17);
    plex86_accel_note_declined(g.accel, 99);
    g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_PRIVILEGED);
    let v = g.shutdown();
    assert_eq!(v["declines"]["short_burst"], 1);
    assert_eq!(v["declines"]["no_budget"], 1);
    assert_eq!(v["declines"]["unsupported_state"], 1);
    assert_eq!(v["declines"]["event_pending"], 2);
    assert_eq!(v["declines"]["unknown"], 1);
    assert_eq!(v["calls"], 4);
}

#[test]
fn tlb_notifications_keep_the_mirror_coherent() {
    let mut g = Guest::new("tlb");
    g.ram.write_u32(DATA_PHYS, 111);
    g.ram.write_u32(DATA_PHYS + 0x8000, 222);
    g.code(|a| {
        a.mov(eax, dword_ptr(DATA))?;
        a.hlt()
    });
    let read = |g: &mut Guest| {
        g.state.eip = CODE;
        g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_PRIVILEGED);
        g.state.gpr[0]
    };
    assert_eq!(read(&mut g), 111);
    // Remap DATA: the mirror, like a TLB, keeps the old translation until told.
    g.map(DATA, DATA_PHYS + 0x8000);
    assert_eq!(read(&mut g), 111);
    plex86_accel_invlpg(g.accel, DATA + 0x10);
    assert_eq!(read(&mut g), 222);
    g.map(DATA, DATA_PHYS);
    plex86_accel_flush_tlb(g.accel, 0);
    assert_eq!(read(&mut g), 111);
    g.map(DATA, DATA_PHYS + 0x8000);
    plex86_accel_flush_tlb(g.accel, 1);
    assert_eq!(read(&mut g), 222);
    // A CR3 change that Bochs did not report: the library flushes by itself.
    g.ram.write(0x9000, &[0; 4096]);
    g.ram.write_u32(0x9000 + 4, 0x2000 | URW);
    g.map(DATA, DATA_PHYS);
    g.state.cr3 = 0x9000;
    assert_eq!(read(&mut g), 111);
    // The memory map loses the data page: the access needs emulation.
    let ranges = [
        raw::plex86_accel_ram_range {
            start: 0,
            end: DATA_PHYS,
        },
        raw::plex86_accel_ram_range {
            start: DATA_PHYS + 0x1000,
            end: RAM_SIZE,
        },
    ];
    // SAFETY: two readable ranges.
    unsafe { plex86_accel_memory_map_changed(g.accel, ranges.as_ptr(), 2) };
    g.state.eip = CODE;
    g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_NEEDS_EMULATION);
    assert_eq!(g.state.eip, CODE);
    let v = g.shutdown();
    assert_eq!(v["mmu"]["invlpg"], 1);
    assert_eq!(v["mmu"]["flush_all"], 1);
    assert_eq!(v["mmu"]["flush_non_global"], 1);
    assert_eq!(v["mmu"]["unreported_cr3_flushes"], 1);
    assert_eq!(v["mmu"]["memory_map_changes"], 1);
    assert_eq!(v["mmu"]["respawns"], 1);
    assert_eq!(v["exits"]["needs_emulation"], 1);
}

#[test]
fn written_code_pages_are_reported() {
    let mut g = Guest::new("codepages");
    g.code(|a| {
        a.mov(eax, dword_ptr(DATA))?; // mirrored read-only first
        a.mov(dword_ptr(DATA + 0x100), 0x5a5a_5a5au32)?;
        a.mov(dword_ptr(DATA + 0x200), 0x6b6b_6b6bu32)?;
        a.hlt()
    });
    plex86_accel_protect_code_page(g.accel, DATA_PHYS + 0x123);
    plex86_accel_protect_code_page(g.accel, DATA_PHYS);
    g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_PRIVILEGED);
    assert_eq!(g.code_pages(), vec![DATA_PHYS]);
    assert_eq!(
        g.ram.read_u32(DATA_PHYS + 0x200),
        0x6b6b_6b6b,
        "the writes happened"
    );
    // Not protected any more: a second run reports nothing.
    g.state.eip = CODE;
    g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_PRIVILEGED);
    assert!(g.code_pages().is_empty());
    let v = g.shutdown();
    assert_eq!(v["code_pages"]["protect_requests"], 2);
    assert_eq!(v["code_pages"]["write_protects_sent"], 1);
    assert_eq!(v["code_pages"]["invalidations"], 1);
}

#[test]
fn natively_loaded_selectors_ask_for_a_reload() {
    // Another of the guest's selectors, copied natively (CS's into DS): Bochs reloads DS.
    let mut g = Guest::new("segreload");
    g.code(|a| {
        a.mov(ax, cs)?;
        a.mov(ds, ax)?;
        a.hlt()
    });
    g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_PRIVILEGED);
    assert_eq!(g.exit.seg_reload, 1 << 3);
    assert_eq!(
        g.state.seg[3].selector, g.state.seg[1].selector,
        "the guest's CS selector"
    );
    // The host's data selector loads natively: passed on for Bochs to reload from the guest's
    // GDT (Bochs stops if the guest could not have loaded it).
    let mut g = Guest::new("hostsel");
    g.code(|a| {
        a.mov(eax, 0x2bu32)?;
        a.mov(ds, ax)?;
        a.hlt()
    });
    g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_PRIVILEGED);
    assert_eq!(g.exit.seg_reload, 1 << 3);
    assert_eq!(g.state.seg[3].selector, 0x2b);
    // An ordinary segment load (a selector the host cannot load: index 8 is the host's TSS)
    // exits before it happens, at the instruction.
    let mut g = Guest::new("segload");
    let code = g.code(|a| {
        a.mov(eax, 0x43u32)?;
        a.mov(es, ax)?;
        a.hlt()
    });
    g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_SEGMENT_LOAD);
    assert_eq!(g.state.eip, CODE + 5);
    assert_eq!(code[5..8], [0x66, 0x8e, 0xc0]);
    assert_eq!((g.exit.seg_reload, g.state.seg[0].selector), (0, 0x23));
    let v = g.shutdown();
    assert_eq!(v["exit_instructions"]["segment_load"]["mov es"], 1, "{v}");
}

#[test]
fn guest_escape_fails_and_disables() {
    let mut g = Guest::new("escape");
    g.code(|a| {
        a.jmp_far(0x33, CODE + 0x100)?;
        a.hlt()
    });
    assert_eq!(g.run(), FAILED, "{}", g.describe());
    assert_eq!(g.exit.lost_native_progress, 1);
    assert!(g.message().contains("guest escape"), "{}", g.message());
    assert!(g.logged("accelerator disabled"));
    assert_eq!(g.run(), DECLINED);
    assert_eq!(
        (g.exit.decline_reason, g.exit.retry_after_ticks),
        (4, 1 << 62),
        "DISABLED: never, without overflow"
    );
    let v = g.shutdown();
    assert_eq!(v["failures"], 1);
    assert!(v["failure"].as_str().unwrap().contains("guest escape"));
}

#[test]
fn syscall_on_amd_loses_eip_and_fails() {
    let mut g = Guest::new("syscall");
    g.code(|a| {
        a.mov(eax, 20)?;
        a.syscall()?;
        a.hlt()
    });
    if !cpuinfo::is_amd() {
        // Intel: SYSCALL is #UD in compatibility mode, an exact exit.
        g.ran(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_INVALID_OPCODE);
        return;
    }
    assert_eq!(g.run(), FAILED, "{}", g.describe());
    assert_eq!(g.exit.lost_native_progress, 1);
    assert!(
        g.message().contains("SYSCALL executed natively"),
        "{}",
        g.message()
    );
}

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

// ---- bad input ---------------------------------------------------------------------------------

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
    assert!(e.contains("abi_version is 1") && e.contains("ABI 5"), "{e}");
    let e = bad(&|c| c.struct_size = 100);
    assert!(e.contains("struct_size is 100") && e.contains("344"), "{e}");
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
    c.abi_version = 7;
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
    assert_eq!(plex86_accel_abi_version(), 5);
}
