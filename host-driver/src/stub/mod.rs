//! The stub executor's library side: a **prototype for issue 14's gate**
//! (docs/plans/issue14-gate.md), not used by accel-core. Guest code runs in a process that
//! holds only S (the stub's code page, the library's pages read-only, its own pages) and the
//! guest mirrors; the monitor ([`plex86_monitor`]) runs here, in the library, over guest RAM
//! mapped here, and its mirror changes reach the stub as op batches that the stub's mapper
//! thread carries out.
//!
//! One run: queued MMU commands and LDT writes go out as a batch; the entry frame is written
//! to S; the Enter verdict wakes the guest thread, which waits for the batch, loads the data
//! segments and `rt_sigreturn`s. Each signal comes back through S (the kernel's frame on the
//! stub's alternate stack); the monitor classifies it: a fill queues a map op and answers
//! Resume (the guest thread waits for the mapper and returns through the kernel's frame), an
//! exit ends the run.
//!
//! What the prototype leaves out (WP3 of the design): the budget (no timer: runs end only at
//! an exit), death detection beyond a timeout, validation of the stub's pages beyond bounds,
//! 64-bit guests and the sparse mirror table.

mod host;

use crate::driver::MmuCommand;
use crate::protocol::stub::{self as layout, by_lib as lib, by_stub as stub, MapOp, Verdict};
use crate::protocol::xsave::sw;
use crate::protocol::{CommandKind, ExitRecord, GuestState, RamRange, XSAVE_AREA_SIZE};
use crate::sys::{self, RamMap, SharedMapping};
use crate::validate::{validate_entry, validate_exit_state};
use crate::XsaveInfo;
use host::StubHost;
use plex86_monitor::frame::{
    EntryFrame, FpxSwBytes, KStack, KUcontext, SignalAction, SignalContext, FP_XSTATE_MAGIC1,
    UC_FP_XSTATE,
};
use plex86_monitor::monitor::{HostParams, Monitor};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long the library waits for the stub before it gives up on it.
const STUCK: Duration = Duration::from_secs(5);
/// How long each side polls a shared word before it sleeps on it (a futex wait).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Polling {
    /// Polls by the library (PAUSE, then yield).
    pub library: u32,
    /// Polls by the stub's guest thread and mapper (PAUSE).
    pub stub: u32,
}

impl Polling {
    /// Nobody polls: every hand-over is a futex wake.
    pub const SLEEP: Polling = Polling {
        library: 0,
        stub: 0,
    };
    /// Both sides poll 2,000 times before they sleep.
    pub const BOTH: Polling = Polling {
        library: 2000,
        stub: 2000,
    };
    /// The library polls 2,000 times, the stub sleeps at once.
    pub const LIBRARY: Polling = Polling {
        library: 2000,
        stub: 0,
    };
}

/// Where the stub's threads run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Wherever the host's scheduler puts them.
    Free,
    /// On the CPU the library runs on at each entry (re-pinned when the library has moved):
    /// every hand-over is then a wake-up on the same CPU, never an idle vCPU's.
    WithLibrary,
}

/// What the gate's benchmark measured best on the 2-vCPU VMs (docs/ARCHITECTURE.md, "The
/// stub executor's gate"): every hand-over a futex wake; three pollers on two vCPUs starve
/// each other.
pub const DEFAULT_POLLING: Polling = Polling::SLEEP;

/// A stub process and the monitor that drives it.
#[derive(Debug)]
pub struct StubExecutor {
    child: Child,
    ctl: SharedMapping,
    _ctl_fd: OwnedFd,
    monitor: Box<Monitor<RamMap, StubHost>>,
    base: u64,
    req: u32,
    exit_seen: u32,
    map_seq: u32,
    spin: u32,
    fpstate: Vec<u8>,
    xsave: XsaveInfo,
    placement: Placement,
    pinned_to: Option<usize>,
    mapper_tid: i32,
}

/// Offset in the control memfd of the stub-written word `off`.
const fn st(off: usize) -> usize {
    layout::LIB_LEN + off
}

