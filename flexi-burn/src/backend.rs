//! The one place that maps a backend name (`--backend flex|wgpu|cuda`) to a Burn backend type.
//!
//! Workflows are written once as a [`BackendJob`], generic over `B: AutodiffBackend`
//! (inference uses `B::InnerBackend`), and [`run`] instantiates them for the backend that was
//! asked for, if its cargo feature is compiled in.

use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::AutodiffBackend;

use crate::error::{FlexiError, Result};

/// The CPU backend (burn-flex).
#[cfg(feature = "flex")]
pub type FlexBackend = burn::backend::Flex;
/// The CPU backend with autodiff.
#[cfg(feature = "flex")]
pub type FlexAutodiff = burn::backend::Autodiff<FlexBackend>;
/// The wgpu backend (f32).
#[cfg(feature = "wgpu")]
pub type WgpuBackend = burn::backend::Wgpu;
/// The wgpu backend with autodiff.
#[cfg(feature = "wgpu")]
pub type WgpuAutodiff = burn::backend::Autodiff<WgpuBackend>;
/// The CUDA backend (f32).
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda;
/// The CUDA backend with autodiff.
#[cfg(feature = "cuda")]
pub type CudaAutodiff = burn::backend::Autodiff<CudaBackend>;

/// A backend that can be asked for by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// CPU, burn-flex (cargo feature `flex`, on by default).
    Flex,
    /// GPU through wgpu (cargo feature `wgpu`).
    Wgpu,
    /// NVIDIA CUDA (cargo feature `cuda`).
    Cuda,
}

impl BackendKind {
    /// All backends, compiled in or not.
    pub const ALL: [BackendKind; 3] = [BackendKind::Flex, BackendKind::Wgpu, BackendKind::Cuda];

    /// The cargo feature that compiles this backend in.
    pub fn feature(&self) -> &'static str {
        match self {
            BackendKind::Flex => "flex",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
        }
    }

    /// Whether this binary was built with the backend.
    pub fn is_compiled(&self) -> bool {
        match self {
            BackendKind::Flex => cfg!(feature = "flex"),
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
            BackendKind::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// Backends compiled into this binary.
    pub fn compiled() -> Vec<BackendKind> {
        Self::ALL.into_iter().filter(|b| b.is_compiled()).collect()
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.feature())
    }
}

impl FromStr for BackendKind {
    type Err = FlexiError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "flex" | "cpu" => Ok(BackendKind::Flex),
            "wgpu" => Ok(BackendKind::Wgpu),
            "cuda" => Ok(BackendKind::Cuda),
            other => Err(FlexiError::Backend(format!(
                "unknown backend {other:?}: expected one of flex, wgpu, cuda"
            ))),
        }
    }
}

/// A workflow written once for every backend.
pub trait BackendJob {
    /// What the job returns.
    type Output;

    /// Runs the job on backend `B` and `device`.
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output;
}

/// Runs `job` on the backend `kind` (default device), or explains which cargo feature to build
/// with when that backend is not compiled in.
pub fn run<J: BackendJob>(kind: BackendKind, job: J) -> Result<J::Output> {
    match kind {
        #[cfg(feature = "flex")]
        BackendKind::Flex => Ok(job.run::<FlexAutodiff>(Default::default())),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => Ok(job.run::<WgpuAutodiff>(Default::default())),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => Ok(job.run::<CudaAutodiff>(Default::default())),
        #[allow(unreachable_patterns)]
        other => {
            drop(job);
            Err(FlexiError::Backend(format!(
                "backend {other} is not compiled into this binary: rebuild with `--features {}`{}",
                other.feature(),
                match other {
                    BackendKind::Wgpu =>
                        " (and a Vulkan driver, e.g. Debian's mesa-vulkan-drivers)",
                    BackendKind::Cuda => " (and an NVIDIA driver providing libcuda)",
                    BackendKind::Flex => "",
                }
            )))
        }
    }
}
