//! Fuzz target: the stub executor's reading of the signals its guest-writable pages publish (see fuzz_checks::stub_region).
#![no_main]

// Whether the input became a case (the outcome) matters to the tests only.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = fuzz_checks::stub_region::check(data);
});
