//! `cargo xtask portability` end to end: with `--features wgpu` (CI: Vulkan on lavapipe) every
//! check runs on flex and wgpu and agrees within its tolerance; a backend that is not compiled
//! in, or finds no device, stops with a message that names what to install.

use std::process::{Command, Output};

fn xtask(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args).env("RUST_BACKTRACE", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("xtask runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn cuda_not_compiled_in_names_the_feature() {
    if cfg!(feature = "cuda") {
        return;
    }
    let o = xtask(&["portability", "--backend", "cuda"], &[]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("--features cuda"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[cfg(feature = "wgpu")]
#[test]
fn no_vulkan_driver_is_a_message_not_a_panic() {
    // Point the Vulkan loader at no driver at all: wgpu then finds no adapter.
    let o = xtask(
        &["portability", "--backend", "wgpu", "--no-round-trip"],
        &[
            ("VK_ICD_FILENAMES", "/nonexistent/icd.json"),
            ("VK_DRIVER_FILES", "/nonexistent/icd.json"),
        ],
    );
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("no Vulkan adapter"), "{err}");
    assert!(err.contains("mesa-vulkan-drivers"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[cfg(feature = "wgpu")]
#[test]
fn every_check_agrees_on_flex_and_wgpu() {
    use xtask::portability::{F32_TOL, Row};

    let json = std::env::temp_dir().join(format!("portability-{}.json", std::process::id()));
    let o = xtask(
        &[
            "portability",
            "--backend",
            "wgpu",
            "--json",
            json.to_str().unwrap(),
        ],
        &[("XDG_RUNTIME_DIR", "/tmp")],
    );
    let (out, err) = text(&o);
    eprintln!("{out}");
    assert!(o.status.success(), "{out}\n{err}");
    let rows: Vec<Row> = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    let row = |backend: &str, precision: &str, check: &str| {
        rows.iter()
            .find(|r| r.backend == backend && r.precision == precision && r.check == check)
            .unwrap_or_else(|| panic!("no row {backend} {precision} {check}: {out}"))
    };
    for check in ["flexi_linear", "llama", "whisper"] {
        assert_eq!(row("flex", "f32", check).status, "reference");
        let r = row("wgpu", "f32", check);
        assert_eq!(r.status, "pass", "{r:?}");
        assert_eq!(r.note, "computed in F32");
        // Every output within its tolerance, and no tolerance looser than 10 x 1e-4 x scale
        // (scale <= 10 here): f32 results agree to rounding.
        assert!(r.outputs.len() >= 3, "{r:?}");
        for (name, diff, tol) in &r.outputs {
            assert!(diff <= tol, "{check} {name}: {diff} > {tol}");
            assert!(
                *tol <= 10.0 * F32_TOL * 10.0,
                "{check} {name}: tolerance {tol}"
            );
        }
    }
    // The round trip: identical predictions and metrics both ways, adapters within drift.
    let r = row("wgpu", "f32", "round_trip");
    assert_eq!(r.status, "pass", "{r:?}");
    assert!(
        r.note.matches("predictions identical").count() == 2,
        "{r:?}"
    );
    // Mixed precision (frozen weights in a half type, the rest f32): every check passes on flex
    // in f16 and bf16, and on wgpu in f16 where the adapter has f16, with the frozen weights
    // really stored in that type.
    for check in ["flexi_linear", "llama", "whisper"] {
        for (precision, dtype) in [("f16 mixed", "F16"), ("bf16 mixed", "BF16")] {
            let r = row("flex", precision, check);
            assert_eq!(r.status, "pass", "{r:?}");
            assert_eq!(r.note, format!("computed in F32 (frozen {dtype})"), "{r:?}");
            // The half type really changed the numbers (not an f32 run under another name).
            assert!(r.max_abs_diff > 0.0, "{r:?}");
        }
    }
    let mixed: Vec<&Row> = rows
        .iter()
        .filter(|r| r.backend == "wgpu" && r.precision == "f16 mixed")
        .collect();
    assert!(!mixed.is_empty(), "{out}");
    for r in mixed {
        assert!(r.status == "pass" || r.status == "skipped", "{r:?}");
        if r.status == "pass" {
            assert_eq!(r.note, "computed in F32 (frozen F16)", "{r:?}");
        }
    }
    // Half precision: present (and passing, in f16 for real) where the adapter has f16.
    let half: Vec<&Row> = rows
        .iter()
        .filter(|r| r.backend == "wgpu" && r.precision == "f16")
        .collect();
    assert!(!half.is_empty(), "{out}");
    for r in half {
        assert!(r.status == "pass" || r.status == "skipped", "{r:?}");
        if r.status == "pass" {
            assert_eq!(r.note, "computed in F16", "{r:?}");
        }
    }
}
