//! The XSAVE image's layout, named once (Intel SDM vol. 1, 13.4 and 10.5.1; the kernel's
//! `struct _fpx_sw_bytes` for the software-reserved bytes of a signal frame). Both processes
//! and every test use these names; the image is the standard (non-compacted) format, and the
//! offsets of the extended components come from CPUID leaf 0xD at run time.

use crate::XSAVE_AREA_SIZE;

/// Offsets in the legacy (FXSAVE) region.
pub mod fx {
    /// x87 control word (u16).
    pub const FCW: usize = 0;
    /// x87 status word (u16).
    pub const FSW: usize = 2;
    /// Abridged tag word (u8).
    pub const FTW: usize = 4;
    /// Last x87 opcode (u16).
    pub const FOP: usize = 6;
    /// Last x87 instruction pointer (u32 offset + u16 selector at FCS).
    pub const FIP: usize = 8;
    /// Last x87 instruction's code selector.
    pub const FCS: usize = 12;
    /// Last x87 data pointer (u32 offset + u16 selector at FDS).
    pub const FDP: usize = 16;
    /// Last x87 data selector.
    pub const FDS: usize = 20;
    /// MXCSR (u32).
    pub const MXCSR: usize = 24;
    /// MXCSR_MASK (u32).
    pub const MXCSR_MASK: usize = 28;
    /// ST0..ST7 / MM0..MM7, 16 bytes each.
    pub const ST: usize = 32;
    /// XMM0..XMM7 in 32-bit code (16 registers of 16 bytes in the image).
    pub const XMM: usize = 160;
    /// End of the XMM registers.
    pub const XMM_END: usize = 416;
    /// Size of the legacy region.
    pub const SIZE: usize = 512;
}

/// The software-reserved bytes 464..512 of the legacy region, which the kernel fills in a
/// signal frame (`struct _fpx_sw_bytes`).
pub mod sw {
    /// Start of the software-reserved bytes.
    pub const START: usize = 464;
    /// `magic1` (u32): [`super::FP_XSTATE_MAGIC1`] when the frame carries XSAVE state.
    pub const MAGIC1: usize = 464;
    /// `extended_size` (u32): the frame's XSAVE area plus the trailing `magic2`.
    pub const EXTENDED_SIZE: usize = 468;
    /// `xfeatures` (u64): the components the frame's format has room for.
    pub const XFEATURES: usize = 472;
    /// `xstate_size` (u32): the bytes of XSAVE state in the frame.
    pub const XSTATE_SIZE: usize = 480;
    /// End of the software-reserved bytes.
    pub const END: usize = 512;
}

/// `_fpx_sw_bytes.magic1`: the signal frame carries an XSAVE area.
pub const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
/// Written by the kernel right after the XSAVE area of a signal frame.
pub const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;

/// The XSAVE header, right after the legacy region.
pub mod header {
    /// XSTATE_BV (u64): which components hold non-initial state.
    pub const XSTATE_BV: usize = 512;
    /// XCOMP_BV (u64): 0 in the standard format.
    pub const XCOMP_BV: usize = 520;
    /// Start of the reserved header bytes, which must be zero.
    pub const RESERVED: usize = 528;
    /// End of the header; the first extended component starts here (AVX in the standard format).
    pub const END: usize = 576;
}

/// XSAVE component bits (XCR0 / XSTATE_BV).
pub mod xfeature {
    /// x87 state.
    pub const X87: u64 = 1 << 0;
    /// SSE state (XMM registers, MXCSR).
    pub const SSE: u64 = 1 << 1;
    /// AVX: upper halves of the YMM registers.
    pub const AVX: u64 = 1 << 2;
    /// AVX-512 opmask registers k0..k7.
    pub const OPMASK: u64 = 1 << 5;
    /// AVX-512: upper 256 bits of ZMM0..ZMM15.
    pub const ZMM_HI256: u64 = 1 << 6;
    /// AVX-512: ZMM16..ZMM31 (unreachable in 32-bit code; always zero here).
    pub const HI16_ZMM: u64 = 1 << 7;
    /// The three AVX-512 components, enabled together or not at all.
    pub const AVX512: u64 = OPMASK | ZMM_HI256 | HI16_ZMM;
    /// Every component the executor and the library transfer.
    pub const TRANSFERRED: u64 = X87 | SSE | AVX | AVX512;
}

/// FCW after FNINIT, and in the XSAVE initial state.
pub const FCW_INIT: u16 = 0x037f;
/// MXCSR at reset, and in the XSAVE initial state.
pub const MXCSR_INIT: u32 = 0x1f80;

