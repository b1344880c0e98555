//! The workflows behind `cargo xtask ...`, as a library: the binary parses the command line
//! and calls these; tests call them in-process.

pub mod alloc;
pub mod bench;
pub mod bench_models;
pub mod data;
pub mod demo;
pub mod llama;
pub mod models_cmd;
pub mod pipeline;
pub mod plan;
pub mod portability;
pub mod report;
pub mod speech_study;
pub mod study;
pub mod whisper_cmd;
