//! Backend selection and device probing: a backend that is not compiled in, or a CUDA driver
//! that cannot be used, is a typed error naming what to build with or install.
#![cfg(feature = "runtime")]

use flexi_burn::backend::{BackendKind, cuda_driver_from, probe};

#[test]
fn cpu_backend_is_always_ready() {
    let info = probe(BackendKind::Flex).unwrap();
    assert_eq!(info.kind, BackendKind::Flex);
    assert!(info.name.starts_with("CPU"), "{}", info.name);
}

#[test]
fn backend_not_compiled_in_names_the_feature() {
    for kind in BackendKind::ALL.into_iter().filter(|k| !k.is_compiled()) {
        let e = probe(kind).unwrap_err().to_string();
        assert!(e.contains(&format!("--features {}", kind.feature())), "{e}");
    }
}

#[test]
fn missing_cuda_driver_names_the_driver_to_install() {
    let e = cuda_driver_from(&["/nonexistent/libcuda.so.1"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("install the NVIDIA driver"), "{e}");
    assert!(e.contains("/nonexistent/libcuda.so.1"), "{e}");
}

#[cfg(target_os = "linux")]
#[test]
fn a_library_that_is_not_the_cuda_driver_is_refused() {
    // libc loads, but has no CUDA driver API.
    let e = cuda_driver_from(&["libc.so.6"]).unwrap_err().to_string();
    assert!(e.contains("symbol cuInit missing"), "{e}");
}
