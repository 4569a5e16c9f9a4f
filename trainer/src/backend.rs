//! Which burn device a command runs on.

use anyhow::Result;
use burn::tensor::{Device, FloatDType};
use clap::ValueEnum;
use petal_shared::ComputePrecision;

/// Compute backends this build of `petal` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum DeviceArg {
    /// The fastest available: CUDA in a CUDA build, else a GPU through wgpu, else the CPU.
    #[default]
    Auto,
    /// Pure-Rust CPU backend (burn's flex): always available.
    Cpu,
    /// The first high-performance adapter wgpu finds (Vulkan, Metal or DX12), even a software
    /// one such as Mesa's lavapipe.
    #[cfg(feature = "wgpu")]
    Wgpu,
    /// The first CUDA GPU.
    #[cfg(feature = "cuda")]
    Cuda,
}

/// The number format `--precision` asks for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionArg {
    /// f16 mixed precision on a GPU that computes in f16, f32 elsewhere.
    #[default]
    Auto,
    /// f32 throughout.
    F32,
    /// Mixed precision: f16 convolutions and head, f32 for the rest (GPU only).
    F16,
}

/// A resolved device and a description of it for the user.
pub struct Backend {
    pub device: Device,
    pub name: String,
}

impl Backend {
    /// What `arg` means on this device. f16 needs a GPU whose adapter computes in f16: the
    /// CPU backend computes f16 by widening every value, slower than f32 and no more exact.
    pub fn precision(&self, arg: PrecisionArg) -> Result<ComputePrecision> {
        arg.on(&self.device)
    }
}

impl PrecisionArg {
    /// The name the command line and recipes use.
    pub fn name(self) -> &'static str {
        match self {
            PrecisionArg::Auto => "auto",
            PrecisionArg::F32 => "f32",
            PrecisionArg::F16 => "f16",
        }
    }

    /// What this choice means on `device` (see [`Backend::precision`]).
    pub fn on(self, device: &Device) -> Result<ComputePrecision> {
        let f16 = *device != Device::flex() && device.supports_dtype(FloatDType::F16);
        match self {
            PrecisionArg::F32 => Ok(ComputePrecision::F32),
            PrecisionArg::Auto if f16 => Ok(ComputePrecision::F16),
            PrecisionArg::Auto => Ok(ComputePrecision::F32),
            PrecisionArg::F16 if f16 => Ok(ComputePrecision::F16),
            PrecisionArg::F16 => anyhow::bail!(
                "f16 precision needs a GPU that computes in f16, and this device does not \
                 (use --precision f32)"
            ),
        }
    }
}

impl From<ComputePrecision> for PrecisionArg {
    fn from(p: ComputePrecision) -> Self {
        match p {
            ComputePrecision::F32 => PrecisionArg::F32,
            ComputePrecision::F16 => PrecisionArg::F16,
        }
    }
}

/// The global `--device` and `--precision` of a command.
#[derive(Debug, Clone, Copy, Default)]
pub struct Compute {
    pub device: DeviceArg,
    pub precision: PrecisionArg,
}

impl Compute {
    /// The device (see [`DeviceArg::resolve`]) and the precision it computes in; the name
    /// says both.
    pub fn resolve(self) -> Result<(Backend, ComputePrecision)> {
        let mut backend = self.device.resolve()?;
        let precision = backend.precision(self.precision)?;
        if precision == ComputePrecision::F16 {
            backend.name.push_str(", f16 mixed precision");
        }
        log::info!("device: {}", backend.name);
        Ok((backend, precision))
    }
}

