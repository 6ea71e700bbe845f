//! The accelerator's configuration and the normalisation of Bochs's plain-RAM map.

use crate::cpuid;
use std::ops::Range;
use std::path::PathBuf;

/// The host driver's limit on plain-RAM ranges.
pub const MAX_RAM_RANGES: usize = plex86_protocol::MAX_RAM_RANGES;
/// The accelerator's configuration, validated from `plex86_accel_config`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Bytes of the RAM memfd that hold RAM.
    pub ram_size: u64,
    /// Plain-RAM ranges (normalised: page aligned, sorted, merged, inside `ram_size`).
    pub ram_map: Vec<Range<u64>>,
    /// Guest ticks (instructions) per second.
    pub ips: u64,
    /// The executor binary; `None`: next to the library.
    pub executor_path: Option<PathBuf>,
    /// Where to write the JSON statistics; `None`: nowhere.
    pub stats_path: Option<PathBuf>,
    /// Entry policy: user instructions to emulate after each kernel return.
    pub min_user_insns: u32,
    /// Allocate all of guest RAM at start ([`crate::prealloc`]).
    pub prealloc_ram: bool,
    /// Start even if native user code can use extensions the guest CPU model lacks
    /// (`allow_cpu_mismatch=1`).
    pub allow_cpu_mismatch: bool,
    /// The guest CPU model is `cpu: model=host`.
    pub cpu_model_host: bool,
    /// Where the stub executor's region S lies (`stub_base=`; checked by
    /// `plex86_protocol::stub::check_base`).
    pub stub_base: u64,
}

impl Config {
    /// How the guest CPU model was chosen, for [`cpuid::admit`].
    pub fn model_choice(&self) -> cpuid::ModelChoice {
        if self.cpu_model_host {
            cpuid::ModelChoice::Host
        } else if self.allow_cpu_mismatch {
            cpuid::ModelChoice::NamedMismatchAllowed
        } else {
            cpuid::ModelChoice::Named
        }
    }

    /// Checks the values that no normalisation can fix.
    pub fn validate(&self) -> Result<(), String> {
        host_driver::protocol::stub::check_base(self.stub_base)
            .map_err(|why| format!("stub_base={:#x}: {why}", self.stub_base))?;
        if self.ips == 0 {
            return Err("ips is 0 (Bochs's cpu: ips= must be positive)".into());
        }
        if self.ram_size == 0 || self.ram_size % 4096 != 0 {
            return Err(format!(
                "ram_size {:#x} is not a positive multiple of 4 KiB",
                self.ram_size
            ));
        }
        if self.ram_map.is_empty() {
            return Err(
                "no plain-RAM range (after rounding to whole pages inside ram_size)".into(),
            );
        }
        Ok(())
    }
}

/// Normalises plain-RAM ranges `[start, end)`: rounds each inward to whole pages, drops empty
/// ones, sorts and merges. Problems (reversed or out-of-RAM ranges, too many ranges) are
/// returned; the map is then the safe subset (less RAM mirrored, never more).
pub fn normalize_ram_map(ranges: &[(u64, u64)], ram_size: u64) -> (Vec<Range<u64>>, Vec<String>) {
    let mut problems = Vec::new();
    let mut v: Vec<Range<u64>> = Vec::new();
    for &(start, end) in ranges {
        if start > end {
            problems.push(format!("RAM range {start:#x}..{end:#x} is reversed"));
            continue;
        }
        if end > ram_size {
            problems.push(format!(
                "RAM range {start:#x}..{end:#x} ends beyond ram_size {ram_size:#x}"
            ));
        }
        let s = start.checked_add(0xfff).map_or(u64::MAX, |x| x & !0xfff);
        let e = end.min(ram_size) & !0xfff;
        if s < e {
            v.push(s..e);
        }
    }
    v.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(v.len());
    for r in v {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    if merged.len() > MAX_RAM_RANGES {
        problems.push(format!(
            "{} RAM ranges; only the first {MAX_RAM_RANGES} are mirrored",
            merged.len()
        ));
        merged.truncate(MAX_RAM_RANGES);
    }
    (merged, problems)
}
