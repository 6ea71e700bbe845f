//! Statistics: counted during the run, logged as a compact table at shutdown and optionally
//! written as JSON (by hand: the document is small and flat, and serde would be the library's
//! only use of it).

use crate::backend::Which;
use crate::decode::InsnKey;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Instant;

pub use crate::exits::{decline_name, DECLINE_REASONS, EXIT_NAMES, EXIT_REASONS};

/// Upper bounds (µs) of the run-length buckets of [`Stats::run_lengths`].
pub const RUN_LENGTH_BOUNDS_US: [u64; 8] = [2, 4, 8, 16, 32, 64, 128, 1024];
const RUN_LENGTH_NAMES: [&str; RUN_LENGTH_BOUNDS_US.len() + 1] = [
    "lt_2us",
    "lt_4us",
    "lt_8us",
    "lt_16us",
    "lt_32us",
    "lt_64us",
    "lt_128us",
    "lt_1024us",
    "ge_1024us",
];

/// The counters.
#[derive(Clone, Debug)]
pub struct Stats {
    /// When the accelerator started.
    pub start: Instant,
    /// Calls of `plex86_accel_run`.
    pub calls: u64,
    /// Native runs that returned RAN.
    pub runs: u64,
    /// Runs that returned FAILED.
    pub failures: u64,
    /// RAN exits by `PLEX86_ACCEL_EXIT_*`.
    pub exits: [u64; EXIT_REASONS],
    /// Declines by `PLEX86_ACCEL_DECLINE_*` (library and Bochs side).
    pub declines: [u64; DECLINE_REASONS],
    /// Bochs-side declines with a reason the header does not define.
    pub declines_unknown: u64,
    /// Native time reported by the executor (entry to exit).
    pub native_ns: u64,
    /// Host time spent inside the executor calls, as seen by the library (native time plus
    /// the handover both ways).
    pub run_wall_ns: u64,
    /// Guest ticks charged for native runs.
    pub ticks_charged: u64,
    /// Pages the executor mirrored on demand (host #PF → walk → mmap).
    pub demand_fills: u64,
    /// Host time those fills took (part of `native_ns`; the executor's measurement).
    pub fill_ns: u64,
    /// Native runs by length (host time, entry and exit included): bucket i counts runs
    /// shorter than `RUN_LENGTH_BOUNDS_US[i]` µs and not shorter than the bound before; the last
    /// bucket the rest.
    pub run_lengths: [u64; RUN_LENGTH_BOUNDS_US.len() + 1],
    /// TLB flush notifications: all entries.
    pub flush_all: u64,
    /// TLB flush notifications: non-global entries.
    pub flush_non_global: u64,
    /// INVLPG notifications.
    pub invlpg: u64,
    /// Flushes the library added because the paging mode changed between entries.
    pub paging_mode_flushes: u64,
    /// Flushes the library added because CR3 changed without a flush notification.
    pub unreported_cr3_flushes: u64,
    /// Memory-map notifications.
    pub memory_map_changes: u64,
    /// Executors started after the first one (memory-map changes).
    pub respawns: u64,
    /// MMU commands sent to the executor.
    pub commands_sent: u64,
    /// `plex86_accel_protect_code_page` calls.
    pub protect_requests: u64,
    /// Write-protect commands sent (requests for pages not already protected).
    pub write_protects_sent: u64,
    /// Code pages reported to Bochs as written natively.
    pub code_page_invalidations: u64,
    /// The instruction at EIP for privileged, segment-load, #GP and #UD exits:
    /// (exit reason, instruction) → count.
    pub instructions: HashMap<(usize, InsnKey), u64>,
    /// Exits whose instruction could not be read or decoded.
    pub undecoded: u64,
    /// Entries refused because the guest's tables map pages where the stub's region is (the
    /// process runs emulated).
    pub stub_region_refused: u64,
    /// Accesses to the rest of the stub region's 4 GiB block, never mirrored, emulated one by
    /// one (`NeedsEmulation` exits there).
    pub stub_region_emulated: u64,
    /// Native runs (RAN) by the executor that ran them (index: [`crate::backend::Which`]).
    pub backend_runs: [u64; 2],
    /// Native runs of compatibility-mode code (32-bit processes of a 64-bit guest; on the
    /// stub executor, counted in `backend_runs` too).
    pub compat_runs: u64,
    /// Native runs of long-mode code that ended on a code segment the code loaded itself: it
    /// switched between 64-bit and compatibility mode natively (Bochs reloads CS).
    pub mode_switch_runs: u64,
    /// Stub executors started at a long-mode entry by the default backend (not counting
    /// respawns).
    pub stub_starts: u64,
    /// Guest escapes the executor contained (the stub: a fresh process, #GP(0) in the guest;
    /// also counted as `contained_escape` exits).
    pub escapes_contained: u64,
    /// Why the accelerator disabled itself, if it did.
    pub failure: Option<String>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new(Instant::now())
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A JSON object written field by field.
struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    fn new(out: &'a mut String) -> Self {
        out.push('{');
        Obj { out, first: true }
    }
    fn key(&mut self, k: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        json_str(self.out, k);
        self.out.push(':');
        self.out
    }
    fn num(&mut self, k: &str, v: u64) {
        let _ = write!(self.key(k), "{v}");
    }
    fn float(&mut self, k: &str, v: f64) {
        let v = if v.is_finite() { v } else { 0.0 };
        let _ = write!(self.key(k), "{v:.6}");
    }
    fn counts<'b>(&mut self, k: &str, it: impl Iterator<Item = (&'b str, u64)>) {
        let o = self.key(k);
        let mut inner = Obj::new(o);
        for (name, v) in it {
            inner.num(name, v);
        }
        inner.end();
    }
    fn end(self) {
        self.out.push('}');
    }
}

