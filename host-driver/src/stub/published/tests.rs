//! The reader over hand-made pages: what it accepts, what it refuses, and which SIGALRM is
//! the budget's.

use super::*;
use crate::protocol::stub::DEFAULT_BASE;
use plex86_monitor::frame::KSigcontext;

const BASE: u64 = DEFAULT_BASE;
const UC_AT: usize = stub::ALTSTACK + 0x100;
const INFO_AT: usize = stub::ALTSTACK + 0x400;
const FP_AT: usize = stub::ALTSTACK + 0x1000;

fn addr(off: usize) -> u64 {
    BASE + STUB + off as u64
}

fn known() -> Known {
    Known {
        base: BASE,
        timer_id: 7,
        library_pid: 4242,
        budget_ns: 1_000,
        posted_ns: 5_000_000_000,
        now_ns: 5_000_010_000,
        alarm_sent: false,
        fill_signal_ns: None,
    }
}

struct Img(Vec<u8>);

impl Img {
    fn put(&mut self, off: usize, b: &[u8]) -> &mut Self {
        self.0[off..off + b.len()].copy_from_slice(b);
        self
    }
    fn u32(&mut self, off: usize, v: u32) -> &mut Self {
        self.put(off, &v.to_le_bytes())
    }
    fn u64(&mut self, off: usize, v: u64) -> &mut Self {
        self.put(off, &v.to_le_bytes())
    }
    fn ts(&mut self, off: usize, ns: u64) -> &mut Self {
        self.u64(off, ns / 1_000_000_000)
            .u64(off + 8, ns % 1_000_000_000)
    }
    fn read(&self, k: &Known) -> Result<Published, String> {
        read(&self.0[..], k, &mut vec![0; XSAVE_AREA_SIZE])
    }
}

/// A timer SIGALRM (id 7) at the end of the budget, with an XSAVE frame of `xsize` bytes.
fn timer_signal(xsize: u32) -> Img {
    let mut img = Img(vec![0; crate::protocol::stub::STUB_LEN]);
    let mut uc = KUcontext {
        flags: UC_FP_XSTATE,
        ..KUcontext::default()
    };
    uc.mc.fpstate = addr(FP_AT);
    uc.mc.rip = 0x1234;
    img.put(UC_AT, &ucontext_bytes(&uc))
        .u32(INFO_AT, libc::SIGALRM as u32)
        .u32(INFO_AT + 8, libc::SI_TIMER as u32)
        .u32(INFO_AT + 16, 7)
        .u32(FP_AT + sw::MAGIC1, FP_XSTATE_MAGIC1)
        .u32(FP_AT + sw::XSTATE_SIZE, xsize)
        .u32(stub::SIG, libc::SIGALRM as u32)
        .u64(stub::INFO, addr(INFO_AT))
        .u64(stub::UC, addr(UC_AT))
        .u64(stub::SEGS, 0x002b_0000_0063_007b)
        .u64(stub::FS_BASE, 0x7000)
        .ts(stub::SIGNAL_TS, 5_000_001_000);
    img
}

#[test]
fn the_budget_timers_signal_is_read_whole() {
    let p = timer_signal(832).read(&known()).unwrap();
    assert_eq!(p.signal_ns, 5_000_001_000);
    assert_eq!(p.fill_ns, None);
    let s = p.signal.expect("the budget's signal");
    assert_eq!(
        (s.sig, s.code, s.backstop),
        (libc::SIGALRM, libc::SI_TIMER, false)
    );
    assert_eq!((s.uc_off, s.uc.mc.rip, s.fp_len), (UC_AT, 0x1234, 832));
    assert_eq!(s.data_segs, [0x7b, 0x63, 0, 0x2b]);
    assert_eq!(s.seg_bases, [0x7000, 0]);
}

#[test]
fn a_frame_without_the_kernels_magic_is_a_legacy_512_byte_one() {
    let mut img = timer_signal(832);
    img.u32(FP_AT + sw::MAGIC1, 0);
    let s = img.read(&known()).unwrap().signal.unwrap();
    assert_eq!(s.fp_len, 512);
    // An oversized XSAVE frame is not taken for one either.
    let mut img = timer_signal(XSAVE_AREA_SIZE as u32 + 1);
    assert_eq!(img.read(&known()).unwrap().signal.unwrap().fp_len, 512);
    // But a frame running past the alternate stack is refused.
    let end = stub::ALTSTACK + stub::ALTSTACK_LEN;
    let mut uc = ucontext_from_bytes(img.0[UC_AT..UC_AT + UCONTEXT_LEN].try_into().unwrap());
    uc.mc.fpstate = addr(end - 600);
    img.put(UC_AT, &ucontext_bytes(&uc))
        .u32(end - 600 + sw::MAGIC1, FP_XSTATE_MAGIC1)
        .u32(end - 600 + sw::XSTATE_SIZE, 832);
    assert!(img.read(&known()).unwrap_err().contains("alternate stack"));
}

