//! Fuzz target: the exit-instruction decoders (classify_gp, instruction_at) (see fuzz_checks::decoder).
#![no_main]

// Whether the input became a case (the outcome) matters to the tests only.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = fuzz_checks::decoder::check(data);
});
