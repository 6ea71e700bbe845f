//! Control-region cases: the header that builds an entry state, a run context and an honest
//! exit record ([`Setup`]), and the response an input makes of them ([`RegionCase`]).

use crate::{encode_case, parse_case, read_patch_bytes, write_patch_bytes, Patch, Reader, Writer};
use host_driver::fuzzing::{
    exec_area_bytes, exec_area_from_bytes, native_selector, RunContext, EXEC_AREA_SIZE,
};
use host_driver::{validate_entry, GuestState, Segment, XsaveImage, XsaveInfo};
use plex86_protocol::xsave::{fx, header, sw, xfeature};
use plex86_protocol::{gpr, seg, ExecArea, RawReason, Status, EFER_LMA, LDT_MIRROR_ENTRIES};
use test_support::guest_state::layouts;

/// Bytes of the header (entry state, run context, honest exit) at the start of an input.
pub const HEADER_LEN: usize = 192;

/// Host XSAVE layouts a case can pick.
const LAYOUTS: [XsaveInfo; 3] = [layouts::AMD, layouts::INTEL, layouts::AVX_ONLY];

/// EFLAGS bits an entry state may have besides IF and bit 1: OSZAPC, DF, AC, ID.
const ENTRY_FLAGS: u64 = 0x0cd5 | (1 << 18) | (1 << 21);
/// EFLAGS bits native code may change: the entry flags and TF, NT.
const EXIT_FLAGS: u64 = ENTRY_FLAGS | (1 << 8) | (1 << 14);

/// Host selectors that native code can load (the honest executor then reports them raw).
const HOST_DATA_SELECTORS: [u16; 4] = [0x23, 0x2b, 0x7b, 0];

/// The parts of a case that the header describes.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // (ExecArea has no Debug)
pub struct Setup {
    /// The state the run was entered with.
    pub entry: GuestState,
    /// What the library knows when the response arrives.
    pub ctx: RunContext,
    /// An exit record an honest executor could write for this entry.
    pub honest: ExecArea,
}

/// The exit reasons of the wire protocol, in numeric order (the protocol's own list). The
/// honest record's reason is drawn from these, so a new reason is drawn without a change here.
pub fn wire_reasons() -> &'static [RawReason] {
    RawReason::ALL
}

fn segment(i: usize, r: &mut Reader<'_>) -> Segment {
    let sel = r.u16();
    let base = u64::from(r.u32());
    let limit = r.u32() & 0xfffff;
    let kind = r.u8();
    let bits = |b: u8, v: u16| if kind & (1 << b) != 0 { v } else { 0 };
    let common = 0x10 | (3 << 5) | 0x80 | bits(1, 1 << 14) | bits(2, 1 << 15) | bits(3, 1 << 12);
    // GDT indices the executor can mirror (others are refused at entry).
    let index_or = |dflt: u16| match (sel >> 3) % LDT_MIRROR_ENTRIES {
        0 => dflt,
        i => i << 3,
    };
    match i {
        seg::CS => Segment {
            selector: index_or(0x70) | 3,
            attr: 0xa | bits(0, 1) | common,
            limit,
            base,
            flags: 0,
            reserved: 0,
        },
        seg::SS => Segment {
            selector: index_or(0x78) | 3,
            attr: 0x2 | bits(0, 1) | bits(4, 4) | common,
            limit,
            base,
            flags: 0,
            reserved: 0,
        },
        _ if kind & 0x20 != 0 => Segment::null(sel & 3),
        _ => {
            // Data of any type, or readable non-conforming code.
            let ty = if kind & 0x40 != 0 {
                0xa | bits(0, 1)
            } else {
                u16::from(kind >> 4) & 7
            };
            Segment {
                selector: index_or(0x20) | (sel & 3),
                attr: ty | common,
                limit,
                base,
                flags: 0,
                reserved: 0,
            }
        }
    }
}

fn xsave_image(xs: &XsaveInfo, xcr0: u64, r: &mut Reader<'_>) -> XsaveImage {
    let bv = u64::from(r.u8()) & xcr0;
    let pattern = r.u32();
    let mxcsr = r.u16();
    let mut img = XsaveImage::initial();
    for (i, b) in img.0[..xs.size as usize].iter_mut().enumerate() {
        *b = (pattern.rotate_left(i as u32 % 32) >> (i % 4)) as u8;
    }
    img.0[header::XSTATE_BV..header::END].fill(0);
    img.set_u64_at(header::XSTATE_BV, bv);
    img.0[fx::MXCSR..fx::MXCSR + 4].copy_from_slice(&u32::from(mxcsr).to_le_bytes());
    img
}

