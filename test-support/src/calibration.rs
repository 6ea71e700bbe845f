//! Host yardsticks for the benchmarks: the cost of the host operations a native run is made of
//! (a signal round trip, a fixed mmap into a reservation) and the reference compute loop run as
//! 64-bit host code. Benchmarks only; nothing in the product calls them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static HITS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_usr1(_: libc::c_int) {
    HITS.fetch_add(1, Ordering::Relaxed);
}

/// Average cost of one in-process signal round trip (raise → handler → sigreturn), over
/// `iters` signals.
pub fn signal_round_trip(iters: u32) -> Duration {
    // SAFETY: `sigaction` is plain data; installing a handler that only bumps an atomic
    // counter is async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    let t = Instant::now();
    for _ in 0..iters {
        // SAFETY: sends SIGUSR1 to this thread, which has a handler installed above.
        unsafe { libc::raise(libc::SIGUSR1) };
    }
    t.elapsed() / iters.max(1)
}

/// Average cost of one `mmap(MAP_SHARED | MAP_FIXED)` of a memfd page into a PROT_NONE
/// anonymous reservation (splitting it), over `iters` calls: the operation a demand fill
/// performs. Re-reserving between chunks is not timed.
pub fn mmap_fixed_replace(iters: u32) -> Duration {
    const SLOTS: usize = 16384;
    let fd = memfd(1 << 20);
    let len = SLOTS * 4096;
    let reserve = |at: *mut libc::c_void, fixed: bool| {
        let flags = libc::MAP_PRIVATE
            | libc::MAP_ANONYMOUS
            | libc::MAP_NORESERVE
            | if fixed { libc::MAP_FIXED } else { 0 };
        // SAFETY: either a fresh reservation at a kernel-chosen address, or a re-reservation
        // of exactly the range this function reserved and owns.
        let p = unsafe { libc::mmap(at, len, libc::PROT_NONE, flags, -1, 0) };
        assert_ne!(p, libc::MAP_FAILED);
        p
    };
    let base = reserve(std::ptr::null_mut(), false);
    let mut total = Duration::ZERO;
    let mut done = 0usize;
    while done < iters as usize {
        let chunk = (iters as usize - done).min(SLOTS);
        let t = Instant::now();
        for i in 0..chunk {
            // SAFETY: maps one page inside the reservation made above, which this function
            // owns exclusively.
            let p = unsafe {
                libc::mmap(
                    base.cast::<u8>().add(i * 4096).cast(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    ((i * 2) % 256 * 4096) as libc::off_t,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
        }
        total += t.elapsed();
        done += chunk;
        reserve(base, true);
    }
    // SAFETY: unmaps the reservation made above.
    unsafe { libc::munmap(base, len) };
    total / iters.max(1)
}

/// Runs the reference compute loop natively (64-bit host code) for `iters` iterations and
/// returns the elapsed time and the final accumulator. The guest benchmark runs the same
/// instruction sequence in compatibility mode:
/// `imul eax, eax, 0x41c64e6d; add eax, 12345; xor edx, eax; rol edx, 5; dec ecx; jnz`.
pub fn native_compute_loop(iters: u32) -> (Duration, u32) {
    let t = Instant::now();
    let mut eax: u32 = 1;
    let mut edx: u32 = 0;
    // SAFETY: pure register arithmetic with no memory access; all clobbered registers are
    // declared.
    unsafe {
        std::arch::asm!(
            ".p2align 4",
            "2:",
            "imul eax, eax, 0x41c64e6d",
            "add eax, 12345",
            "xor edx, eax",
            "rol edx, 5",
            "dec ecx",
            "jnz 2b",
            inout("eax") eax,
            inout("edx") edx,
            inout("ecx") iters.max(1) => _,
            options(nomem, nostack),
        );
    }
    let _ = eax;
    (t.elapsed(), edx)
}

/// A memfd of `size` bytes to map pages of.
fn memfd(size: i64) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: the name is a NUL-terminated literal; the result is checked before use.
    let fd = unsafe { libc::memfd_create(c"plex86-calib".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just created and is owned by nobody else.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: `fd` is a valid memfd owned above.
    let r = unsafe { libc::ftruncate(std::os::fd::AsRawFd::as_raw_fd(&fd), size) };
    assert_eq!(r, 0, "ftruncate: {}", std::io::Error::last_os_error());
    fd
}

/// Keeps host CPU `cpu` busy (a thread pinned there, spinning) until dropped: the "other vCPU
/// busy" condition of the benchmarks.
pub struct BusyCpu {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BusyCpu {
    /// Starts the spinner on `cpu`.
    pub fn start(cpu: usize) -> BusyCpu {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            // SAFETY: cpu_set_t is plain data; sched_setaffinity(0) changes only this thread.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            }
            while !s.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        BusyCpu {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for BusyCpu {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The median of timing samples (the upper one of an even count).
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}