impl DeviceArg {
    /// The device, checked to exist: wgpu by asking for an adapter, CUDA by starting its
    /// runtime on one tiny tensor. A missing GPU is an error here (or, for `auto`, a fall back
    /// to the next backend) rather than a panic inside the backend later.
    pub fn resolve(self) -> Result<Backend> {
        let cpu = || Backend {
            device: Device::flex(),
            name: format!("CPU (flex, {} threads)", rayon::current_num_threads()),
        };
        match self {
            DeviceArg::Cpu => Ok(cpu()),
            #[cfg(feature = "cuda")]
            DeviceArg::Cuda => cuda_backend(),
            #[cfg(feature = "cuda")]
            DeviceArg::Auto => Ok(cuda_backend().unwrap_or_else(|e| {
                log::info!("not using CUDA: {e}");
                auto_without_cuda()
            })),
            #[cfg(feature = "wgpu")]
            DeviceArg::Wgpu => wgpu_backend(true),
            #[cfg(all(feature = "wgpu", not(feature = "cuda")))]
            DeviceArg::Auto => Ok(auto_without_cuda()),
            #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
            DeviceArg::Auto => Ok(cpu()),
        }
    }
}

/// `auto` once CUDA is ruled out: a hardware wgpu adapter if this build has wgpu, else the CPU.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn auto_without_cuda() -> Backend {
    let cpu = || Backend {
        device: Device::flex(),
        name: format!("CPU (flex, {} threads)", rayon::current_num_threads()),
    };
    #[cfg(feature = "wgpu")]
    return wgpu_backend(false).unwrap_or_else(|e| {
        log::info!("using the CPU: {e}");
        cpu()
    });
    #[cfg(not(feature = "wgpu"))]
    cpu()
}

/// CUDA device 0, checked to exist the way the wgpu branch checks for an adapter: burn's CUDA
/// runtime starts on the first tensor and panics when there is no driver or no GPU, so one
/// tiny tensor is placed and read back here, with the panic turned into an error that names
/// the way out.
#[cfg(feature = "cuda")]
fn cuda_backend() -> Result<Backend> {
    use burn::tensor::{Tensor, TensorData};
    let device = Device::cuda(0);
    let probe = device.clone();
    let hook = std::panic::take_hook();
    // The runtime's panic message is replaced by our error; silence the default report.
    std::panic::set_hook(Box::new(|_| {}));
    let started = std::panic::catch_unwind(move || {
        Tensor::<1>::from_data(TensorData::new(vec![1.0f32], [1]), &probe).into_data()
    });
    std::panic::set_hook(hook);
    match started {
        Ok(_) => Ok(Backend {
            device,
            name: "CUDA device 0".to_string(),
        }),
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("the CUDA runtime did not start");
            anyhow::bail!(
                "no usable CUDA GPU ({why}); install the NVIDIA driver or use --device wgpu/cpu"
            )
        }
    }
}

/// The adapter wgpu's high-performance preference picks, which is the one burn's runtime
/// settles on too. `auto` passes over software adapters: the CPU backend is faster than a
/// Vulkan driver emulated on the same CPU.
#[cfg(feature = "wgpu")]
fn wgpu_backend(allow_software: bool) -> Result<Backend> {
    use burn::backend::wgpu::wgpu;
    quiet_headless_vulkan_probe();
    // Vulkan, Metal and DX12 only: probing OpenGL through EGL prints errors at exit on headless
    // machines, and burn's runtime does not use it.
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::PRIMARY,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    }))
    .map_err(|e| {
        anyhow::anyhow!(
            "no GPU adapter found through Vulkan, Metal or DX12 ({e}); \
             install the GPU's Vulkan driver or use --device cpu"
        )
    })?;
    let info = adapter.get_info();
    if !allow_software && info.device_type == wgpu::DeviceType::Cpu {
        anyhow::bail!("the only wgpu adapter, {}, runs on the CPU", info.name);
    }
    let tuning = gpu_cache::configure();
    // The runtime is started on the graphics API of the adapter found above, so that it does
    // not probe the others (OpenGL through EGL prints errors on a machine without a display).
    // On Vulkan, a build with the `spirv` feature compiles the kernels to SPIR-V: only that
    // compiler reaches the tensor cores (VK_KHR_cooperative_matrix); WGSL cannot.
    use burn::tensor::wgpu::WgpuBackend;
    let (api, compiler) = match info.backend {
        wgpu::Backend::Vulkan if cfg!(feature = "spirv") => (WgpuBackend::Vulkan, "SPIR-V"),
        wgpu::Backend::Vulkan => (WgpuBackend::Vulkan, "WGSL"),
        wgpu::Backend::Metal => (WgpuBackend::Metal, "WGSL"),
        wgpu::Backend::Dx12 => (WgpuBackend::Dx12, "WGSL"),
        _ => (WgpuBackend::Auto, "WGSL"),
    };
    let device = Device::wgpu_options()
        .graphics_api(api)
        .init()
        .map_err(|e| anyhow::anyhow!("cannot start the GPU runtime on {}: {e}", info.name))?;
    Ok(Backend {
        device,
        name: format!(
            "{} ({:?}, {:?}, driver {} {}, {compiler} kernels; {tuning})",
            info.name, info.backend, info.device_type, info.driver, info.driver_info
        ),
    })
}