/// An XSAVE image in the standard (non-compacted) format, as produced by `XSAVE` with the
/// offsets of CPUID leaf 0xD. Only the first `xsave_size` bytes (reported by the executor at
/// start) are meaningful.
#[repr(C, align(64))]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct XsaveImage(pub [u8; XSAVE_AREA_SIZE]);

impl XsaveImage {
    /// An all-zero image: every component in its initial state except FCW (0x037F) and MXCSR
    /// (0x1F80), which are set to their reset values with XSTATE_BV = x87|SSE.
    pub const fn initial() -> Self {
        let mut b = [0u8; XSAVE_AREA_SIZE];
        let fcw = FCW_INIT.to_le_bytes();
        b[fx::FCW] = fcw[0];
        b[fx::FCW + 1] = fcw[1];
        let mxcsr = MXCSR_INIT.to_le_bytes();
        b[fx::MXCSR] = mxcsr[0];
        b[fx::MXCSR + 1] = mxcsr[1];
        b[header::XSTATE_BV] = (xfeature::X87 | xfeature::SSE) as u8;
        XsaveImage(b)
    }
    /// Reads a little-endian u64 at `off`.
    pub fn u64_at(&self, off: usize) -> u64 {
        let mut v = [0u8; 8];
        v.copy_from_slice(&self.0[off..off + 8]);
        u64::from_le_bytes(v)
    }
    /// Writes a little-endian u64 at `off`.
    pub fn set_u64_at(&mut self, off: usize, v: u64) {
        self.0[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }
    /// Reads a little-endian u32 at `off`.
    pub fn u32_at(&self, off: usize) -> u32 {
        let mut v = [0u8; 4];
        v.copy_from_slice(&self.0[off..off + 4]);
        u32::from_le_bytes(v)
    }
    /// The XSTATE_BV field of the XSAVE header.
    pub fn xstate_bv(&self) -> u64 {
        self.u64_at(header::XSTATE_BV)
    }
    /// The XCOMP_BV field of the XSAVE header; 0 in the standard format.
    pub fn xcomp_bv(&self) -> u64 {
        self.u64_at(header::XCOMP_BV)
    }
    /// MXCSR.
    pub fn mxcsr(&self) -> u32 {
        self.u32_at(fx::MXCSR)
    }
}

impl Default for XsaveImage {
    fn default() -> Self {
        Self::initial()
    }
}

impl core::fmt::Debug for XsaveImage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("XsaveImage")
            .field("xstate_bv", &format_args!("{:#x}", self.xstate_bv()))
            .field("mxcsr", &format_args!("{:#x}", self.mxcsr()))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names against the SDM's (vol. 1, tables 10-2 and 13-1) and the kernel's
    /// `struct _fpx_sw_bytes`, so that a renamed or mistyped constant cannot go unnoticed.
    #[test]
    fn xsave_offsets_are_the_sdm_ones() {
        assert_eq!((fx::FCW, fx::FSW, fx::FTW, fx::FOP), (0, 2, 4, 6));
        assert_eq!((fx::FIP, fx::FCS, fx::FDP, fx::FDS), (8, 12, 16, 20));
        assert_eq!(
            (fx::MXCSR, fx::MXCSR_MASK, fx::ST, fx::XMM),
            (24, 28, 32, 160)
        );
        assert_eq!(fx::XMM_END, fx::XMM + 16 * 16);
        assert_eq!(fx::SIZE, 512);
        assert_eq!(
            (
                sw::MAGIC1,
                sw::EXTENDED_SIZE,
                sw::XFEATURES,
                sw::XSTATE_SIZE
            ),
            (464, 468, 472, 480)
        );
        assert_eq!((sw::START, sw::END), (464, fx::SIZE));
        assert_eq!(
            (header::XSTATE_BV, header::XCOMP_BV, header::RESERVED),
            (512, 520, 528)
        );
        assert_eq!(header::END, 576);
        assert_eq!(&FP_XSTATE_MAGIC1.to_le_bytes(), b"SXPF");
        assert_eq!(&FP_XSTATE_MAGIC2.to_le_bytes(), b"EXPF");
        assert_eq!(xfeature::TRANSFERRED, 0xe7);
    }

    #[test]
    fn the_initial_image_is_the_reset_state() {
        let x = XsaveImage::initial();
        assert_eq!(u16::from_le_bytes([x.0[0], x.0[1]]), 0x037f);
        assert_eq!(x.mxcsr(), 0x1f80);
        assert_eq!(x.xstate_bv(), 3);
        assert_eq!(x.xcomp_bv(), 0);
        assert!(x
            .0
            .iter()
            .enumerate()
            .all(|(i, &b)| b == 0 || [0, 1, 24, 25, 512].contains(&i)));
    }
}
