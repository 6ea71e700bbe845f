//! Fuzz target: the library's validation of the executor's exit record (see fuzz_checks::control_region).
#![no_main]

// Whether the input became a case (the outcome) matters to the tests only.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = fuzz_checks::control_region::check(data);
});
