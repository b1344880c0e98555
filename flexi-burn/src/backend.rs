//! The one place that maps a backend name (`--backend flex|wgpu|cuda|ndarray`) to a Burn
//! backend type. `ndarray` is Burn's other CPU backend, compiled in only to be measured against
//! flex (`cargo xtask bench ... --backend ndarray`, BENCHMARKS.md); the models' fast CPU paths
//! (`models::host_*`) are written for flex and are skipped on it. (burn-candle, the third, is
//! deprecated in Burn 0.21 and cannot run the models' attention: BENCHMARKS.md.)
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
/// Burn's ndarray CPU backend (f32).
#[cfg(feature = "ndarray")]
pub type NdArrayBackend = burn::backend::NdArray;

/// A backend that can be asked for by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// CPU, burn-flex (cargo feature `flex`, on by default).
    Flex,
    /// GPU through wgpu (cargo feature `wgpu`).
    Wgpu,
    /// NVIDIA CUDA (cargo feature `cuda`).
    Cuda,
    /// CPU, burn-ndarray (cargo feature `ndarray`; for comparison with flex).
    NdArray,
}

impl BackendKind {
    /// All backends, compiled in or not.
    pub const ALL: [BackendKind; 4] = [
        BackendKind::Flex,
        BackendKind::Wgpu,
        BackendKind::Cuda,
        BackendKind::NdArray,
    ];