impl StubExecutor {
    /// Starts `path --stub` (a `plex86-executor`) over the guest RAM memfd `ram` of `ram_size`
    /// bytes, polling as `polling` says.
    pub fn spawn(
        path: &Path,
        ram: BorrowedFd<'_>,
        ram_size: u64,
        polling: Polling,
    ) -> Result<StubExecutor, String> {
        fn e(what: &'static str) -> impl Fn(std::io::Error) -> String {
            move |err| format!("{what}: {err}")
        }
        let ctl_fd = sys::memfd(c"plex86-stub-control", layout::CONTROL_LEN as u64)
            .map_err(e("control memfd"))?;
        let ctl = SharedMapping::new(ctl_fd.as_fd(), layout::CONTROL_LEN, 0)
            .map_err(e("control mapping"))?;
        ctl.atomic_u32(lib::SPIN)
            .store(polling.stub, Ordering::Relaxed);
        let mut child = sys::spawn_executor(path, ram, ctl_fd.as_fd(), &["--stub"])
            .map_err(e("spawn the stub"))?;
        let t0 = Instant::now();
        loop {
            let r = ctl.atomic_u32(st(stub::READY)).load(Ordering::Acquire);
            if r == 1 {
                break;
            }
            if r & layout::SETUP_FAILED != 0 {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("stub start-up step {} failed", r & 0xff));
            }
            if let Ok(Some(st)) = child.try_wait() {
                return Err(format!("the stub launcher ended before it was ready: {st}"));
            }
            if t0.elapsed() > STUCK {
                let _ = child.kill();
                let _ = child.wait();
                return Err("the stub did not become ready".into());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let sw_words = ctl.atomic_u64(st(stub::XSAVE_SW)).load(Ordering::Relaxed);
        let sw = FpxSwBytes {
            extended_size: sw_words as u32,
            xstate_size: (sw_words >> 32) as u32,
            xfeatures: ctl
                .atomic_u64(st(stub::XSAVE_SW + 8))
                .load(Ordering::Relaxed),
        };
        if sw.xstate_size as usize > XSAVE_AREA_SIZE || sw.xstate_size < 576 {
            return Err(format!("implausible XSAVE frame size {}", sw.xstate_size));
        }
        let base = layout::DEFAULT_BASE;
        let ram_map = RamMap::new(ram, ram_size).map_err(e("map guest RAM"))?;
        let params = HostParams {
            sw,
            altstack: KStack {
                sp: base + layout::STUB + stub::ALTSTACK as u64,
                flags: 0,
                pad: 0,
                size: stub::ALTSTACK_LEN as u64,
            },
            clock: libc::CLOCK_MONOTONIC,
            timer: 0,
            vdso: 0,
            amd: host_is_amd(),
        };
        let ranges = [RamRange {
            start: 0,
            end: ram_size,
        }];
        let monitor = Monitor::new(ram_map, StubHost::new(base), ram_size, &ranges, params);
        let mapper_tid = ctl.atomic_u32(st(stub::MAPPER_TID)).load(Ordering::Relaxed) as i32;
        Ok(StubExecutor {
            child,
            ctl,
            _ctl_fd: ctl_fd,
            monitor,
            base,
            req: 0,
            exit_seen: 0,
            map_seq: 0,
            spin: polling.library,
            fpstate: vec![0; XSAVE_AREA_SIZE],
            placement: Placement::Free,
            pinned_to: None,
            mapper_tid,
            xsave: XsaveInfo::from_host(
                sw.xstate_size,
                sw.xfeatures & crate::protocol::xsave::xfeature::TRANSFERRED,
            ),
        })
    }

    /// Lets each fill also mirror up to `pages` following pages the guest has used already
    /// (the batching variant of the gate; 0, the default, maps only the faulting page).
    pub fn set_fill_ahead(&mut self, pages: u32) {
        self.monitor.fill_ahead = pages;
    }

    /// Sets where the stub's threads run.
    pub fn set_placement(&mut self, p: Placement) {
        self.placement = p;
        self.pinned_to = None;
    }

    /// Pins both stub threads to the library's current CPU if they are not there already.
    fn place(&mut self) -> Result<(), String> {
        if self.placement != Placement::WithLibrary {
            return Ok(());
        }
        let Some(cpu) = sys::current_cpu() else {
            return Ok(());
        };
        if self.pinned_to == Some(cpu) {
            return Ok(());
        }
        for tid in [self.child.id() as i32, self.mapper_tid] {
            sys::pin_thread(tid, cpu).map_err(|e| format!("pin stub thread {tid}: {e}"))?;
        }
        self.pinned_to = Some(cpu);
        Ok(())
    }

    /// The stub's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs the guest from `state` after `cmds` until an exit; `state` becomes the exit's.
    pub fn run(
        &mut self,
        state: &mut GuestState,
        cmds: &[MmuCommand],
    ) -> Result<&ExitRecord, String> {
        validate_entry(state, self.xsave).map_err(|e| e.to_string())?;
        self.place()?;
        for c in cmds {
            let (kind, addr) = match *c {
                MmuCommand::FlushAll => (CommandKind::FlushAll, 0),
                MmuCommand::FlushNonGlobal => (CommandKind::FlushNonGlobal, 0),
                MmuCommand::InvalidatePage(l) => (CommandKind::InvalidatePage, u64::from(l)),
                MmuCommand::WriteProtectPhysPage(p) => (CommandKind::WriteProtectPhys, p),
            };
            self.monitor
                .command(kind as u32, addr)
                .map_err(|e| format!("MMU command {c:?}: errno {e}"))?;
        }
        let m = &mut self.monitor;
        m.entry = *state;
        m.prepare_entry()
            .map_err(|e| format!("entry refused: errno {e}"))?;
        // The frame's XSAVE pointer is where the stub sees the frame, not where it is built.
        let frame_at = self.base + layout::LIB + lib::FRAME as u64;
        m.frame.uc.mc.fpstate = frame_at + std::mem::offset_of!(EntryFrame, fpstate) as u64;
        self.ctl.write_plain(lib::FRAME, &m.frame);
        self.ctl.write_plain(lib::SEGS, &m.entry_data_segs);
        let id = m.entry.eflags & (1 << 21);
        self.ctl
            .atomic_u32(lib::ENTRY_ID)
            .store(id, Ordering::Relaxed);
        let t0 = Instant::now();
        self.monitor.in_guest = true;
        self.answer(Verdict::Enter)?;
        loop {
            self.await_signal()?;
            match self.on_signal()? {
                SignalAction::Resume => {
                    self.answer(Verdict::Resume)?;
                }
                SignalAction::ExitToHost => break,
            }
        }
        let m = &mut self.monitor;
        m.in_guest = false;
        m.exit.native_ns = t0.elapsed().as_nanos() as u64;
        m.exit.fill_ns = m.exit.fill_ns.min(m.exit.native_ns);
        // As for today's executor: the state is checked against the entry and rebuilt in the
        // guest's terms (native selectors back to the guest's, XSAVE normalised).
        *state = validate_exit_state(state, &m.exit_state, self.xsave)?;
        Ok(&self.monitor.exit)
    }

    /// Answers the waiting guest thread with `v`, after the queued mirror ops go out as one
    /// batch (which the guest thread waits for before it goes on). Order matters: the batch is
    /// written and the verdict given before the mapper may start, because with a batch it is
    /// the mapper, once done, that wakes a sleeping guest thread (one hand-over fewer per fill
    /// than a wake by the library, which would find the batch not done yet).
    fn answer(&mut self, v: Verdict) -> Result<(), String> {
        let batch = self.stage_ops()?;
        self.ctl
            .atomic_u32(lib::VERDICT)
            .store(v as u32, Ordering::Relaxed);
        self.req = self.req.wrapping_add(1);
        self.ctl
            .atomic_u32(lib::REQ_SEQ)
            .store(self.req, Ordering::Release);
        if batch {
            self.ctl
                .atomic_u32(lib::MAP_SEQ)
                .store(self.map_seq, Ordering::Release);
            fence(Ordering::SeqCst);
            if self.stub_word(stub::MAPPER_SLEEPING) != 0 {
                sys::futex_wake(self.ctl.atomic_u32(lib::MAP_SEQ));
            }
        } else {
            fence(Ordering::SeqCst);
            if self.stub_word(stub::SLEEPING) != 0 {
                sys::futex_wake(self.ctl.atomic_u32(lib::REQ_SEQ));
            }
        }
        Ok(())
    }

    fn stub_word(&self, off: usize) -> u32 {
        self.ctl.atomic_u32(st(off)).load(Ordering::Relaxed)
    }

    /// Writes the queued mirror ops as the next batch (after the previous one is done: the
    /// mapper reads the batch while it works) and makes the guest thread wait for it; the
    /// caller starts the mapper. `Ok(false)`: nothing queued.
    fn stage_ops(&mut self) -> Result<bool, String> {
        if self.monitor.host.ops.is_empty() {
            return Ok(false);
        }
        let seq = self.map_seq;
        self.await_word(st(stub::MAP_DONE), |v| v == seq, "the mapper")?;
        let err = self.stub_word(stub::MAP_ERR);
        if err != 0 {
            return Err(format!("a mirror op failed: errno {}", -(err as i32)));
        }
        let ops = &mut self.monitor.host.ops;
        for (i, op) in ops.iter().enumerate() {
            self.ctl
                .write_plain(lib::OPS + i * std::mem::size_of::<MapOp>(), op);
        }
        self.ctl
            .atomic_u32(lib::MAP_COUNT)
            .store(ops.len() as u32, Ordering::Relaxed);
        ops.clear();
        self.map_seq = self.map_seq.wrapping_add(1);
        self.ctl
            .atomic_u32(lib::RESUME_AFTER)
            .store(self.map_seq, Ordering::Relaxed);
        Ok(true)
    }

    /// Waits for the next signal of the guest thread.
    fn await_signal(&mut self) -> Result<(), String> {
        let seen = self.exit_seen;
        self.await_word(st(stub::EXIT_SEQ), |v| v != seen, "the guest thread")?;
        self.exit_seen = self
            .ctl
            .atomic_u32(st(stub::EXIT_SEQ))
            .load(Ordering::Acquire);
        Ok(())
    }

    /// Polls the shared word at `off` until `done` holds, then sleeps on it (telling the
    /// stub through LIB_SLEEPING); gives up after [`STUCK`] or when the stub has ended.
    fn await_word(
        &mut self,
        off: usize,
        done: impl Fn(u32) -> bool,
        who: &str,
    ) -> Result<(), String> {
        let word: &AtomicU32 = self.ctl.atomic_u32(off);
        for i in 0..self.spin {
            if done(word.load(Ordering::Acquire)) {
                return Ok(());
            }
            if i < crate::protocol::SPIN_PAUSES {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        let t0 = Instant::now();
        let sleeping = self.ctl.atomic_u32(lib::LIB_SLEEPING);
        loop {
            sleeping.store(1, Ordering::SeqCst);
            let v = word.load(Ordering::SeqCst);
            if done(v) {
                sleeping.store(0, Ordering::Relaxed);
                return Ok(());
            }
            sys::futex_wait(word, v, Duration::from_millis(50));
            if done(word.load(Ordering::Acquire)) {
                sleeping.store(0, Ordering::Relaxed);
                return Ok(());
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!(
                    "the stub ended while the library waited for {who}: {st}"
                ));
            }
            if t0.elapsed() > STUCK {
                return Err(format!("{who} did not answer within {STUCK:?}"));
            }
        }
    }

    /// Reads the signal the guest thread published and lets the monitor decide; writes the
    /// (possibly changed) frame back for a Resume.
    fn on_signal(&mut self) -> Result<SignalAction, String> {
        let alt = self.base + layout::STUB + stub::ALTSTACK as u64;
        let alt_end = alt + stub::ALTSTACK_LEN as u64;
        // Stub-written addresses: only offsets inside the alternate stack are accepted.
        let to_off = |addr: u64, len: usize| -> Result<usize, String> {
            if addr >= alt && addr.checked_add(len as u64).is_some_and(|e| e <= alt_end) {
                Ok(st((addr - self.base - layout::STUB) as usize))
            } else {
                Err(format!(
                    "stub published an address outside its alternate stack: {addr:#x}"
                ))
            }
        };
        let ctl = &self.ctl;
        let sig = ctl.atomic_u32(st(stub::SIG)).load(Ordering::Relaxed) as i32;
        let info = to_off(ctl.atomic_u64(st(stub::INFO)).load(Ordering::Relaxed), 128)?;
        let uc_off = to_off(
            ctl.atomic_u64(st(stub::UC)).load(Ordering::Relaxed),
            std::mem::size_of::<KUcontext>(),
        )?;
        let mut b = [0u8; 32];
        ctl.read_bytes(info, &mut b);
        let word = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let mut uc: KUcontext = ctl.read_plain(uc_off);
        let segs = ctl.atomic_u64(st(stub::SEGS)).load(Ordering::Relaxed);
        let mut fp_len = 0;
        if uc.mc.fpstate != 0 && uc.flags & UC_FP_XSTATE != 0 {
            let fp = to_off(uc.mc.fpstate, 512 + 64)?;
            let mut hdr = [0u8; 4];
            ctl.read_bytes(fp + sw::MAGIC1, &mut hdr);
            let mut size = [0u8; 4];
            ctl.read_bytes(fp + sw::XSTATE_SIZE, &mut size);
            let size = u32::from_le_bytes(size) as usize;
            fp_len = if u32::from_le_bytes(hdr) == FP_XSTATE_MAGIC1 && size <= XSAVE_AREA_SIZE {
                size
            } else {
                512
            };
            to_off(uc.mc.fpstate, fp_len)?;
            ctl.read_bytes(fp, &mut self.fpstate[..fp_len]);
        }
        let mut ctx = SignalContext {
            sig,
            code: word(8) as i32,
            call_addr: u64::from(word(16)) | (u64::from(word(20)) << 32),
            syscall: word(24) as i32,
            arch: word(28),
            uc: &mut uc,
            data_segs: [
                segs as u16,
                (segs >> 16) as u16,
                (segs >> 32) as u16,
                (segs >> 48) as u16,
            ],
            fpstate: (fp_len != 0).then(|| &self.fpstate[..fp_len]),
        };
        let action = self.monitor.on_signal(&mut ctx);
        if action == SignalAction::Resume {
            self.ctl.write_plain(uc_off, &uc);
        }
        Ok(action)
    }
}

impl Drop for StubExecutor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn host_is_amd() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.contains("AuthenticAMD") || s.contains("HygonGenuine"))
        .unwrap_or(false)
}
