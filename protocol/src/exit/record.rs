//! The exit record both sides use: the executor fills one per run and encodes it into the
//! region; the library decodes it (and checks what needs the request, e.g. the budget and the
//! RAM size) and hands it on. Fixed size, no allocation: the executor builds it in a signal
//! handler.

use super::{ExitReason, RawExit, EXIT_ECX_CLOBBERED, EXIT_EIP_LOST};
use crate::MAX_CODE_PAGES;
use std::time::Duration;

/// Guest-physical pages (page aligned) of write-protected pages that guest code wrote during a
/// run; each is now mapped writable and no longer write-protected.
pub struct CodeLog {
    pages: [u64; MAX_CODE_PAGES],
    len: usize,
}

/// [`CodeLog::push`] on a full log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeLogFull;

impl CodeLog {
    /// An empty log.
    pub const EMPTY: CodeLog = CodeLog {
        pages: [0; MAX_CODE_PAGES],
        len: 0,
    };

    /// Appends `page`, unless the log is full.
    pub fn push(&mut self, page: u64) -> Result<(), CodeLogFull> {
        let slot = self.pages.get_mut(self.len).ok_or(CodeLogFull)?;
        *slot = page;
        self.len += 1;
        Ok(())
    }
    /// Whether another page fits.
    pub fn is_full(&self) -> bool {
        self.len == MAX_CODE_PAGES
    }
    /// The logged pages, oldest first.
    pub fn as_slice(&self) -> &[u64] {
        &self.pages[..self.len]
    }
    /// Empties the log.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// Copies only the logged pages: a record is copied once per run.
impl Clone for CodeLog {
    fn clone(&self) -> Self {
        let mut c = CodeLog::EMPTY;
        c.clone_from(self);
        c
    }
    fn clone_from(&mut self, source: &Self) {
        self.pages[..source.len].copy_from_slice(source.as_slice());
        self.len = source.len;
    }
}

/// Two logs are equal when they hold the same pages (what lies beyond them is left over).
impl PartialEq for CodeLog {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for CodeLog {}

impl Default for CodeLog {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl core::fmt::Debug for CodeLog {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut l = f.debug_list();
        for p in self.as_slice() {
            l.entry(&format_args!("{p:#x}"));
        }
        l.finish()
    }
}

/// Why and how a native run ended.
#[derive(Debug, PartialEq, Eq)]
pub struct ExitRecord {
    /// Why the run ended.
    pub reason: ExitReason,
    /// Native (host) time of the run, entry and exit included, in nanoseconds.
    pub native_ns: u64,
    /// The part of `native_ns` spent on demand fills, as the executor measured it (its handler
    /// time plus a calibrated signal round trip per fill): host work, not guest work.
    pub fill_ns: u64,
    /// Pages the executor mirrored on demand during the run.
    pub demand_fills: u32,
    /// The reported ECX is not the pre-instruction value (clobbered by SYSCALL).
    pub ecx_clobbered: bool,
    /// EIP (reported as 0) is lost: the host kernel's compat fast-syscall path (SYSCALL on AMD
    /// hosts, SYSENTER on Intel hosts) discards it before any trap. With ECX lost too
    /// (`ecx_clobbered`) the emulator cannot resume exactly. Only the stub reports SYSENTER
    /// of compatibility-mode code with ECX intact: SYSENTER saves nothing and depends on no
    /// register, so the emulator carries it out at the reported state (see
    /// docs/ARCHITECTURE.md).
    pub eip_lost: bool,
    /// Set by the stub executor's library side, never on the wire: the run ended in a
    /// [`ExitReason::GuestEscape`] that it contained. It replaced its process (a fresh one,
    /// with an empty mirror and no write protections) and the state is the guest's at the
    /// signal that caught the escape, where the emulator raises #GP(0) (docs/ARCHITECTURE.md,
    /// "The stub executor").
    pub escape_contained: bool,
    /// Write-protected pages written during the run.
    pub code_pages: CodeLog,
}

/// Field by field, so that `clone_from` copies only the logged code pages.
impl Clone for ExitRecord {
    fn clone(&self) -> Self {
        let mut c = ExitRecord::new(self.reason);
        c.clone_from(self);
        c
    }
    fn clone_from(&mut self, source: &Self) {
        self.reason = source.reason;
        self.native_ns = source.native_ns;
        self.fill_ns = source.fill_ns;
        self.demand_fills = source.demand_fills;
        self.ecx_clobbered = source.ecx_clobbered;
        self.eip_lost = source.eip_lost;
        self.escape_contained = source.escape_contained;
        self.code_pages.clone_from(&source.code_pages);
    }
}

impl ExitRecord {
    /// A record of `reason` with no time, fill, flag or code page.
    pub const fn new(reason: ExitReason) -> Self {
        ExitRecord {
            reason,
            native_ns: 0,
            fill_ns: 0,
            demand_fills: 0,
            ecx_clobbered: false,
            eip_lost: false,
            escape_contained: false,
            code_pages: CodeLog::EMPTY,
        }
    }
    /// Makes this the record of a new run, ending with `reason` so far: no time, fill, flag or
    /// code page. Unlike assigning [`ExitRecord::new`], it does not rewrite the code log's
    /// storage (a run's exit path does this once per run).
    pub fn reset(&mut self, reason: ExitReason) {
        self.reason = reason;
        self.native_ns = 0;
        self.fill_ns = 0;
        self.demand_fills = 0;
        self.ecx_clobbered = false;
        self.eip_lost = false;
        self.escape_contained = false;
        self.code_pages.clear();
    }

