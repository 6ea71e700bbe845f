//! The library's reading of one signal the guest thread published: a pure function of the
//! stub-written pages' bytes and what the library knows of the run ([`Known`]). Guest code
//! shares the stub's process and can write every byte of those pages (they are RW to it), so
//! nothing read here is trusted: addresses must lie in the alternate stack, timestamps inside
//! what the library saw, a budget SIGALRM must carry the timer's id or the library's pid.
//! The answer is either the monitor's inputs ([`Published`]) or why no honest stub could
//! have written the pages (the library then kills the stub as `CorruptedSharedMemory`).
//!
//! [`StubExecutor`](super::StubExecutor) reads the live pages through [`Pages`]; the fuzz
//! target `stub_region` reads bytes (`crate::fuzzing`).

use crate::protocol::stub::{by_stub as stub, STUB};
use crate::protocol::xsave::sw;
use crate::protocol::XSAVE_AREA_SIZE;
use plex86_monitor::frame::{KUcontext, SignalContext, FP_XSTATE_MAGIC1, UC_FP_XSTATE};

/// The stub-written pages, read from offset 0 of them (offsets from [`STUB`]).
pub(crate) trait Pages {
    /// Copies `buf.len()` bytes at `off` (the parser only asks for ranges inside the pages).
    fn read(&self, off: usize, buf: &mut [u8]);
}

impl Pages for [u8] {
    fn read(&self, off: usize, buf: &mut [u8]) {
        buf.copy_from_slice(&self[off..off + buf.len()]);
    }
}

/// What the library knows when it reads a signal.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Known {
    /// Where S is in the stub.
    pub(crate) base: u64,
    /// The stub's budget timer (its expiries carry this id).
    pub(crate) timer_id: u32,
    /// The library's process id (a `tgkill` from it carries it).
    pub(crate) library_pid: u32,
    /// The run's budget (ns).
    pub(crate) budget_ns: u64,
    /// When the library gave the Enter verdict (CLOCK_MONOTONIC ns).
    pub(crate) posted_ns: u64,
    /// When the library began reading this signal.
    pub(crate) now_ns: u64,
    /// Whether the library sent its own SIGALRM in this run.
    pub(crate) alarm_sent: bool,
    /// The stub's timestamp of the previous signal when it was resumed as a demand fill.
    pub(crate) fill_signal_ns: Option<u64>,
}

/// A signal read from the pages.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Published {
    /// The stub's timestamp of the signal.
    pub(crate) signal_ns: u64,
    /// Time of the previous fill: from its signal to the stub's return to the guest.
    pub(crate) fill_ns: Option<u64>,
    /// `None`: a SIGALRM that is not the budget's (stale or foreign): resumed unseen.
    pub(crate) signal: Option<Signal>,
}

/// A signal for the monitor: the `SignalContext` inputs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Signal {
    pub(crate) sig: i32,
    /// si_code (the budget's signal is `SI_TIMER`, whoever sent it).
    pub(crate) code: i32,
    /// The first 32 bytes of the siginfo, as words.
    pub(crate) info: [u32; 8],
    /// Where the ucontext lies (offset in the pages), for the write-back of a Resume.
    pub(crate) uc_off: usize,
    pub(crate) uc: KUcontext,
    /// Bytes of the XSAVE frame copied to the caller's buffer (0: none).
    pub(crate) fp_len: usize,
    /// DS, ES, FS, GS at the signal.
    pub(crate) data_segs: [u16; 4],
    /// The handler's RDFSBASE/RDGSBASE.
    pub(crate) seg_bases: [u64; 2],
    /// The library's own SIGALRM ended the run (the stub's timer did not).
    pub(crate) backstop: bool,
}

impl Signal {
    /// The monitor's view of the signal; `fpstate` is the buffer [`read`] filled.
    pub(crate) fn context<'a>(&'a mut self, fpstate: &'a [u8]) -> SignalContext<'a> {
        let w = self.info;
        SignalContext {
            sig: self.sig,
            code: self.code,
            call_addr: u64::from(w[4]) | (u64::from(w[5]) << 32),
            syscall: w[6] as i32,
            arch: w[7],
            uc: &mut self.uc,
            data_segs: self.data_segs,
            fpstate: (self.fp_len != 0).then(|| &fpstate[..self.fp_len]),
            // The exit validation checks them canonical.
            seg_bases: Some(self.seg_bases),
        }
    }
}