impl Setup {
    /// Builds the entry state, run context and honest record from a header; `None` when the
    /// entry state is not one `validate_entry` accepts (then there is nothing to run).
    pub fn from_header(header: &[u8]) -> Option<Setup> {
        let mut r = Reader::new(header);
        let xs = LAYOUTS[usize::from(r.u8()) % LAYOUTS.len()];
        let ram_size = (u64::from(r.u16()) + 1) * 4096;
        let ctx = RunContext {
            seq: r.u32(),
            budget_ns: r.u64() >> (r.u8() % 64),
            ram_size,
            xsave: xs,
        };
        // A 32-bit state (today's executor refuses long mode; stub_region makes 64-bit ones):
        // EAX..EDI, EIP and EFLAGS zero-extended, R8..R15 zero.
        let mut entry = GuestState::default();
        for g in entry.gprs[..gpr::LEGACY_COUNT].iter_mut() {
            *g = u64::from(r.u32());
        }
        entry.rip = u64::from(r.u32());
        entry.rflags = 0x202 | (u64::from(r.u32()) & ENTRY_FLAGS);
        for i in 0..6 {
            entry.segs[i] = segment(i, &mut r);
            // Registers sharing a GDT index share its descriptor.
            let s = entry.segs[i];
            if let Some(t) = entry.segs[..i]
                .iter()
                .find(|t| !s.is_null() && !t.is_null() && t.selector >> 3 == s.selector >> 3)
                .copied()
            {
                entry.segs[i] = Segment {
                    selector: s.selector,
                    ..t
                };
            }
        }
        entry.cr0 = u64::from(r.u32() | 1);
        entry.cr2 = u64::from(r.u32());
        entry.cr3 = u64::from(r.u32());
        entry.cr4 = u64::from(r.u32());
        entry.efer = r.u64() & !EFER_LMA;
        entry.xcr0 = [1, 3, 7, xfeature::TRANSFERRED][usize::from(r.u8() % 4)] & xs.features;
        entry.xsave = xsave_image(&xs, entry.xcr0, &mut r);
        validate_entry(&entry, xs).ok()?;

        let mut honest: ExecArea = exec_area_from_bytes(&[]);
        honest.resp_seq = ctx.seq;
        honest.status = Status::Exited as u32;
        let x = &mut honest.exit;
        let reasons = wire_reasons();
        let reason = reasons[usize::from(r.u8()) % reasons.len()];
        x.reason = reason as u32;
        let (vector, error_code, access) = (r.u32(), r.u32(), u32::from(r.u8()) % 3);
        x.linear = u64::from(r.u32());
        x.flags = u32::from(r.u8()) & 7;
        x.detail = r.u64();
        x.native_ns = r.u64() % ctx.budget_ns.saturating_add(1);
        x.demand_fills = r.u32();
        // Derived, not read: the byte layout of existing corpus inputs stays the same.
        x.fill_ns = x
            .native_ns
            .min(u64::from(x.demand_fills).saturating_mul(9_000));
        match reason {
            RawReason::PageFault => {
                x.error_code = (error_code & 0x1b) | 4;
                x.access = access;
            }
            RawReason::NeedsEmulation => x.access = access,
            RawReason::GeneralProtection => x.error_code = error_code,
            RawReason::SoftwareInterrupt => x.vector = vector & 0xff,
            RawReason::SystemCall | RawReason::Rdtsc => x.vector = vector % 2,
            RawReason::OtherException => {
                x.vector = vector % 32;
                x.error_code = error_code;
            }
            RawReason::GuestEscape => {
                x.vector = 1 + vector % 2;
                x.error_code = error_code;
            }
            _ => {}
        }
        let n_pages = usize::from(r.u8() % 9);
        let page_seed = u64::from(r.u32());
        x.n_code_pages = n_pages as u32;
        for (i, p) in x.code_pages[..n_pages].iter_mut().enumerate() {
            let page =
                page_seed.wrapping_mul(i as u64 + 1).wrapping_add(i as u64) % (ram_size >> 12);
            *p = page << 12;
        }
        let out = &mut honest.state;
        *out = entry;
        let gpr_xor = r.u32();
        for (i, g) in out.gprs[..gpr::LEGACY_COUNT].iter_mut().enumerate() {
            *g ^= u64::from(gpr_xor.rotate_left(i as u32 * 4));
        }
        out.rip = u64::from(r.u32());
        out.rflags = 0x202 | (u64::from(r.u32()) & EXIT_FLAGS);
        if reason == RawReason::SingleStep {
            out.rflags |= 1 << 8; // only an instruction run with TF set single-steps
        }
        for (i, s) in out.segs.iter_mut().enumerate() {
            let choice = usize::from(r.u8());
            let host = match i {
                seg::CS => (choice % 2 == 1).then_some(0x23),
                seg::SS => (choice % 2 == 1).then_some(0x2b),
                _ => (choice % 5 != 0).then(|| HOST_DATA_SELECTORS[choice % 5 - 1]),
            };
            s.selector = host.unwrap_or_else(|| native_selector(s.selector));
        }
        // The executor's XSAVE image: new register contents, XSTATE_BV within XCR0, the
        // software-available bytes cleared.
        let reg_xor = r.u8();
        for b in out.xsave.0[fx::ST..sw::START].iter_mut() {
            *b ^= reg_xor;
        }
        let bv = u64::from(r.u8()) & entry.xcr0;
        out.xsave.set_u64_at(header::XSTATE_BV, bv);
        out.xsave.0[sw::START..sw::END].fill(0);
        Some(Setup { entry, ctx, honest })
    }
}

