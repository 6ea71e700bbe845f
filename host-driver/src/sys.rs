//! Library-side operating-system glue: every `unsafe` block of the library (outside the
//! executor) lives here.

use crate::protocol::view::LibSide;
use crate::protocol::REGION_SIZE;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Creates a sealed-size-capable memfd of `size` bytes (close-on-exec).
pub(crate) fn memfd(name: &CStr, size: u64) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid NUL-terminated string; flags are valid.
    let fd = cvt(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len =
        libc::off_t::try_from(size).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: plain syscall on a valid fd.
    cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), len) })?;
    Ok(fd)
}

/// Size of the file behind `fd`.
pub(crate) fn file_size(fd: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: `stat` is plain data; an all-zero value is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and a valid out-pointer.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st.st_size as u64)
}

/// A shared mapping of (part of) a file, unmapped on drop.
#[derive(Debug)]
pub(crate) struct SharedMapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; all access goes through raw pointers with
// volatile/atomic operations, so sharing the handle between threads is sound.
unsafe impl Send for SharedMapping {}
// SAFETY: as above.
unsafe impl Sync for SharedMapping {}

impl SharedMapping {
    /// Maps `len` bytes of `fd` at `offset`, read/write, shared.
    pub(crate) fn new(fd: BorrowedFd<'_>, len: usize, offset: u64) -> io::Result<Self> {
        // SAFETY: a fresh mapping at a kernel-chosen address; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned 0"))?;
        Ok(SharedMapping { ptr, len })
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Copies `src` into the mapping at `offset`.
    pub(crate) fn write_bytes(&self, offset: usize, src: &[u8]) {
        assert!(offset.checked_add(src.len()).is_some_and(|e| e <= self.len));
        // SAFETY: the destination range is inside the mapping (checked) and cannot overlap
        // `src`, which is ordinary process memory. No reference to the shared bytes is made.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(offset), src.len())
        }
    }

    /// Copies bytes out of the mapping at `offset` into `dst`.
    pub(crate) fn read_bytes(&self, offset: usize, dst: &mut [u8]) {
        assert!(offset.checked_add(dst.len()).is_some_and(|e| e <= self.len));
        // SAFETY: the source range is inside the mapping (checked) and cannot overlap `dst`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                dst.as_mut_ptr(),
                dst.len(),
            )
        }
    }

    /// The library's typed view of the control region mapped here.
    pub(crate) fn lib_side(&self) -> LibSide<'_> {
        assert_eq!(self.len, REGION_SIZE, "not a control-region mapping");
        // SAFETY: a shared read/write mapping of the whole region (length checked), page
        // aligned by mmap, mapped until `self` is dropped, which the view's lifetime prevents.
        unsafe { LibSide::new(self.ptr) }
    }
}

impl Drop for SharedMapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `new`; no references into it exist
        // (all access is by copy).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// FUTEX_WAIT on a shared word while it equals `expected`, for at most `timeout`.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `word` is a valid, aligned u32 in shared memory; `ts` is a valid timespec.
    // Errors (EAGAIN, ETIMEDOUT, EINTR) are all handled by the caller re-checking the word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        )
    };
}

/// FUTEX_WAKE all waiters on a shared word.
pub(crate) fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned u32 in shared memory.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX) };
}

/// Spawns the executor with `ram` as fd 3 and `control` as fd 4, an empty environment and
/// stdin/stdout/stderr redirected to /dev/null.
pub(crate) fn spawn_executor(
    path: &std::path::Path,
    ram: BorrowedFd<'_>,
    control: BorrowedFd<'_>,
    args: &[&str],
) -> io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let ram_raw = ram.as_raw_fd();
    let control_raw = control.as_raw_fd();
    let mut cmd = std::process::Command::new(path);
    cmd.args(args)
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // system calls (fcntl, dup2, dup) on file descriptors inherited from the parent.
    unsafe {
        cmd.pre_exec(move || {
            // Move both fds out of the way first so that dup2 onto 3/4 cannot clobber them.
            let r = cvt(libc::fcntl(ram_raw, libc::F_DUPFD_CLOEXEC, 10))?;
            let c = cvt(libc::fcntl(control_raw, libc::F_DUPFD_CLOEXEC, 10))?;
            cvt(libc::dup2(r, crate::protocol::RAM_FD))?;
            cvt(libc::dup2(c, crate::protocol::CONTROL_FD))?;
            Ok(())
        })
    };
    cmd.spawn()
}

