//! Fuzz target: the guest page-table walker against a reference walker (see fuzz_checks::walker).
#![no_main]

// Whether the input became a case (the outcome) matters to the tests only.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = fuzz_checks::walker::check(data);
});
