//! Fuzz target: the exit-instruction decoders (classify_gp, instruction_at) (see fuzz_checks::decoder).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::decoder::check(data));
