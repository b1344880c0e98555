//! Fuzz harnesses for flexi-burn's readers of untrusted files; see `harness`.
pub mod harness;
