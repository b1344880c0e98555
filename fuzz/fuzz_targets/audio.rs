#![no_main]
//! `cargo fuzz run audio`: see fuzz/README.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| flexi_burn_fuzz::harness::audio(data));