/// Directory-relative path of the shared object or executable that contains this crate.
pub(crate) fn current_module_path() -> Option<PathBuf> {
    // SAFETY: `Dl_info` is plain data; zero is a valid initial value.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let addr = current_module_path as fn() -> Option<PathBuf> as *const libc::c_void;
    // SAFETY: `addr` is the address of a function of this module; `info` is a valid out
    // pointer.
    let ok = unsafe { libc::dladdr(addr, &mut info) };
    if ok == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dladdr returned a valid NUL-terminated path for a loaded object.
    let name = unsafe { CStr::from_ptr(info.dli_fname) };
    let p = PathBuf::from(
        <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name.to_bytes()),
    );
    if p.is_absolute() {
        Some(p)
    } else {
        std::env::current_exe().ok()
    }
}

/// Guest RAM: a memfd mapped into this process, shared with the executor (and with Bochs).
///
/// Guest memory is never exposed as a Rust slice (the executor writes it concurrently); all
/// access is by copying.
#[derive(Debug)]
pub struct GuestRam {
    fd: OwnedFd,
    map: SharedMapping,
}

impl GuestRam {
    /// Creates `size` bytes (a multiple of 4 KiB) of zeroed guest RAM.
    pub fn new(size: u64) -> io::Result<Self> {
        if size == 0 || size % 4096 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "size must be a multiple of 4096",
            ));
        }
        let fd = memfd(c"plex86-guest-ram", size)?;
        let len =
            usize::try_from(size).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let map = SharedMapping::new(fd.as_fd(), len, 0)?;
        Ok(GuestRam { fd, map })
    }
    /// The memfd (pass it in [`crate::ExecutorConfig`]).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.map.len() as u64
    }
    /// Writes `data` at guest-physical `pa`. Panics when out of range.
    pub fn write(&self, pa: u64, data: &[u8]) {
        self.map
            .write_bytes(usize::try_from(pa).expect("address"), data);
    }
    /// Reads into `buf` from guest-physical `pa`. Panics when out of range.
    pub fn read(&self, pa: u64, buf: &mut [u8]) {
        self.map
            .read_bytes(usize::try_from(pa).expect("address"), buf);
    }
    /// Reads a little-endian u32.
    pub fn read_u32(&self, pa: u64) -> u32 {
        let mut b = [0; 4];
        self.read(pa, &mut b);
        u32::from_le_bytes(b)
    }
    /// Writes a little-endian u32.
    pub fn write_u32(&self, pa: u64, v: u32) {
        self.write(pa, &v.to_le_bytes());
    }
    /// Reads a little-endian u64.
    pub fn read_u64(&self, pa: u64) -> u64 {
        let mut b = [0; 8];
        self.read(pa, &mut b);
        u64::from_le_bytes(b)
    }
    /// Writes a little-endian u64.
    pub fn write_u64(&self, pa: u64, v: u64) {
        self.write(pa, &v.to_le_bytes());
    }
}

// ---- the stub driver's memory (issue 14's gate) ----------------------------------------------

impl SharedMapping {
    /// The aligned u32 at `offset` as an atomic (a word both processes use).
    pub(crate) fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        assert!(offset % 4 == 0 && offset + 4 <= self.len);
        // SAFETY: in range and aligned (checked); the mapping outlives the borrow of `self`,
        // and every access to shared words goes through atomics.
        unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().add(offset).cast()) }
    }

    /// The aligned u64 at `offset` as an atomic.
    pub(crate) fn atomic_u64(&self, offset: usize) -> &std::sync::atomic::AtomicU64 {
        assert!(offset % 8 == 0 && offset + 8 <= self.len);
        // SAFETY: as for `atomic_u32`.
        unsafe { std::sync::atomic::AtomicU64::from_ptr(self.ptr.as_ptr().add(offset).cast()) }
    }

    /// Copies a plain-data value into the mapping at `offset`.
    pub(crate) fn write_plain<T: Plain>(&self, offset: usize, v: &T) {
        assert!(offset
            .checked_add(size_of::<T>())
            .is_some_and(|e| e <= self.len));
        // SAFETY: in range (checked) and not overlapping `v` (ordinary process memory); the
        // bytes of a `T: Plain` are all initialised integers.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (v as *const T).cast::<u8>(),
                self.ptr.as_ptr().add(offset),
                size_of::<T>(),
            )
        }
    }
}