fn u32_at(p: &(impl Pages + ?Sized), off: usize) -> u32 {
    let mut b = [0u8; 4];
    p.read(off, &mut b);
    u32::from_le_bytes(b)
}

fn u64_at(p: &(impl Pages + ?Sized), off: usize) -> u64 {
    let mut b = [0u8; 8];
    p.read(off, &mut b);
    u64::from_le_bytes(b)
}

/// A timestamp the stub wrote (a `struct timespec`), in ns; `None` when unset or not a time.
pub(crate) fn timestamp(p: &(impl Pages + ?Sized), off: usize) -> Option<u64> {
    let (secs, nanos) = (u64_at(p, off), u64_at(p, off + 8));
    if nanos >= 1_000_000_000 || (secs == 0 && nanos == 0) {
        return None;
    }
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Reads the published signal; fills `fpstate` (at least [`XSAVE_AREA_SIZE`] bytes) with its
/// XSAVE frame.
pub(crate) fn read(
    p: &(impl Pages + ?Sized),
    k: &Known,
    fpstate: &mut [u8],
) -> Result<Published, String> {
    let t = timestamp(p, stub::SIGNAL_TS);
    let Some(signal_ns) = t.filter(|&t| t >= k.posted_ns && t <= k.now_ns) else {
        return Err(format!("signal timestamp {t:?}"));
    };
    let fill_ns = match k.fill_signal_ns {
        Some(fill) => {
            let back = timestamp(p, stub::RESUME_TS);
            let Some(back) = back.filter(|&b| b >= fill && b <= signal_ns) else {
                return Err(format!("return timestamp {back:?} after a fill"));
            };
            Some(back - fill)
        }
        None => None,
    };
    // Stub-written addresses: only ranges inside the alternate stack are accepted.
    let alt = k.base + STUB + stub::ALTSTACK as u64;
    let alt_end = alt + stub::ALTSTACK_LEN as u64;
    let to_off = |addr: u64, len: usize| -> Result<usize, String> {
        if addr >= alt && addr.checked_add(len as u64).is_some_and(|e| e <= alt_end) {
            Ok((addr - k.base - STUB) as usize)
        } else {
            Err(format!(
                "stub published an address outside its alternate stack: {addr:#x}"
            ))
        }
    };
    let info_off = to_off(u64_at(p, stub::INFO), 128)?;
    let uc_off = to_off(u64_at(p, stub::UC), UCONTEXT_LEN)?;
    let mut uc_bytes = [0u8; UCONTEXT_LEN];
    p.read(uc_off, &mut uc_bytes);
    let uc = ucontext_from_bytes(&uc_bytes);
    let fp = if uc.mc.fpstate == 0 || uc.flags & UC_FP_XSTATE == 0 {
        None
    } else {
        let fp = to_off(uc.mc.fpstate, 512 + 64)?;
        let size = u32_at(p, fp + sw::XSTATE_SIZE) as usize;
        let magic = u32_at(p, fp + sw::MAGIC1);
        // A frame the kernel marks as XSAVE has its size; else the legacy 512 bytes.
        let len = if magic == FP_XSTATE_MAGIC1 && size <= XSAVE_AREA_SIZE {
            size
        } else {
            512
        };
        to_off(uc.mc.fpstate, len)?;
        Some((fp, len))
    };
    let mut info = [0u32; 8];
    for (i, w) in info.iter_mut().enumerate() {
        *w = u32_at(p, info_off + 4 * i);
    }
    let sig = u32_at(p, stub::SIG) as i32;
    let mut code = info[2] as i32;
    let mut backstop = false;
    if sig == libc::SIGALRM {
        // Word 4 is si_tid of a timer's signal, si_pid (the sender's thread group id, filled
        // in by the kernel) of a tgkill.
        let ours = match code {
            libc::SI_TIMER => {
                info[4] == k.timer_id && signal_ns >= k.posted_ns.saturating_add(k.budget_ns)
            }
            libc::SI_TKILL => info[4] == k.library_pid && k.alarm_sent,
            _ => false,
        };
        if !ours {
            return Ok(Published {
                signal_ns,
                fill_ns,
                signal: None,
            });
        }
        backstop = code == libc::SI_TKILL;
        // The monitor knows the budget's end as its timer's signal.
        code = libc::SI_TIMER;
    }
    let fp_len = match fp {
        Some((off, len)) => {
            p.read(off, &mut fpstate[..len]);
            len
        }
        None => 0,
    };
    let segs = u64_at(p, stub::SEGS);
    Ok(Published {
        signal_ns,
        fill_ns,
        signal: Some(Signal {
            sig,
            code,
            info,
            uc_off,
            uc,
            fp_len,
            data_segs: [0, 16, 32, 48].map(|s| (segs >> s) as u16),
            seg_bases: [u64_at(p, stub::FS_BASE), u64_at(p, stub::GS_BASE)],
            backstop,
        }),
    })
}

/// Native time of an ended run: from the stub's entry timestamp (checked: between the Enter
/// verdict and the signal that ended the run) to that signal.
pub(crate) fn native_ns(
    p: &(impl Pages + ?Sized),
    posted_ns: u64,
    exit_signal_ns: u64,
) -> Result<u64, String> {
    let entered = timestamp(p, stub::ENTER_TS);
    match entered.filter(|&e| e >= posted_ns && e <= exit_signal_ns) {
        Some(e) => Ok(exit_signal_ns - e),
        None => Err(format!(
            "entry timestamp {entered:?} outside the run ({posted_ns} .. {exit_signal_ns} ns)"
        )),
    }
}

/// Size of the kernel's `struct ucontext` (x86-64): 38 words.
pub(crate) const UCONTEXT_LEN: usize = 38 * 8;
const _: () = assert!(std::mem::size_of::<KUcontext>() == UCONTEXT_LEN);

/// The ucontext in `b` (the kernel's layout: flags, link, stack, sigcontext, sigmask).
pub(crate) fn ucontext_from_bytes(b: &[u8; UCONTEXT_LEN]) -> KUcontext {
    let w: [u64; 38] =
        std::array::from_fn(|i| u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().unwrap()));
    let mut uc = KUcontext {
        flags: w[0],
        link: w[1],
        sigmask: w[37],
        ..KUcontext::default()
    };
    uc.stack.sp = w[2];
    uc.stack.flags = w[3] as i32;
    uc.stack.pad = (w[3] >> 32) as i32;
    uc.stack.size = w[4];
    let mc = &mut uc.mc;
    mc.r.copy_from_slice(&w[5..13]);
    [
        mc.rdi, mc.rsi, mc.rbp, mc.rbx, mc.rdx, mc.rax, mc.rcx, mc.rsp, mc.rip, mc.eflags,
    ] = w[13..23].try_into().unwrap();
    [mc.cs, mc.gs, mc.fs, mc.ss] = [0, 16, 32, 48].map(|s| (w[23] >> s) as u16);
    [mc.err, mc.trapno, mc.oldmask, mc.cr2, mc.fpstate] = w[24..29].try_into().unwrap();
    mc.reserved.copy_from_slice(&w[29..37]);
    uc
}