impl Stats {
    /// Counts one native run of `native_ns` in the run-length histogram.
    pub fn run_length(&mut self, native_ns: u64) {
        let us = native_ns / 1_000;
        let i = RUN_LENGTH_BOUNDS_US
            .iter()
            .position(|&b| us < b)
            .unwrap_or(RUN_LENGTH_BOUNDS_US.len());
        self.run_lengths[i] += 1;
    }

    /// Counters starting at `start`.
    pub fn new(start: Instant) -> Self {
        Stats {
            start,
            calls: 0,
            runs: 0,
            failures: 0,
            exits: [0; EXIT_REASONS],
            declines: [0; DECLINE_REASONS],
            declines_unknown: 0,
            native_ns: 0,
            run_wall_ns: 0,
            ticks_charged: 0,
            demand_fills: 0,
            fill_ns: 0,
            run_lengths: [0; RUN_LENGTH_BOUNDS_US.len() + 1],
            flush_all: 0,
            flush_non_global: 0,
            invlpg: 0,
            paging_mode_flushes: 0,
            unreported_cr3_flushes: 0,
            memory_map_changes: 0,
            respawns: 0,
            commands_sent: 0,
            protect_requests: 0,
            write_protects_sent: 0,
            code_page_invalidations: 0,
            instructions: HashMap::new(),
            undecoded: 0,
            stub_region_refused: 0,
            stub_region_emulated: 0,
            backend_runs: [0; 2],
            compat_runs: 0,
            mode_switch_runs: 0,
            stub_starts: 0,
            escapes_contained: 0,
            failure: None,
        }
    }

    /// Counts a decline (library or Bochs side).
    pub fn decline(&mut self, reason: u32) {
        match self
            .declines
            .get_mut(reason as usize)
            .filter(|_| decline_name(reason as usize).is_some())
        {
            Some(c) => *c += 1,
            None => self.declines_unknown += 1,
        }
    }

    /// Counts a RAN exit.
    pub fn exit(&mut self, reason: u32) {
        if let Some(c) = self.exits.get_mut(reason as usize) {
            *c += 1;
        }
    }

    /// Total declines.
    pub fn total_declines(&self) -> u64 {
        self.declines.iter().sum::<u64>() + self.declines_unknown
    }