    /// The cargo feature that compiles this backend in.
    pub fn feature(&self) -> &'static str {
        match self {
            BackendKind::Flex => "flex",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
            BackendKind::NdArray => "ndarray",
        }
    }

    /// Whether this binary was built with the backend.
    pub fn is_compiled(&self) -> bool {
        match self {
            BackendKind::Flex => cfg!(feature = "flex"),
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
            BackendKind::Cuda => cfg!(feature = "cuda"),
            BackendKind::NdArray => cfg!(feature = "ndarray"),
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
            "ndarray" => Ok(BackendKind::NdArray),
            other => Err(FlexiError::Backend(format!(
                "unknown backend {other:?}: expected one of flex, wgpu, cuda, ndarray"
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
/// with when that backend is not compiled in, or what to install when it is compiled in but
/// finds no device (see [`probe`]).
pub fn run<J: BackendJob>(kind: BackendKind, job: J) -> Result<J::Output> {
    probe(kind)?;
    match kind {
        #[cfg(feature = "flex")]
        BackendKind::Flex => Ok(job.run::<FlexAutodiff>(Default::default())),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => Ok(job.run::<WgpuAutodiff>(Default::default())),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => Ok(job.run::<CudaAutodiff>(Default::default())),
        #[cfg(feature = "ndarray")]
        BackendKind::NdArray => {
            Ok(job.run::<burn::backend::Autodiff<NdArrayBackend>>(Default::default()))
        }
        #[allow(unreachable_patterns)]
        other => {
            drop(job);
            Err(not_compiled(other))
        }
    }
}

/// [`run`] with activation checkpointing: the autodiff backend uses Burn's
/// `BalancedCheckpointing`, which frees the outputs of memory-bound operations (elementwise,
/// activations, softmax, norms) after the forward pass and recomputes them during the backward
/// pass, keeping those of compute-bound ones (matmuls). Same gradients, less activation memory,
/// some recomputation.
pub fn run_checkpointed<J: BackendJob>(kind: BackendKind, job: J) -> Result<J::Output> {
    #[allow(unused_imports)]
    use burn::backend::{Autodiff, autodiff::checkpoint::strategy::BalancedCheckpointing};
    probe(kind)?;
    match kind {
        #[cfg(feature = "flex")]
        BackendKind::Flex => {
            Ok(job.run::<Autodiff<FlexBackend, BalancedCheckpointing>>(Default::default()))
        }
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => {
            Ok(job.run::<Autodiff<WgpuBackend, BalancedCheckpointing>>(Default::default()))
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            Ok(job.run::<Autodiff<CudaBackend, BalancedCheckpointing>>(Default::default()))
        }
        #[cfg(feature = "ndarray")]
        BackendKind::NdArray => {
            Ok(job.run::<Autodiff<NdArrayBackend, BalancedCheckpointing>>(Default::default()))
        }
        #[allow(unreachable_patterns)]
        other => {
            drop(job);
            Err(not_compiled(other))
        }
    }
}

fn not_compiled(kind: BackendKind) -> FlexiError {
    FlexiError::Backend(format!(
        "backend {kind} is not compiled into this binary: rebuild with `--features {}`{}",
        kind.feature(),
        match kind {
            BackendKind::Wgpu => " (and a Vulkan driver, e.g. Debian's mesa-vulkan-drivers)",
            BackendKind::Cuda => " (and an NVIDIA driver providing libcuda)",
            BackendKind::Flex | BackendKind::NdArray => "",
        }
    ))
}

/// What [`probe`] found: the device a backend will run on and the float types it supports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The backend.
    pub kind: BackendKind,
    /// Human-readable device description (adapter or GPU name).
    pub name: String,
    /// f16 tensors work on this device.
    pub f16: bool,
    /// bf16 tensors work on this device.
    pub bf16: bool,
}

/// Checks, before any tensor is made, that backend `kind` is compiled in and finds a device.
///
/// Burn's wgpu and cuda backends panic deep inside their runtimes when no adapter or driver
/// exists ("No possible adapter available", "Unable to dynamically load libcuda"); this asks the
/// same question first and answers with an error that names what to install.
pub fn probe(kind: BackendKind) -> Result<DeviceInfo> {
    if !kind.is_compiled() {
        return Err(not_compiled(kind));
    }
    match kind {
        BackendKind::Flex | BackendKind::NdArray => Ok(DeviceInfo {
            kind,
            name: format!(
                "CPU ({} threads)",
                std::thread::available_parallelism().map_or(1, |n| n.get())
            ),
            // The CPU backends compute in f32 (half-precision weights are cast on load).
            f16: false,
            bf16: false,
        }),
        BackendKind::Wgpu => probe_wgpu(),
        BackendKind::Cuda => {
            let gpu = cuda_driver()?;
            Ok(DeviceInfo {
                kind,
                name: gpu.name,
                f16: true,
                // bf16 arithmetic needs compute capability 8.0 (Ampere) or newer.
                bf16: gpu.compute_capability.0 >= 8,
            })
        }
    }
}

#[cfg(feature = "wgpu")]
fn probe_wgpu() -> Result<DeviceInfo> {
    use burn::backend::wgpu::graphics::{AutoGraphicsApi, GraphicsApi};
    // The graphics API and adapter preference Burn's default wgpu device uses.
    let api = AutoGraphicsApi::backend();
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: api.into(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapter = block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        force_fallback_adapter: false,
        compatible_surface: None,
    }))
    .map_err(|e| {
        FlexiError::Backend(format!(
            "wgpu found no {api:?} adapter ({e}): install a {api:?} driver (on a CPU-only Linux \
             machine: `apt-get install mesa-vulkan-drivers libvulkan1` for lavapipe), or use \
             `--backend flex`"
        ))
    })?;
    let info = adapter.get_info();
    Ok(DeviceInfo {
        kind: BackendKind::Wgpu,
        name: format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type),
        f16: adapter.features().contains(wgpu::Features::SHADER_F16),
        // Burn 0.21's wgpu backend compiles WGSL, which has no bf16.
        bf16: false,
    })
}

#[cfg(not(feature = "wgpu"))]
fn probe_wgpu() -> Result<DeviceInfo> {
    Err(not_compiled(BackendKind::Wgpu))
}

/// Polls a future to completion on this thread (wgpu's native futures are ready at once or
/// after the driver answers; no async runtime is needed).
#[cfg(feature = "wgpu")]
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

/// An NVIDIA GPU as the CUDA driver reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaGpu {
    /// Device 0's name.
    pub name: String,
    /// Devices visible.
    pub count: usize,
    /// Device 0's compute capability (major, minor).
    pub compute_capability: (i32, i32),
}

