#![no_main]
//! `cargo fuzz run peft_adapter`: see fuzz/README.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| flexi_burn_fuzz::harness::peft_adapter(data));