    fn instructions_sorted(&self) -> Vec<(usize, String, u64)> {
        let mut v: Vec<(usize, String, u64)> = self
            .instructions
            .iter()
            .map(|(&(r, k), &n)| (r, k.label(), n))
            .collect();
        v.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| (a.0, &a.1).cmp(&(b.0, &b.1))));
        v
    }

    /// The human table, one line each, for the log.
    pub fn summary(&self, wall_ns: u64) -> Vec<String> {
        let mut l = Vec::new();
        l.push(format!(
            "statistics: {} calls, {} native runs, {} declined, {} failed",
            self.calls,
            self.runs,
            self.total_declines(),
            self.failures
        ));
        l.push(format!(
            "  time: native {:.3} s of {:.3} s wall ({:.1}%), executor calls {:.3} s, {} guest ticks charged",
            self.native_ns as f64 / 1e9,
            wall_ns as f64 / 1e9,
            100.0 * share(self.native_ns, wall_ns),
            self.run_wall_ns as f64 / 1e9,
            self.ticks_charged
        ));
        let nonzero = |names: &mut dyn Iterator<Item = (&str, u64)>| {
            let v: Vec<String> = names
                .filter(|&(_, n)| n != 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        l.push(format!(
            "  exits: {}",
            nonzero(&mut EXIT_NAMES.iter().copied().zip(self.exits.iter().copied()))
        ));
        let mut declines = self.decline_pairs();
        l.push(format!("  declines: {}", nonzero(&mut declines)));
        l.push(format!(
            "  mmu: {} demand fills ({:.3} s); notified flush-all {}, flush-non-global {}, invlpg {}, memory-map {}; added flushes {} (paging mode) + {} (CR3 unreported); {} commands sent, {} respawns",
            self.demand_fills,
            self.fill_ns as f64 / 1e9,
            self.flush_all,
            self.flush_non_global,
            self.invlpg,
            self.memory_map_changes,
            self.paging_mode_flushes,
            self.unreported_cr3_flushes,
            self.commands_sent,
            self.respawns
        ));
        l.push(format!(
            "  executors: {} runs on the executor, {} on the stub executor ({} of compatibility-mode code, {} switched modes natively; {} started at a long-mode entry)",
            self.backend_runs[0],
            self.backend_runs[1],
            self.compat_runs,
            self.mode_switch_runs,
            self.stub_starts
        ));
        l.push(format!(
            "  code pages: {} protect requests, {} write-protects sent, {} invalidations reported",
            self.protect_requests, self.write_protects_sent, self.code_page_invalidations
        ));
        let insns = self.instructions_sorted();
        if !insns.is_empty() || self.undecoded != 0 {
            let top: Vec<String> = insns
                .iter()
                .take(12)
                .map(|(r, k, n)| format!("{k} {n} ({})", EXIT_NAMES[*r]))
                .collect();
            l.push(format!(
                "  exit instructions: {}; undecoded {}",
                top.join(", "),
                self.undecoded
            ));
        }
        if self.escapes_contained != 0 {
            l.push(format!(
                "  escapes contained: {} (each cost the guest process a #GP(0) and the executor its process)",
                self.escapes_contained
            ));
        }
        if let Some(f) = &self.failure {
            l.push(format!("  disabled after: {f}"));
        }
        l
    }

    fn decline_pairs(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        (0..DECLINE_REASONS)
            .filter_map(|i| decline_name(i).map(|n| (n, self.declines[i])))
            .chain(std::iter::once(("unknown", self.declines_unknown)))
    }

    /// The JSON document (one object; see the field names).
    pub fn to_json(&self, wall_ns: u64) -> String {
        let mut s = String::with_capacity(2048);
        let mut o = Obj::new(&mut s);
        o.num("version", 1);
        o.num("calls", self.calls);
        o.num("runs", self.runs);
        o.num("failures", self.failures);
        o.num("declines_total", self.total_declines());
        o.num("wall_ns", wall_ns);
        o.num("native_ns", self.native_ns);
        o.float("native_share", share(self.native_ns, wall_ns));
        o.num("run_wall_ns", self.run_wall_ns);
        o.num("ticks_charged", self.ticks_charged);
        o.num("demand_fills", self.demand_fills);
        o.num("fill_ns", self.fill_ns);
        o.counts(
            "run_lengths",
            RUN_LENGTH_NAMES
                .iter()
                .copied()
                .zip(self.run_lengths.iter().copied()),
        );
        o.counts(
            "exits",
            EXIT_NAMES.iter().copied().zip(self.exits.iter().copied()),
        );
        o.counts("declines", self.decline_pairs());
        o.counts(
            "mmu",
            [
                ("flush_all", self.flush_all),
                ("flush_non_global", self.flush_non_global),
                ("invlpg", self.invlpg),
                ("memory_map_changes", self.memory_map_changes),
                ("paging_mode_flushes", self.paging_mode_flushes),
                ("unreported_cr3_flushes", self.unreported_cr3_flushes),
                ("commands_sent", self.commands_sent),
                ("respawns", self.respawns),
            ]
            .into_iter(),
        );
        o.counts(
            "stub_region",
            [
                ("refused_entries", self.stub_region_refused),
                ("emulated_accesses", self.stub_region_emulated),
            ]
            .into_iter(),
        );
        o.counts(
            "backend_runs",
            [
                (Which::Executor.name(), self.backend_runs[0]),
                (Which::Stub.name(), self.backend_runs[1]),
            ]
            .into_iter(),
        );
        o.num("compat_runs", self.compat_runs);
        o.num("mode_switch_runs", self.mode_switch_runs);
        o.num("stub_starts", self.stub_starts);
        o.counts(
            "escapes",
            [("contained", self.escapes_contained)].into_iter(),
        );
        o.counts(
            "code_pages",
            [
                ("protect_requests", self.protect_requests),
                ("write_protects_sent", self.write_protects_sent),
                ("invalidations", self.code_page_invalidations),
            ]
            .into_iter(),
        );
        {
            let out = o.key("exit_instructions");
            let mut by_reason = Obj::new(out);
            let insns = self.instructions_sorted();
            for (r, name) in EXIT_NAMES.iter().enumerate() {
                if insns.iter().any(|i| i.0 == r) {
                    let out = by_reason.key(name);
                    let mut inner = Obj::new(out);
                    for (_, k, n) in insns.iter().filter(|i| i.0 == r) {
                        inner.num(k, *n);
                    }
                    inner.end();
                }
            }
            by_reason.num("undecoded", self.undecoded);
            by_reason.end();
        }
        match &self.failure {
            Some(f) => json_str(o.key("failure"), f),
            None => o.key("failure").push_str("null"),
        }
        o.end();
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Mnemonic, Register};

    fn sample() -> Stats {
        let mut s = Stats {
            calls: 10,
            runs: 6,
            failures: 1,
            ..Stats::default()
        };
        s.exit(10);
        s.exit(10);
        s.exit(8);
        s.exit(99); // ignored
        s.decline(1);
        s.decline(16);
        s.decline(16);
        s.decline(8); // unused slot
        s.decline(400);
        s.native_ns = 250_000_000;
        s.run_wall_ns = 260_000_000;
        s.ticks_charged = 15_000_000;
        s.demand_fills = 42;
        s.fill_ns = 420_000;
        s.run_length(1_500);
        s.run_length(2_000);
        s.run_length(5_000_000);
        s.flush_all = 3;
        s.invlpg = 5;
        s.protect_requests = 7;
        s.code_page_invalidations = 2;
        let hlt = InsnKey {
            mnemonic: Mnemonic::Hlt,
            segment: Register::None,
            far: false,
        };
        let movds = InsnKey {
            mnemonic: Mnemonic::Mov,
            segment: Register::DS,
            far: false,
        };
        s.instructions.insert((10, hlt), 2);
        s.instructions.insert((11, movds), 1);
        s.undecoded = 1;
        s.backend_runs = [4, 2];
        s.stub_starts = 1;
        s.compat_runs = 1;
        s.mode_switch_runs = 3;
        s.failure = Some("executor died: \"killed\"\n".into());
        s
    }

    #[test]
    fn json_parses_and_has_every_counter() {
        let s = sample();
        let text = s.to_json(1_000_000_000);
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(v["version"], 1);
        assert_eq!(v["calls"], 10);
        assert_eq!(v["runs"], 6);
        assert_eq!(v["failures"], 1);
        assert_eq!(v["declines_total"], 5);
        assert_eq!(v["native_ns"], 250_000_000);
        assert!((v["native_share"].as_f64().unwrap() - 0.25).abs() < 1e-9);
        assert_eq!(v["ticks_charged"], 15_000_000);
        assert_eq!(v["demand_fills"], 42);
        assert_eq!(v["fill_ns"], 420_000);
        assert_eq!(v["run_lengths"]["lt_2us"], 1);
        assert_eq!(v["run_lengths"]["lt_4us"], 1);
        assert_eq!(v["run_lengths"]["ge_1024us"], 1);
        assert_eq!(v["exits"]["privileged"], 2);
        assert_eq!(v["exits"]["system_call"], 1);
        assert_eq!(v["exits"].as_object().unwrap().len(), EXIT_REASONS);
        assert_eq!(v["declines"]["short_burst"], 1);
        assert_eq!(v["declines"]["not_user_mode"], 2);
        assert_eq!(v["declines"]["unknown"], 2);
        assert_eq!(
            v["declines"].as_object().unwrap().len(),
            crate::exits::DECLINES.len() + 1
        );
        assert_eq!(
            crate::exits::DECLINES.len(),
            19,
            "none, 7 library and 11 Bochs-side reasons"
        );
        assert_eq!(v["declines"]["long_mode_64"], 0);
        assert_eq!(v["declines"]["pke"], 0);
        assert_eq!(v["mmu"]["flush_all"], 3);
        assert_eq!(v["mmu"]["invlpg"], 5);
        assert_eq!(v["stub_region"]["refused_entries"], 0);
        assert_eq!(v["stub_region"]["emulated_accesses"], 0);
        assert_eq!(v["escapes"]["contained"], 0);
        assert_eq!(v["code_pages"]["protect_requests"], 7);
        assert_eq!(v["code_pages"]["invalidations"], 2);
        assert_eq!(v["exit_instructions"]["privileged"]["hlt"], 2);
        assert_eq!(v["exit_instructions"]["segment_load"]["mov ds"], 1);
        assert_eq!(v["exit_instructions"]["undecoded"], 1);
        assert_eq!(v["backend_runs"]["executor"], 4);
        assert_eq!(v["backend_runs"]["stub"], 2);
        assert_eq!(v["stub_starts"], 1);
        assert_eq!(v["compat_runs"], 1);
        assert_eq!(v["mode_switch_runs"], 3);
        assert_eq!(v["failure"], "executor died: \"killed\"\n");
        let ok = Stats::default();
        let v: serde_json::Value = serde_json::from_str(&ok.to_json(0)).unwrap();
        assert!(v["failure"].is_null());
        assert_eq!(v["native_share"], 0.0);
    }

    #[test]
    fn json_escapes_control_characters() {
        let mut s = String::new();
        json_str(&mut s, "a\u{1}b\\\t");
        assert_eq!(s, r#""a\u0001b\\\t""#);
    }

    #[test]
    fn summary_is_compact_and_complete() {
        let lines = sample().summary(1_000_000_000);
        assert_eq!(
            lines[0],
            "statistics: 10 calls, 6 native runs, 5 declined, 1 failed"
        );
        assert!(
            lines[1].contains("native 0.250 s of 1.000 s wall (25.0%)"),
            "{}",
            lines[1]
        );
        assert_eq!(lines[2], "  exits: system_call 1, privileged 2");
        assert_eq!(
            lines[3],
            "  declines: short_burst 1, not_user_mode 2, unknown 2"
        );
        assert!(lines[4].contains("42 demand fills"));
        assert_eq!(
            lines[5],
            "  executors: 4 runs on the executor, 2 on the stub executor (1 of compatibility-mode code, 3 switched modes natively; 1 started at a long-mode entry)"
        );
        assert!(
            lines[7].contains("hlt 2 (privileged), mov ds 1 (segment_load)"),
            "{}",
            lines[7]
        );
        assert!(lines[8].starts_with("  disabled after: executor died"));
        assert!(lines.len() <= 9);
        let empty = Stats::default().summary(0);
        assert_eq!(empty[2], "  exits: none");
        assert_eq!(empty.len(), 7);
    }
}
