//! cargo-fuzz target `png` (body shared with tests/fuzz.rs).
#![no_main]

include!("../../tests/fuzz/targets.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    run_target("png", data);
});
