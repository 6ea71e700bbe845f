//! Handing work to the stub: the op queue to the mapper, in batches, and verdicts to the guest
//! thread.

use super::{st, StubExecutor};
use crate::error::DriverError;
use crate::protocol::stub::{
    by_lib as lib, by_stub as stub, MapOp, Verdict, MAX_OPS, OP_LDT, OP_MMAP,
};
use crate::sys;
use std::sync::atomic::{fence, Ordering};

impl StubExecutor {
    /// Answers the waiting guest thread with `v`, after the queued mirror ops go out (the last
    /// batch of them together with the verdict: the guest thread waits for it before it goes
    /// on). Order matters: the batch is written and the verdict given before the mapper may
    /// start, because with a batch it is the mapper, once done, that wakes a sleeping guest
    /// thread (one hand-over fewer per fill than a wake by the library, which would find the
    /// batch not done yet).
    ///
    /// An entry may be another guest process's, and the op batches lie in S, where guest code
    /// can read them: before `Enter` the last batch is scrubbed, and the ops that drop or
    /// protect mirrors (which name the previous process's pages) are carried out and scrubbed
    /// first; only the entry's own fills and LDT descriptors travel with the verdict.
    pub(super) fn answer(&mut self, v: Verdict) -> Result<(), DriverError> {
        if v == Verdict::Enter {
            self.await_mapper_done()?;
            let ops = &self.monitor.host.ops;
            if let Some(last) = ops
                .iter()
                .rposition(|op| op.kind != OP_MMAP && op.kind != OP_LDT)
            {
                if self.stage_ops(last + 1)? {
                    self.start_mapper();
                    self.await_mapper_done()?;
                }
            }
        }
        let batch = self.stage_ops(usize::MAX)?;
        self.ctl
            .atomic_u32(lib::VERDICT)
            .store(v as u32, Ordering::Relaxed);
        self.req = self.req.wrapping_add(1);
        self.ctl
            .atomic_u32(lib::REQ_SEQ)
            .store(self.req, Ordering::Release);
        if batch {
            self.start_mapper();
        } else {
            fence(Ordering::SeqCst);
            if self.stub_word(stub::SLEEPING) != 0 {
                sys::futex_wake(self.ctl.atomic_u32(lib::REQ_SEQ));
            }
        }
        Ok(())
    }

    /// Hands every queued op to the mapper and waits until it has carried them out (no
    /// verdict: MMU commands between runs).
    pub(super) fn flush_ops(&mut self) -> Result<(), DriverError> {
        if self.stage_ops(usize::MAX)? {
            self.start_mapper();
            self.await_mapper_done()?;
        }
        Ok(())
    }

    /// Writes the first `limit` queued ops (all, at most) as batches: all but the last are
    /// carried out at once, the last is written and made the one the guest thread waits for
    /// ([`lib::RESUME_AFTER`]); the caller starts the mapper on it. `Ok(false)`: nothing
    /// queued.
    fn stage_ops(&mut self, limit: usize) -> Result<bool, DriverError> {
        let mut left = limit.min(self.monitor.host.ops.len());
        loop {
            if left == 0 {
                return Ok(false);
            }
            // The mapper reads the batch while it works: the previous one must be done.
            self.await_mapper_done()?;
            // (The check may have queued a flush after a failed mapping.)
            let ops = &mut self.monitor.host.ops;
            let n = left.min(ops.len()).min(MAX_OPS);
            for (i, op) in ops.iter().take(n).enumerate() {
                self.ctl
                    .write_plain(lib::OPS + i * std::mem::size_of::<MapOp>(), op);
            }
            self.ctl
                .atomic_u32(lib::MAP_COUNT)
                .store(n as u32, Ordering::Relaxed);
            ops.drain(..n);
            left -= n;
            self.map_len = n;
            self.map_seq = self.map_seq.wrapping_add(1);
            self.ctl
                .atomic_u32(lib::RESUME_AFTER)
                .store(self.map_seq, Ordering::Relaxed);
            if left == 0 {
                return Ok(true);
            }
            self.start_mapper();
        }
    }

    /// Publishes the staged batch to the mapper and wakes it if it sleeps.
    fn start_mapper(&mut self) {
        self.ctl
            .atomic_u32(lib::MAP_SEQ)
            .store(self.map_seq, Ordering::Release);
        fence(Ordering::SeqCst);
        if self.stub_word(stub::MAPPER_SLEEPING) != 0 {
            sys::futex_wake(self.ctl.atomic_u32(lib::MAP_SEQ));
        }
    }

    /// Waits until the mapper has carried out the last batch and looks at its outcome once:
    /// a mapping that failed for lack of room (`vm.max_map_count`) leaves the mirror record
    /// ahead of the stub, so everything is flushed and refilled on demand (as today's
    /// executor does on ENOMEM); any other failure is a broken stub.
    fn await_mapper_done(&mut self) -> Result<(), DriverError> {
        let seq = self.map_seq;
        self.await_word(st(stub::MAP_DONE), |v| v == seq, None)?;
        if self.map_checked == seq {
            return Ok(());
        }
        self.map_checked = seq;
        // Done with: scrubbed (see `answer`).
        for i in 0..self.map_len {
            self.ctl.write_plain(
                lib::OPS + i * std::mem::size_of::<MapOp>(),
                &MapOp::default(),
            );
        }
        self.ctl
            .atomic_u32(lib::MAP_COUNT)
            .store(0, Ordering::Relaxed);
        let err = -(self.stub_word(stub::MAP_ERR) as i32);
        match err {
            0 => Ok(()),
            libc::ENOMEM => {
                let m = &mut *self.monitor;
                // Cannot fail: the queue is unbounded.
                let _ = m.shadow.flush_all(&mut m.host);
                Ok(())
            }
            e => {
                self.kill();
                Err(DriverError::Io(std::io::Error::other(format!(
                    "a mirror operation failed in the stub: {}",
                    std::io::Error::from_raw_os_error(e)
                ))))
            }
        }
    }
}