    /// [`ExitRecord::native_ns`] as a duration.
    pub fn native_time(&self) -> Duration {
        Duration::from_nanos(self.native_ns)
    }
    /// [`ExitRecord::fill_ns`] as a duration.
    pub fn fill_time(&self) -> Duration {
        Duration::from_nanos(self.fill_ns)
    }

    /// Writes the record into `raw`, which may hold an earlier record: every field is
    /// rewritten, except the code-page slots beyond the logged ones, which no reader looks at.
    pub fn encode(&self, raw: &mut RawExit) {
        raw.flags = 0;
        raw.vector = 0;
        raw.error_code = 0;
        raw.linear = 0;
        raw.access = 0;
        raw.detail = 0;
        self.reason.encode_into(raw);
        if self.ecx_clobbered {
            raw.flags |= EXIT_ECX_CLOBBERED;
        }
        if self.eip_lost {
            raw.flags |= EXIT_EIP_LOST;
        }
        raw.native_ns = self.native_ns;
        raw.fill_ns = self.fill_ns;
        raw.demand_fills = self.demand_fills;
        let pages = self.code_pages.as_slice();
        raw.n_code_pages = pages.len() as u32;
        raw.code_pages[..pages.len()].copy_from_slice(pages);
    }

    /// Decodes and checks what the record says of itself (reason fields, fill time within the
    /// native time, the code-page count); the caller checks what needs the request (budget,
    /// RAM size, the state). After a guest escape only the reason and times are kept: the
    /// executor is not trusted for anything else. `Err` names the first bad field.
    pub fn decode(raw: &RawExit) -> Result<Self, String> {
        let mut rec = ExitRecord::new(ExitReason::BudgetExpired);
        Self::decode_into(raw, &mut rec)?;
        Ok(rec)
    }