/// The shared library names of the CUDA driver on this platform.
pub const LIBCUDA: &[&str] = if cfg!(windows) {
    &["nvcuda.dll"]
} else if cfg!(target_os = "macos") {
    &["libcuda.dylib"]
} else {
    &["libcuda.so.1", "libcuda.so"]
};

/// Loads the CUDA driver (`libcuda`) the way Burn's cuda backend will, initialises it and
/// reads device 0. Works whether or not the `cuda` feature is compiled in, so a binary can say
/// whether CUDA would work here.
pub fn cuda_driver() -> Result<CudaGpu> {
    cuda_driver_from(LIBCUDA)
}

/// [`cuda_driver`] with explicit library names or paths (the first that loads is used).
pub fn cuda_driver_from(names: &[&str]) -> Result<CudaGpu> {
    type CuInit = unsafe extern "C" fn(u32) -> i32;
    type CuDeviceGetCount = unsafe extern "C" fn(*mut i32) -> i32;
    type CuDeviceGet = unsafe extern "C" fn(*mut i32, i32) -> i32;
    type CuDeviceGetName = unsafe extern "C" fn(*mut std::ffi::c_char, i32, i32) -> i32;
    type CuDeviceGetAttribute = unsafe extern "C" fn(*mut i32, i32, i32) -> i32;
    const CC_MAJOR: i32 = 75;
    const CC_MINOR: i32 = 76;

    let fail = |what: String| {
        FlexiError::Backend(format!(
            "CUDA is not usable here: {what}; install the NVIDIA driver (it provides {}) on a \
             machine with an NVIDIA GPU, or use `--backend flex` / `--backend wgpu`",
            names.join(" / ")
        ))
    };
    // SAFETY: loading the CUDA driver runs its initialisers, as cudarc does when Burn's cuda
    // backend starts; the symbols are called with the C signatures of the CUDA driver API.
    unsafe {
        let mut errors = Vec::new();
        let lib = names
            .iter()
            .find_map(|n| match libloading::Library::new(n) {
                Ok(l) => Some(l),
                Err(e) => {
                    errors.push(e.to_string());
                    None
                }
            })
            .ok_or_else(|| {
                fail(format!(
                    "the driver library could not be loaded ({})",
                    errors.join("; ")
                ))
            })?;
        let sym = |name: &[u8]| String::from_utf8_lossy(&name[..name.len() - 1]).into_owned();
        macro_rules! get {
            ($t:ty, $name:literal) => {
                lib.get::<$t>($name).map_err(|e| {
                    fail(format!("symbol {} missing from libcuda ({e})", sym($name)))
                })?
            };
        }
        let init = get!(CuInit, b"cuInit\0");
        let count_fn = get!(CuDeviceGetCount, b"cuDeviceGetCount\0");
        let get_dev = get!(CuDeviceGet, b"cuDeviceGet\0");
        let get_name = get!(CuDeviceGetName, b"cuDeviceGetName\0");
        let get_attr = get!(CuDeviceGetAttribute, b"cuDeviceGetAttribute\0");
        let rc = init(0);
        if rc != 0 {
            return Err(fail(format!(
                "cuInit failed with CUresult {rc} (100 = no device, 35 = driver older than the runtime)"
            )));
        }
        let mut count = 0;
        let rc = count_fn(&mut count);
        if rc != 0 || count <= 0 {
            return Err(fail(format!(
                "the driver sees no CUDA device (CUresult {rc}, {count} devices)"
            )));
        }
        let mut dev = 0;
        if get_dev(&mut dev, 0) != 0 {
            return Err(fail("cuDeviceGet(0) failed".into()));
        }
        let mut buf = [0 as std::ffi::c_char; 256];
        let name = if get_name(buf.as_mut_ptr(), buf.len() as i32, dev) == 0 {
            std::ffi::CStr::from_ptr(buf.as_ptr())
                .to_string_lossy()
                .into_owned()
        } else {
            "NVIDIA GPU".into()
        };
        let (mut major, mut minor) = (0, 0);
        get_attr(&mut major, CC_MAJOR, dev);
        get_attr(&mut minor, CC_MINOR, dev);
        Ok(CudaGpu {
            name,
            count: count as usize,
            compute_capability: (major, minor),
        })
    }
}
