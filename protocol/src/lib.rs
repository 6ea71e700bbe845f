//! The shared control region: plain `#[repr(C)]` structures that cross the process boundary
//! between the library and the executor.
//!
//! The region is one memfd of [`REGION_SIZE`] bytes with two parts, grouped by writer:
//!
//! * [`LibArea`] at offset 0, written only by the library. The executor maps it read-only.
//! * [`ExecArea`] at [`EXEC_AREA_OFFSET`], written only by the executor. The library treats
//!   everything in it as untrusted: it copies the area out and validates every field.
//!
//! Each side publishes with a sequence number that doubles as a futex word
//! ([`LibArea::req_seq`], [`ExecArea::resp_seq`]); see `docs/ARCHITECTURE.md` ("Host driver").
//! Offsets are pinned by tests: the two sides are separate binaries that must agree byte for
//! byte (Bochs's own C layout is converted by `accel-core`'s `state` module, not mirrored here).
//!
//! This crate is linked by both sides of the process boundary and by nothing else of theirs:
//! plain data, constants, pure conversions (the exit codec, the wire enums) and the typed views
//! each side reads and writes the mapped region through ([`view`], the crate's only `unsafe`).
//! No system calls: each side maps the region itself.

#![warn(missing_docs, missing_debug_implementations)]

pub mod exit;
pub mod exit_code;
pub mod region;
pub mod selectors;
pub mod state;
pub mod stub;
pub mod view;
mod wire;
pub mod xsave;

pub use exit::{
    access, escape, CodeLog, CodeLogFull, EscapeKind, ExitReason, ExitRecord, RawExit, RawReason,
    SyscallInstruction, EXIT_ECX_CLOBBERED, EXIT_EIP_LOST, EXIT_HAS_ERROR_CODE,
};
pub use region::{CommandKind, ExecArea, LibArea, RamRange, RawCommand, Request, Status};
pub use selectors::{
    guest_selector, native_selector, HOST_CS32, HOST_CS64, HOST_SS64, LDT_MIRROR_BASE,
    LDT_MIRROR_ENTRIES,
};
pub use state::{gpr, seg, GuestState, Segment, EFER_LMA, SEG_NOT_INSTALLED};
pub use wire::UnknownValue;
pub use xsave::XsaveImage;

#[cfg(test)]
mod tests;

/// `"PLX86CTL"`: first field of [`LibArea`].
pub const MAGIC: u64 = u64::from_le_bytes(*b"PLX86CTL");
/// Protocol version; bumped on any layout change or new exit reason (6: `GuestState` and the
/// exit's linear address 64 bits wide; 7: the stub's budget timer words).
pub const VERSION: u32 = 7;
/// Maximum number of plain-RAM ranges in the RAM map.
pub const MAX_RAM_RANGES: usize = 64;
/// Maximum number of MMU commands carried by one request.
pub const MAX_COMMANDS: usize = 256;
/// Maximum number of entries in the "code pages written" list of one exit.
pub const MAX_CODE_PAGES: usize = 256;
/// Size of the XSAVE image carried in [`GuestState`].
pub const XSAVE_AREA_SIZE: usize = 4096;
/// Size of the executor's failure message buffer.
pub const MSG_LEN: usize = 256;
/// Polls (of the `spin` budget) that only PAUSE; later polls yield the CPU (`sched_yield`).
pub const SPIN_PAUSES: u32 = 64;
/// File descriptor number of the guest-RAM memfd in the executor.
pub const RAM_FD: i32 = 3;
/// File descriptor number of the control-region memfd in the executor.
pub const CONTROL_FD: i32 = 4;

/// Offset of [`ExecArea`] in the region (page aligned so that the two parts can be mapped with
/// different protections).
pub const EXEC_AREA_OFFSET: usize = round_up_page(core::mem::size_of::<LibArea>());
/// Total size of the control region.
pub const REGION_SIZE: usize = EXEC_AREA_OFFSET + round_up_page(core::mem::size_of::<ExecArea>());

const fn round_up_page(n: usize) -> usize {
    (n + 4095) & !4095
}