/// The bytes of `uc` (the inverse of [`ucontext_from_bytes`]), for honest test frames.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn ucontext_bytes(uc: &KUcontext) -> [u8; UCONTEXT_LEN] {
    let mc = &uc.mc;
    let stack_flags = u64::from(uc.stack.flags as u32) | (u64::from(uc.stack.pad as u32) << 32);
    let segs = [mc.cs, mc.gs, mc.fs, mc.ss]
        .iter()
        .enumerate()
        .fold(0u64, |a, (i, &s)| a | (u64::from(s) << (16 * i)));
    let mut w = vec![uc.flags, uc.link, uc.stack.sp, stack_flags, uc.stack.size];
    w.extend_from_slice(&mc.r);
    w.extend_from_slice(&[
        mc.rdi, mc.rsi, mc.rbp, mc.rbx, mc.rdx, mc.rax, mc.rcx, mc.rsp, mc.rip, mc.eflags, segs,
        mc.err, mc.trapno, mc.oldmask, mc.cr2, mc.fpstate,
    ]);
    w.extend_from_slice(&mc.reserved);
    w.push(uc.sigmask);
    let mut b = [0u8; UCONTEXT_LEN];
    for (d, v) in b.chunks_exact_mut(8).zip(w) {
        d.copy_from_slice(&v.to_le_bytes());
    }
    b
}

#[cfg(test)]
mod tests;