    /// [`ExitRecord::decode`] into an existing record (the library reuses one per executor, so
    /// that a run's exit copies only the logged code pages). On `Err`, `out` is unspecified.
    pub fn decode_into(raw: &RawExit, out: &mut ExitRecord) -> Result<(), String> {
        let reason = ExitReason::decode(raw)?;
        if raw.fill_ns > raw.native_ns {
            return Err(format!(
                "fill time {} ns > native time {} ns",
                raw.fill_ns, raw.native_ns
            ));
        }
        out.reset(reason);
        out.native_ns = raw.native_ns;
        out.fill_ns = raw.fill_ns;
        out.demand_fills = raw.demand_fills;
        if matches!(reason, ExitReason::GuestEscape { .. }) {
            return Ok(());
        }
        let n = raw.n_code_pages as usize;
        if n > MAX_CODE_PAGES {
            return Err(format!("{n} code pages"));
        }
        out.code_pages.pages[..n].copy_from_slice(&raw.code_pages[..n]);
        out.code_pages.len = n;
        out.ecx_clobbered = raw.flags & EXIT_ECX_CLOBBERED != 0;
        out.eip_lost = raw.flags & EXIT_EIP_LOST != 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{EscapeKind, SyscallInstruction};

    #[test]
    fn a_record_round_trips_with_its_flags_times_and_code_pages() {
        let mut rec = ExitRecord::new(ExitReason::SystemCall {
            instruction: SyscallInstruction::Syscall,
        });
        rec.native_ns = 12_345;
        rec.fill_ns = 2_000;
        rec.demand_fills = 3;
        rec.ecx_clobbered = true;
        rec.eip_lost = true;
        for p in 0..MAX_CODE_PAGES as u64 {
            rec.code_pages.push(p << 12).unwrap();
        }
        assert!(rec.code_pages.is_full());
        assert_eq!(rec.code_pages.push(0), Err(CodeLogFull));
        let mut raw = RawExit::ZERO;
        raw.code_pages[MAX_CODE_PAGES - 1] = 1; // overwritten: the log is full
        rec.encode(&mut raw);
        assert_eq!(ExitRecord::decode(&raw), Ok(rec.clone()));
        // A copy over a record holding other pages is the record, field by field.
        let mut copy = ExitRecord::new(ExitReason::Cpuid);
        copy.code_pages.push(0x7000).unwrap();
        copy.clone_from(&rec);
        assert_eq!(copy, rec);
        assert_eq!(copy.code_pages.as_slice().len(), MAX_CODE_PAGES);
        copy.clone_from(&ExitRecord::new(ExitReason::Cpuid));
        assert_eq!(copy, ExitRecord::new(ExitReason::Cpuid));
        // Reused buffers on both sides hold nothing of the earlier record.
        let mut reused = ExitRecord::decode(&raw).unwrap();
        rec.reset(ExitReason::SoftwareInterrupt { vector: 0x80 });
        rec.native_ns = 7;
        rec.encode(&mut raw);
        assert_eq!((raw.n_code_pages, raw.flags), (0, 0));
        ExitRecord::decode_into(&raw, &mut reused).unwrap();
        assert_eq!(reused, rec);
        assert_eq!(ExitRecord::decode(&raw), Ok(rec));
    }

    #[test]
    fn decode_names_the_bad_field_and_trusts_nothing_more_after_an_escape() {
        let mut raw = RawExit::ZERO;
        ExitRecord::new(ExitReason::BudgetExpired).encode(&mut raw);
        raw.n_code_pages = MAX_CODE_PAGES as u32 + 1;
        assert_eq!(ExitRecord::decode(&raw), Err("257 code pages".into()));
        raw.n_code_pages = 0;
        raw.fill_ns = 2;
        raw.native_ns = 1;
        assert_eq!(
            ExitRecord::decode(&raw),
            Err("fill time 2 ns > native time 1 ns".into())
        );
        let escape = ExitReason::GuestEscape {
            kind: EscapeKind::LongMode,
            address: 1 << 32,
            diagnostic: 0,
        };
        let mut rec = ExitRecord::new(escape);
        rec.code_pages.push(0x1000).unwrap();
        rec.eip_lost = true;
        rec.encode(&mut raw);
        raw.n_code_pages = 9999;
        assert_eq!(ExitRecord::decode(&raw), Ok(ExitRecord::new(escape)));
    }
}
