#![no_main]
//! `cargo fuzz run data_mawps_csv`: see fuzz/README.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| flexi_burn_fuzz::harness::data_mawps_csv(data));
