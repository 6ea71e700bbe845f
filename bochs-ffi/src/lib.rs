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

    #[test]
    fn version_symbol_is_a_c_string() {
        assert_eq!(VERSION_SYMBOL.last(), Some(&0));
        assert_eq!(
            &VERSION_SYMBOL[..VERSION_SYMBOL.len() - 1],
            b"plex86_accel_abi_version"
        );
    }
}
