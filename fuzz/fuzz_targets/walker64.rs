//! Fuzz target: the 4-level page-table walker against a reference walker (see
//! fuzz_checks::walker64).
#![no_main]

// Whether the input became a case (the outcome) matters to the tests only.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = fuzz_checks::walker64::check(data);
});
