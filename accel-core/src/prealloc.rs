//! Allocating all of guest RAM up front (`PLEX86_ACCEL_CONFIG_PREALLOC_RAM`, bochsrc
//! `prealloc=1`), on a thread of its own so that Bochs boots meanwhile.
//!
//! Guest RAM is a memfd, shared with the executor. Bochs's first write to a memfd page costs
//! more than to the anonymous memory of a plain Bochs build, which made a guest touching fresh
//! memory (bench-pagefault) slower than plain Bochs even with no native run at all; a page
//! allocated in advance only needs its page-table entry (figures: docs/ARCHITECTURE.md, "Costs
//! behind the constants"). The price is that all of guest RAM is resident from the start.
//!
//! The thread never calls into Bochs (its logger is not thread-safe): the accelerator asks
//! [`Prealloc::outcome`] from Bochs's thread and logs what it gets.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running or finished allocation of the RAM memfd.
#[derive(Debug)]
pub struct Prealloc {
    thread: Option<JoinHandle<io::Result<Duration>>>,
    bytes: u64,
}

impl Prealloc {
    /// Starts allocating the first `bytes` of `fd` (the thread owns and closes `fd`).
    pub fn start(fd: OwnedFd, bytes: u64) -> io::Result<Prealloc> {
        let thread = std::thread::Builder::new()
            .name("plex86-prealloc".into())
            .spawn(move || {
                let t0 = Instant::now();
                crate::sys::allocate(fd.as_fd(), bytes).map(|()| t0.elapsed())
            })?;
        Ok(Prealloc {
            thread: Some(thread),
            bytes,
        })
    }

    /// What to log once the allocation has ended: `Some` once (`wait`: block until then),
    /// `None` while it runs and after it was reported.
    pub fn outcome(&mut self, wait: bool) -> Option<Result<String, String>> {
        if !wait && !self.thread.as_ref()?.is_finished() {
            return None;
        }
        let mib = self.bytes >> 20;
        Some(match self.thread.take()?.join() {
            Ok(Ok(took)) => Ok(format!(
                "guest RAM allocated up front: {mib} MiB in {:.3} s",
                took.as_secs_f64()
            )),
            Ok(Err(e)) => Err(format!(
                "allocating guest RAM up front ({mib} MiB) failed, so Bochs allocates it as the guest touches it: {e}"
            )),
            Err(_) => Err("the guest-RAM allocation thread panicked".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn allocated_bytes(fd: &OwnedFd) -> u64 {
        let meta = std::fs::File::from(fd.try_clone().unwrap())
            .metadata()
            .unwrap();
        std::os::unix::fs::MetadataExt::blocks(&meta) * 512
    }

    #[test]
    fn allocates_the_whole_memfd_and_reports_once() {
        let ram = host_driver::GuestRam::new(4 << 20).unwrap();
        let fd = crate::sys::dup_fd(ram.fd().as_raw_fd()).unwrap();
        assert_eq!(
            allocated_bytes(&fd),
            0,
            "a fresh memfd has nothing allocated"
        );
        let mut p = Prealloc::start(fd.try_clone().unwrap(), 4 << 20).unwrap();
        let msg = p.outcome(true).expect("an outcome").expect("allocated");
        assert!(msg.contains("4 MiB"), "{msg}");
        assert_eq!(allocated_bytes(&fd), 4 << 20);
        assert!(p.outcome(true).is_none(), "reported once");
        assert!(p.outcome(false).is_none());
    }

    #[test]
    fn a_failure_is_reported_not_fatal() {
        // A pipe cannot be allocated: fallocate fails with ESPIPE.
        let (r, _w) = std::io::pipe().unwrap();
        let mut p = Prealloc::start(OwnedFd::from(r), 4096).unwrap();
        let msg = p.outcome(true).expect("an outcome").unwrap_err();
        assert!(msg.contains("failed"), "{msg}");
    }
}
