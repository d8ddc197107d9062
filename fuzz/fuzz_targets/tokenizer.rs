//! cargo-fuzz target `tokenizer` (body shared with tests/fuzz.rs).
#![no_main]

include!("../../tests/fuzz/targets.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    run_target("tokenizer", data);
});