/// Where the GPU runtime keeps what it measured and compiled for this machine: the winning
/// kernel variant of every autotuned operation (convolutions, matrix products, fused
/// element-wise kernels) and compiled SPIR-V. The first run on a GPU tunes each shape it meets
/// and is slower for it; later runs read the answers back and start at full speed.
#[cfg(feature = "wgpu")]
pub mod gpu_cache {
    use burn::cubecl::config::cache::CacheConfig;
    use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
    use std::path::PathBuf;

    /// Environment variable naming the cache folder.
    pub const ENV: &str = "PETAL_GPU_CACHE";

    /// The cache folder: `$PETAL_GPU_CACHE`, else `petal/gpu` in the user's cache folder
    /// (`~/.cache/petal/gpu` on Linux). Deleting it only costs the next run its tuning time.
    pub fn folder() -> PathBuf {
        if let Some(dir) = std::env::var_os(ENV).filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        use etcetera::BaseStrategy;
        match etcetera::choose_base_strategy() {
            Ok(base) => base.cache_dir().join("petal").join("gpu"),
            Err(_) => std::env::temp_dir().join("petal-gpu-cache"),
        }
    }

    /// Points the GPU runtime's cache at [`folder`] (unless a `cubecl.toml` names its own) and
    /// says whether this run starts tuned, for the line that names the device. Must run before
    /// the first GPU tensor.
    pub fn configure() -> String {
        let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
        if !matches!(config.environment.path, CacheConfig::Target) {
            return "kernel cache set by cubecl.toml".to_string();
        }
        let dir = folder();
        if config.autotune.disable_cache {
            return "kernel tuning cache off".to_string();
        }
        let warm = std::fs::read_dir(&dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "db"))
        });
        config.environment.path = CacheConfig::Directory(dir.clone());
        // A configuration read earlier (another device in this process) is kept as it is.
        CubeClRuntimeConfig::try_set(config);
        if warm {
            format!("tuned kernels from {}", dir.display())
        } else {
            format!(
                "first run on this cache: tuning kernels as they are first used, kept in {}",
                dir.display()
            )
        }
    }
}

/// On a machine without a display session, Mesa's implicit Vulkan layer
/// `VK_LAYER_MESA_device_select` asks Wayland for the display's GPU whenever an application
/// enables the Wayland surface extension (wgpu enables every surface extension it finds), and
/// libwayland prints `error: XDG_RUNTIME_DIR is invalid or not set in the environment.` on
/// stderr, once per instance. Without a display the layer has nothing to choose by, and wgpu
/// picks the adapter itself, so we switch the layer off through the variable its manifest names
/// (`NODEVICE_SELECT=1`), only in that case and only if the user has not configured the layer.
#[cfg(feature = "wgpu")]
fn quiet_headless_vulkan_probe() {
    let runtime_dir_ok = std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| {
        std::path::Path::new(&d).is_absolute() && std::path::Path::new(&d).is_dir()
    });
    let configured = [
        "NODEVICE_SELECT",
        "MESA_VK_DEVICE_SELECT",
        "WAYLAND_DISPLAY",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some());
    if !runtime_dir_ok && !configured {
        // SAFETY: this runs while a command resolves its device, before it starts any thread
        // of its own (decoding, training, progress bars), and no library thread started
        // earlier reads the environment, so nothing reads it concurrently with this write.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
}