#[test]
fn stale_and_foreign_alarms_are_resumed_unseen() {
    // Before the budget's end: an earlier run's expiry.
    let mut img = timer_signal(832);
    img.ts(stub::SIGNAL_TS, 5_000_000_500);
    assert!(img.read(&known()).unwrap().signal.is_none());
    // Another timer's id.
    let mut img = timer_signal(832);
    img.u32(INFO_AT + 16, 8);
    assert!(img.read(&known()).unwrap().signal.is_none());
    // The library's tgkill only counts in a run that sent one.
    let mut img = timer_signal(832);
    img.u32(INFO_AT + 8, libc::SI_TKILL as u32)
        .u32(INFO_AT + 16, 4242);
    assert!(img.read(&known()).unwrap().signal.is_none());
    let k = Known {
        alarm_sent: true,
        ..known()
    };
    let s = img.read(&k).unwrap().signal.unwrap();
    assert_eq!((s.code, s.backstop), (libc::SI_TIMER, true));
    // From anyone else, never.
    img.u32(INFO_AT + 16, 4243);
    assert!(img.read(&k).unwrap().signal.is_none());
}

#[test]
fn addresses_outside_the_alternate_stack_are_refused() {
    let alt = addr(stub::ALTSTACK);
    let end = addr(stub::ALTSTACK + stub::ALTSTACK_LEN);
    for (word, bad) in [
        (stub::INFO, alt - 1),
        (stub::INFO, end - 127),
        (stub::UC, end - UCONTEXT_LEN as u64 + 1),
        (stub::UC, u64::MAX - 8),
        (stub::UC, 0),
    ] {
        let mut img = timer_signal(832);
        img.u64(word, bad);
        let e = img.read(&known()).unwrap_err();
        assert!(e.contains("alternate stack"), "{word:#x} = {bad:#x}: {e}");
    }
    let mut img = timer_signal(832);
    img.u64(stub::INFO, end - 128);
    assert!(img.read(&known()).is_ok(), "the last 128 bytes are in");
}

#[test]
fn timestamps_must_fall_inside_what_the_library_saw() {
    let k = known();
    for bad in [0, k.posted_ns - 1, k.now_ns + 1] {
        let mut img = timer_signal(832);
        img.ts(stub::SIGNAL_TS, bad);
        assert!(
            img.read(&k).unwrap_err().contains("signal timestamp"),
            "{bad}"
        );
    }
    // Nanoseconds of a second or more are no time.
    let mut img = timer_signal(832);
    img.u64(stub::SIGNAL_TS + 8, 1_000_000_000);
    assert!(img.read(&k).is_err());
    // After a fill, the return to the guest lies between the fill's signal and this one.
    let k = Known {
        fill_signal_ns: Some(5_000_000_200),
        ..known()
    };
    for (back, ok) in [
        (5_000_000_300, true),
        (5_000_000_100, false),
        (5_000_001_001, false),
    ] {
        let mut img = timer_signal(832);
        img.ts(stub::RESUME_TS, back);
        match img.read(&k) {
            Ok(p) => assert!(ok && p.fill_ns == Some(100), "{back}"),
            Err(e) => assert!(!ok && e.contains("return timestamp"), "{back}: {e}"),
        }
    }
}

#[test]
fn native_time_runs_from_an_entry_inside_the_run() {
    let mut img = timer_signal(832);
    img.ts(stub::ENTER_TS, 5_000_000_100);
    assert_eq!(native_ns(&img.0[..], 5_000_000_000, 5_000_001_000), Ok(900));
    for bad in [4_999_999_999, 5_000_001_001] {
        img.ts(stub::ENTER_TS, bad);
        assert!(native_ns(&img.0[..], 5_000_000_000, 5_000_001_000).is_err());
    }
}

#[test]
fn the_ucontext_codec_follows_the_kernels_layout() {
    let mut uc = KUcontext {
        flags: 1,
        sigmask: 0x44,
        ..KUcontext::default()
    };
    uc.stack.flags = -2;
    uc.mc.r[7] = 0x15;
    uc.mc.rip = 0x1111;
    uc.mc.ss = 0x2b;
    uc.mc.fpstate = 0x2222;
    uc.mc.reserved[7] = 0x33;
    let b = ucontext_bytes(&uc);
    let at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let mc = std::mem::offset_of!(KUcontext, mc);
    assert_eq!(at(mc + std::mem::offset_of!(KSigcontext, rip)), 0x1111);
    assert_eq!(at(mc + std::mem::offset_of!(KSigcontext, fpstate)), 0x2222);
    assert_eq!(at(mc + std::mem::offset_of!(KSigcontext, r) + 56), 0x15);
    assert_eq!(at(std::mem::offset_of!(KUcontext, sigmask)), 0x44);
    let ss = mc + std::mem::offset_of!(KSigcontext, ss);
    assert_eq!(b[ss..ss + 2], [0x2b, 0]);
    let back = ucontext_from_bytes(&b);
    assert_eq!(ucontext_bytes(&back), b);
    assert_eq!((back.stack.flags, back.mc.reserved[7]), (-2, 0x33));
}
