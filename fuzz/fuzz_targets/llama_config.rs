#![no_main]
//! `cargo fuzz run llama_config`: see fuzz/README.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| flexi_burn_fuzz::harness::llama_config(data));
