//! Fuzz target: the guest page-table walker against a reference walker (see fuzz_checks::walker).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::walker::check(data));
