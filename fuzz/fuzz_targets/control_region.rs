//! Fuzz target: the library's validation of the executor's exit record (see fuzz_checks::control_region).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::control_region::check(data));
