//! The C ABI between Bochs and the plex86 accelerator.
//!
//! `include/plex86_accel.h` is the ABI's one source of truth. The Rust types in [`raw`] are
//! generated from it by bindgen (`ci/check-bindings` fails when the committed copy is stale).

/// The header, for tools that need its text (e.g. to install it beside Bochs's sources).
pub const HEADER: &str = include_str!("../include/plex86_accel.h");

/// Types, constants and function declarations generated from the header.
#[allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    missing_docs
)]
#[allow(clippy::all)]
pub mod raw {
    include!("bindings.rs");
}

/// The ABI version this crate was generated for.
pub const ABI_VERSION: u32 = raw::PLEX86_ACCEL_ABI_VERSION;

/// The NUL-terminated name of the version symbol, as Bochs passes it to `dlsym`.
pub const VERSION_SYMBOL: &[u8] = raw::PLEX86_ACCEL_VERSION_SYMBOL;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_bindings_agree_on_the_version() {
        let define = HEADER
            .lines()
            .find_map(|l| l.strip_prefix("#define PLEX86_ACCEL_ABI_VERSION "))
            .expect("the header defines PLEX86_ACCEL_ABI_VERSION");
        assert_eq!(
            define.trim().trim_end_matches('u').parse::<u32>().unwrap(),
            ABI_VERSION
        );
    }

    /// The state layout (long mode since ABI 6), field by field: Bochs (C++) and the library (Rust) must agree,
    /// and a change here is an ABI change (bump PLEX86_ACCEL_ABI_VERSION).
    #[test]
    fn state_layout_is_pinned() {
        use raw::{
            plex86_accel_cpu_state as S, plex86_accel_fpu_state as F, plex86_accel_segment as G,
        };
        use std::mem::{align_of, offset_of, size_of};
        assert_eq!(ABI_VERSION, 10);
        let seg = [
            offset_of!(G, selector),
            offset_of!(G, attr),
            offset_of!(G, limit),
            offset_of!(G, valid),
            offset_of!(G, reserved),
            offset_of!(G, base),
        ];
        assert_eq!(seg, [0, 2, 4, 8, 12, 16]);
        assert_eq!((size_of::<G>(), align_of::<G>()), (24, 8));
        let fpu = [
            offset_of!(F, fcw),
            offset_of!(F, fsw),
            offset_of!(F, ftw),
            offset_of!(F, fop),
            offset_of!(F, fip),
            offset_of!(F, fdp),
            offset_of!(F, fcs),
            offset_of!(F, fds),
            offset_of!(F, mxcsr),
            offset_of!(F, st),
            offset_of!(F, zmm),
            offset_of!(F, opmask),
        ];
        assert_eq!(fpu, [0, 2, 4, 6, 8, 12, 16, 18, 20, 24, 152, 2200]);
        assert_eq!(size_of::<F>(), 2264);
        assert_eq!(size_of::<[[u8; 64]; 32]>(), 2048, "zmm0-31, 64 bytes each");
        let cpu = [
            offset_of!(S, gpr),
            offset_of!(S, rip),
            offset_of!(S, rflags),
            offset_of!(S, mode),
            offset_of!(S, reserved),
            offset_of!(S, seg),
            offset_of!(S, cr0),
            offset_of!(S, cr2),
            offset_of!(S, cr3),
            offset_of!(S, cr4),
            offset_of!(S, efer),
            offset_of!(S, xcr0),
            offset_of!(S, fpu),
        ];
        assert_eq!(
            cpu,
            [0, 128, 136, 144, 148, 152, 296, 304, 312, 320, 328, 336, 344]
        );
        assert_eq!((size_of::<S>(), align_of::<S>()), (2608, 8));
    }

    /// The exit record's layout (`contained` since ABI 9).
    #[test]
    fn exit_layout_is_pinned() {
        use raw::plex86_accel_exit as E;
        use std::mem::{align_of, offset_of, size_of};
        let exit = [
            offset_of!(E, status),
            offset_of!(E, reason),
            offset_of!(E, decline_reason),
            offset_of!(E, seg_reload),
            offset_of!(E, ticks),
            offset_of!(E, retry_after_ticks),
            offset_of!(E, lost_native_progress),
            offset_of!(E, n_code_pages),
            offset_of!(E, contained),
            offset_of!(E, reserved),
            offset_of!(E, code_pages),
            offset_of!(E, message),
        ];
        assert_eq!(exit, [0, 4, 8, 12, 16, 24, 32, 36, 40, 44, 48, 56]);
        assert_eq!((size_of::<E>(), align_of::<E>()), (312, 8));
    }

    #[test]
    fn modes_are_bochss_cpu_mode() {
        // BX_MODE_IA32_REAL .. BX_MODE_LONG_64 (cpu/cpu.h): Bochs stores cpu_mode as is.
        assert_eq!(raw::plex86_accel_mode_PLEX86_ACCEL_MODE_REAL, 0);
        assert_eq!(raw::plex86_accel_mode_PLEX86_ACCEL_MODE_V8086, 1);
        assert_eq!(raw::plex86_accel_mode_PLEX86_ACCEL_MODE_PROTECTED, 2);
        assert_eq!(raw::plex86_accel_mode_PLEX86_ACCEL_MODE_LONG_COMPAT, 3);
        assert_eq!(raw::plex86_accel_mode_PLEX86_ACCEL_MODE_LONG_64, 4);
    }

    #[test]
    fn version_symbol_is_a_c_string() {
        assert_eq!(VERSION_SYMBOL.last(), Some(&0));
        assert_eq!(
            &VERSION_SYMBOL[..VERSION_SYMBOL.len() - 1],
            b"plex86_accel_abi_version"
        );
    }
}
