//! The checks behind the fuzz targets in `fuzz/` (run by `ci/fuzz`), shared with their
//! regression tests (`tests/regressions.rs`, which runs every file of `fuzz/regressions/`).
//!
//! Each target turns arbitrary bytes into a case, runs the product code on it and checks
//! invariants, panicking on a violation (libFuzzer reports a panic as a crash). A check says
//! whether the input became a case ([`Outcome::Checked`]) or decoded to nothing the product
//! code can run ([`Outcome::Skipped`]), so that the tests can insist that saved inputs and
//! generated seeds still reach the product code:
//!
//! * [`walker`]: `guest_paging::walk` against a reference walker written here from the
//!   SDM, plus invariants that need no reference (A/D bits only set, only on success, ...).
//! * [`walker64`]: `guest_paging::walk64` (4-level paging) against its own reference walker
//!   written from the SDM, with the same invariants and canonical-address checks.
//! * [`decoder`]: `plex86_monitor::decode::classify_gp` against iced-x86, and
//!   `plex86_accel::decode::instruction_at` against a reference fetch through the reference
//!   walker.
//! * [`control_region`]: `host_driver::fuzzing::accept_exit` (the library's validation of the
//!   executor's exit record) on arbitrary and mutated records: each is rejected as
//!   `CorruptedSharedMemory` or yields a state that meets the documented invariants.
//! * [`stub_region`]: `host_driver::fuzzing::accept_stub_signal` (the stub executor's reading
//!   of a signal published in its guest-writable pages, the monitor's verdict and the exit
//!   checks) on honest pages, patched ones and raw bytes, for 32-bit and 64-bit entries.

#![warn(missing_docs)]

pub mod control_region;
pub mod decoder;
pub mod seeds;
pub mod stub_region;
pub mod walker;
pub mod walker64;

/// The fuzz targets, by name (the names of `fuzz/fuzz_targets/*.rs` and `fuzz/regressions/*`).
pub const TARGETS: [&str; 5] = [
    "walker",
    "walker64",
    "decoder",
    "control_region",
    "stub_region",
];

/// What a check did with an input (a violated invariant is a panic, not an outcome).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a skipped input checked nothing"]
pub enum Outcome {
    /// The input became a case, the product code ran on it and every invariant held.
    Checked,
    /// The input decodes to no case the product code can run (why); nothing was checked.
    Skipped(&'static str),
}

/// Runs the check of `target` on `data`; panics on an invariant violation.
pub fn check(target: &str, data: &[u8]) -> Outcome {
    match target {
        "walker" => walker::check(data),
        "walker64" => walker64::check(data),
        "decoder" => decoder::check(data),
        "control_region" => control_region::check(data),
        "stub_region" => stub_region::check(data),
        other => panic!("unknown fuzz target {other:?} (known: {TARGETS:?})"),
    }
}

/// Reads little-endian values from fuzz input; past the end every read is zero, so that any
/// input is a case.
#[derive(Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads from the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        for v in b.iter_mut() {
            *v = self.data.get(self.pos).copied().unwrap_or(0);
            self.pos += 1;
        }
        b
    }
    /// One byte.
    pub fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }
    /// A u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.bytes())
    }
    /// A u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }
    /// A u64.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }
    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.data.get(self.pos..).unwrap_or(&[])
    }
}

/// Builds inputs that [`Reader`] reads back (for the generated seed corpora).
#[derive(Debug, Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    /// One byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    /// A u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Raw bytes.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }
}

/// The response part of a case (control_region, stub_region): raw bytes, or patches `P` of
/// the honest response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body<P> {
    /// The response is these bytes (each target says where they go).
    Raw(Vec<u8>),
    /// The honest response with these patches applied in order.
    Patches(Vec<P>),
}

/// A patch of a [`Body`] as fuzz input holds it: its target's own fields, then
/// `len - 1: u8 (low 4 bits), bytes`.
pub(crate) trait Patch: Sized {
    fn read(r: &mut Reader<'_>) -> Self;
    fn write(&self, w: &mut Writer);
}

/// Decodes a case: a mode byte (odd: raw body), a header of `header_len` bytes
/// (zero-extended), then the body (patches until the input ends).
pub(crate) fn parse_case<P: Patch>(data: &[u8], header_len: usize) -> (Vec<u8>, Body<P>) {
    let mut r = Reader::new(data);
    let raw = r.u8() & 1 != 0;
    let header = (0..header_len).map(|_| r.u8()).collect();
    let body = if raw {
        Body::Raw(r.rest().to_vec())
    } else {
        let mut patches = vec![];
        while !r.rest().is_empty() {
            patches.push(P::read(&mut r));
        }
        Body::Patches(patches)
    };
    (header, body)
}

/// Encodes what [`parse_case`] decodes.
pub(crate) fn encode_case<P: Patch>(header: &[u8], header_len: usize, body: &Body<P>) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(matches!(body, Body::Raw(_)) as u8);
    let mut header = header.to_vec();
    header.resize(header_len, 0);
    w.bytes(&header);
    match body {
        Body::Raw(b) => {
            w.bytes(b);
        }
        Body::Patches(ps) => ps.iter().for_each(|p| p.write(&mut w)),
    }
    w.0
}

/// A patch's bytes: `len - 1: u8 (low 4 bits), bytes`.
pub(crate) fn read_patch_bytes(r: &mut Reader<'_>) -> Vec<u8> {
    let len = usize::from(r.u8() & 0xf) + 1;
    (0..len).map(|_| r.u8()).collect()
}

/// Writes what [`read_patch_bytes`] reads back.
pub(crate) fn write_patch_bytes(w: &mut Writer, bytes: &[u8]) {
    assert!((1..=16).contains(&bytes.len()), "a patch is 1..=16 bytes");
    w.u8(bytes.len() as u8 - 1).bytes(bytes);
}