/// The response part of a case: the exit area's bytes (zero-extended), or the honest record
/// with (offset, bytes) patches applied in order.
pub type Body = crate::Body<(u16, Vec<u8>)>;

impl Patch for (u16, Vec<u8>) {
    fn read(r: &mut Reader<'_>) -> Self {
        let off = r.u16();
        (off, read_patch_bytes(r))
    }
    fn write(&self, w: &mut Writer) {
        write_patch_bytes(w.u16(self.0), &self.1);
    }
}

/// A control-region case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionCase {
    /// See [`Setup::from_header`] (zero-extended to [`HEADER_LEN`]).
    pub header: Vec<u8>,
    /// The response.
    pub body: Body,
}

impl RegionCase {
    /// Decodes a case: a mode byte (odd: raw area), the header, the body (patches are
    /// `offset: u16, len - 1: u8 (low 4 bits), bytes`).
    pub fn parse(data: &[u8]) -> Self {
        let (header, body) = parse_case(data, HEADER_LEN);
        RegionCase { header, body }
    }
    /// Encodes the case as fuzz input.
    pub fn encode(&self) -> Vec<u8> {
        encode_case(&self.header, HEADER_LEN, &self.body)
    }
}

/// Applies patches to the bytes of an exit area (offsets wrap around the area).
pub fn apply_patches(area: &mut [u8], patches: &[(u16, Vec<u8>)]) {
    for (off, bytes) in patches {
        for (i, &b) in bytes.iter().enumerate() {
            let at = (usize::from(*off) + i) % area.len();
            area[at] = b;
        }
    }
}

impl RegionCase {
    /// The exit area this case's response makes for `setup`: the raw bytes (zero-extended or
    /// cut to the area's size) or the patched honest record; and whether that is byte for byte
    /// the honest record.
    pub fn response(&self, setup: &Setup) -> (ExecArea, bool) {
        let honest_bytes = exec_area_bytes(&setup.honest);
        let bytes = match &self.body {
            Body::Raw(b) => {
                let mut v = b.clone();
                v.resize(EXEC_AREA_SIZE, 0);
                v
            }
            Body::Patches(ps) => {
                let mut v = honest_bytes.clone();
                apply_patches(&mut v, ps);
                v
            }
        };
        let honest = bytes == honest_bytes;
        (exec_area_from_bytes(&bytes), honest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeds::Rng;

    #[test]
    fn cases_round_trip_through_their_encoding() {
        let case = RegionCase {
            header: vec![7; HEADER_LEN],
            body: Body::Patches(vec![(10, vec![1]), (EXEC_AREA_SIZE as u16, vec![2; 16])]),
        };
        assert_eq!(RegionCase::parse(&case.encode()), case);
        let raw = RegionCase {
            header: vec![9; HEADER_LEN],
            body: Body::Raw(vec![1, 2, 3]),
        };
        assert_eq!(RegionCase::parse(&raw.encode()), raw);
    }

    #[test]
    fn most_headers_give_runnable_entry_states() {
        let mut rng = Rng::new(7);
        let runnable = (0..200)
            .filter(|_| Setup::from_header(&rng.bytes(HEADER_LEN)).is_some())
            .count();
        assert!(
            runnable >= 150,
            "only {runnable} of 200 headers are runnable"
        );
    }

    #[test]
    fn the_wire_reasons_are_the_protocols() {
        let reasons = wire_reasons();
        for (i, &r) in reasons.iter().enumerate() {
            assert_eq!(RawReason::from_u32(r as u32), Some(r));
            // (so a reason byte b draws reason 1 + b % n, as the saved inputs were decoded)
            assert_eq!(r as usize, i + 1, "the reasons are 1, 2, ... in order");
        }
        assert!(reasons.contains(&RawReason::Cpuid), "{reasons:?}");
        assert_eq!(RawReason::from_u32(reasons.len() as u32 + 1), None);
    }

    #[test]
    fn honest_records_draw_every_wire_reason() {
        let mut rng = Rng::new(13);
        let mut drawn = vec![];
        for _ in 0..3000 {
            if let Some(s) = Setup::from_header(&rng.bytes(HEADER_LEN)) {
                drawn.push(s.honest.exit.reason);
            }
        }
        for &r in wire_reasons() {
            assert!(drawn.contains(&(r as u32)), "no honest record with {r:?}");
        }
    }
}