/// Types made only of integers (any bit pattern is a value), copied to and from shared memory.
///
/// # Safety
/// Implementors must be `repr(C)` structs of integer fields or arrays of them.
pub(crate) unsafe trait Plain: Sized {}
// SAFETY: repr(C), integer fields only.
unsafe impl Plain for plex86_monitor::frame::KUcontext {}
// SAFETY: repr(C), integer fields only.
unsafe impl Plain for plex86_monitor::frame::EntryFrame {}
// SAFETY: repr(C), integer fields only.
unsafe impl Plain for plex86_monitor::frame::EntrySegs {}
// SAFETY: repr(C), integer fields only.
unsafe impl Plain for crate::protocol::stub::MapOp {}

/// Guest RAM mapped in the library, as the monitor reads it (walks, A/D updates, code bytes).
#[derive(Debug)]
pub(crate) struct RamMap(SharedMapping);

impl RamMap {
    pub(crate) fn new(fd: BorrowedFd<'_>, size: u64) -> io::Result<Self> {
        let len =
            usize::try_from(size).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        SharedMapping::new(fd, len, 0).map(RamMap)
    }
    fn in_range(&self, pa: u64, n: u64) -> bool {
        pa.checked_add(n).is_some_and(|e| e <= self.0.len as u64)
    }
}

impl guest_paging::PhysMemory for RamMap {
    fn read_u32(&self, pa: u64) -> Option<u32> {
        (self.in_range(pa, 4) && pa % 4 == 0).then(|| {
            self.0
                .atomic_u32(pa as usize)
                .load(std::sync::atomic::Ordering::Relaxed)
        })
    }
    fn read_u64(&self, pa: u64) -> Option<u64> {
        (self.in_range(pa, 8) && pa % 8 == 0).then(|| {
            self.0
                .atomic_u64(pa as usize)
                .load(std::sync::atomic::Ordering::Relaxed)
        })
    }
    fn cmpxchg_u32(&self, pa: u64, old: u32, new: u32) -> Option<bool> {
        use std::sync::atomic::Ordering::SeqCst;
        (self.in_range(pa, 4) && pa % 4 == 0).then(|| {
            self.0
                .atomic_u32(pa as usize)
                .compare_exchange(old, new, SeqCst, SeqCst)
                .is_ok()
        })
    }
    fn cmpxchg_u64(&self, pa: u64, old: u64, new: u64) -> Option<bool> {
        use std::sync::atomic::Ordering::SeqCst;
        (self.in_range(pa, 8) && pa % 8 == 0).then(|| {
            self.0
                .atomic_u64(pa as usize)
                .compare_exchange(old, new, SeqCst, SeqCst)
                .is_ok()
        })
    }
}

impl plex86_monitor::monitor::GuestRam for RamMap {
    fn read(&self, pa: u64, buf: &mut [u8]) -> bool {
        if !self.in_range(pa, buf.len() as u64) {
            return false;
        }
        self.0.read_bytes(pa as usize, buf);
        true
    }
}

/// The CPU this thread runs on now (the vDSO's getcpu).
pub(crate) fn current_cpu() -> Option<usize> {
    // SAFETY: no arguments, no memory effects.
    let c = unsafe { libc::sched_getcpu() };
    usize::try_from(c).ok()
}

/// Restricts thread `tid` (of a child process) to `cpu`.
pub(crate) fn pin_thread(tid: i32, cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity only reads it.
    cvt(unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set)
    })
    .map(drop)
}

/// CLOCK_MONOTONIC in nanoseconds (the clock the stub timestamps its runs with).
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Sends `sig` to thread `tid` of process `pid` (`tgkill`: the receiver sees SI_TKILL and
/// this process's pid in its siginfo).
pub(crate) fn tgkill(pid: u32, tid: u32, sig: i32) -> io::Result<()> {
    // SAFETY: plain system call with integer arguments.
    let r = unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            pid as libc::c_int,
            tid as libc::c_int,
            sig,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
