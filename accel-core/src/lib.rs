//! plex86-accel: the library that a Bochs built with `--enable-plex86-accel` loads.
//!
//! At this stage it exports only the ABI version query that Bochs checks at load time; the
//! entry policy, state translation and exit handling arrive with the Bochs integration.

use bochs_ffi::ABI_VERSION;

/// Returns the ABI version this library implements (`PLEX86_ACCEL_ABI_VERSION` of the header).
#[no_mangle]
pub extern "C" fn plex86_accel_abi_version() -> u32 {
    ABI_VERSION
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_version_is_the_headers() {
        // The export must have the signature the header declares: this coercion fails to build
        // when they drift apart.
        let _declared: unsafe extern "C" fn() -> u32 = bochs_ffi::raw::plex86_accel_abi_version;
        assert_eq!(plex86_accel_abi_version(), bochs_ffi::ABI_VERSION);
    }
}
