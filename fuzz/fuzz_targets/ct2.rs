#![no_main]
//! `cargo fuzz run ct2`: see fuzz/README.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| flexi_burn_fuzz::harness::ct2(data));
