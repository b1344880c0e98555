#![no_main]
//! `cargo fuzz run whisper_config`: see fuzz/README.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| flexi_burn_fuzz::harness::whisper_config(data));
