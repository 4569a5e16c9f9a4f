//! Which burn device a command runs on.

use anyhow::{Context, Result, bail};
use burn::tensor::{Device, FloatDType};
use clap::ValueEnum;
use petal_shared::Precision;

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

/// The number format a user asks for, on the command line (`--precision`) or in a recipe;
/// [`PrecisionChoice::on`] resolves it to a [`Precision`] for a device.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionChoice {
    /// f16 mixed precision on a GPU that computes in f16, f32 elsewhere.
    #[default]
    Auto,
    /// f32 throughout.
    F32,
    /// Mixed precision: f16 convolutions and head, f32 for the rest (GPU only).
    F16,
}

/// Where a run trains: one device, or several for data-parallel training (`--devices`).
#[derive(Debug, Clone)]
pub struct Placement {
    /// The replicas' devices; the first also validates, checkpoints and exports.
    pub devices: Vec<Device>,
    /// The devices are CUDA GPUs, which sum gradients through NCCL.
    pub collective: bool,
}

impl Placement {
    /// One device.
    pub fn one(device: Device) -> Self {
        Placement {
            devices: vec![device],
            collective: false,
        }
    }

    /// The devices `--devices` names (`cpu`, `cuda` or `cuda:N`, comma-separated, all of one
    /// kind), each checked to exist, with a description for the user.
    pub fn resolve(names: &[String]) -> Result<(Placement, String)> {
        let mut kinds = names.iter().map(|name| DeviceName::parse(name));
        let first = kinds.next().context("--devices names no device")??;
        let mut all = vec![first];
        for kind in kinds {
            let kind = kind?;
            if std::mem::discriminant(&kind) != std::mem::discriminant(&first) {
                bail!(
                    "--devices mixes device kinds ({}): name GPUs of one kind, or only cpu",
                    names.join(",")
                );
            }
            if kind != DeviceName::Cpu && all.contains(&kind) {
                bail!("--devices names {kind} twice");
            }
            all.push(kind);
        }
        match first {
            DeviceName::Cpu => {
                let backend = DeviceArg::Cpu.resolve()?;
                let name = format!(
                    "{} CPU replicas ({}; gradients summed in host memory)",
                    all.len(),
                    backend.name
                );
                Ok((
                    Placement {
                        devices: vec![backend.device; all.len()],
                        collective: false,
                    },
                    name,
                ))
            }
            #[cfg(feature = "cuda")]
            DeviceName::Cuda(_) => {
                let mut backends = Vec::new();
                for kind in &all {
                    let DeviceName::Cuda(index) = kind else {
                        unreachable!("one kind")
                    };
                    backends.push(cuda_backend(*index)?);
                }
                pin_default_device(&backends[0]);
                let devices: Vec<Device> = backends.into_iter().map(|b| b.device).collect();
                let name = format!(
                    "{} CUDA GPUs ({}; gradients summed through NCCL)",
                    devices.len(),
                    names.join(",")
                );
                Ok((
                    Placement {
                        collective: devices.len() > 1,
                        devices,
                    },
                    name,
                ))
            }
        }
    }
}

/// One name of `--devices`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeviceName {
    Cpu,
    #[cfg(feature = "cuda")]
    Cuda(usize),
}

impl DeviceName {
    fn parse(name: &str) -> Result<DeviceName> {
        let name = name.trim();
        if name == "cpu" {
            return Ok(DeviceName::Cpu);
        }
        if let Some(index) = name.strip_prefix("cuda") {
            #[cfg(feature = "cuda")]
            return match index.strip_prefix(':').unwrap_or(index) {
                "" => Ok(DeviceName::Cuda(0)),
                n => n.parse().map(DeviceName::Cuda).map_err(|_| {
                    anyhow::anyhow!("'{name}' is not a CUDA device: write cuda:0, cuda:1, …")
                }),
            };
            #[cfg(not(feature = "cuda"))]
            {
                let _ = index;
                bail!(
                    "'{name}': this petal is built without CUDA (cargo build --release -p petal-trainer --features cuda)"
                );
            }
        }
        bail!("'{name}' is not a device --devices takes (cpu, cuda:N)")
    }
}

impl std::fmt::Display for DeviceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceName::Cpu => write!(f, "cpu"),
            #[cfg(feature = "cuda")]
            DeviceName::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// A resolved device and a description of it for the user.
pub struct Backend {
    pub device: Device,
    pub name: String,
    /// burn's name for its backend (`BURN_DEVICE`): flex, wgpu or cuda.
    pub kind: &'static str,
}

impl Backend {
    /// What `arg` means on this device. f16 needs a GPU whose adapter computes in f16: the
    /// CPU backend computes f16 by widening every value, slower than f32 and no more exact.
    pub fn precision(&self, arg: PrecisionChoice) -> Result<Precision> {
        arg.on(&self.device)
    }
}

impl PrecisionChoice {
    /// The name the command line and recipes use.
    pub fn name(self) -> &'static str {
        match self {
            PrecisionChoice::Auto => "auto",
            PrecisionChoice::F32 => "f32",
            PrecisionChoice::F16 => "f16",
        }
    }

    /// What this choice means on `device` (see [`Backend::precision`]).
    pub fn on(self, device: &Device) -> Result<Precision> {
        let f16 = *device != Device::flex() && device.supports_dtype(FloatDType::F16);
        match self {
            PrecisionChoice::F32 => Ok(Precision::F32),
            PrecisionChoice::Auto if f16 => Ok(Precision::F16),
            PrecisionChoice::Auto => Ok(Precision::F32),
            PrecisionChoice::F16 if f16 => Ok(Precision::F16),
            PrecisionChoice::F16 => anyhow::bail!(
                "f16 precision needs a GPU that computes in f16, and this device does not \
                 (use --precision f32)"
            ),
        }
    }
}

impl From<Precision> for PrecisionChoice {
    fn from(p: Precision) -> Self {
        match p {
            Precision::F32 => PrecisionChoice::F32,
            Precision::F16 => PrecisionChoice::F16,
        }
    }
}

/// The global `--device` and `--precision` of a command.
#[derive(Debug, Clone, Copy, Default)]
pub struct Compute {
    pub device: DeviceArg,
    pub precision: PrecisionChoice,
}

impl Compute {
    /// The device (see [`DeviceArg::resolve`]) and the precision it computes in; the name
    /// says both.
    pub fn resolve(self) -> Result<(Backend, Precision)> {
        let mut backend = self.device.resolve()?;
        let precision = backend.precision(self.precision)?;
        if precision == Precision::F16 {
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
        let backend = self.resolve_device()?;
        pin_default_device(&backend);
        Ok(backend)
    }

    fn resolve_device(self) -> Result<Backend> {
        match self {
            DeviceArg::Cpu => Ok(cpu()),
            #[cfg(feature = "cuda")]
            DeviceArg::Cuda => cuda_backend(0),
            #[cfg(feature = "cuda")]
            DeviceArg::Auto => Ok(cuda_backend(0).unwrap_or_else(|e| {
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

/// Makes burn's default device the one the command resolved. burn places a few tensors on
/// `Device::default()` rather than on a device it is given (the optimiser state read back from a
/// checkpoint, before its first step moves it), and its default is the first compiled backend:
/// CUDA in a CUDA build, else wgpu. Resuming a run with `--device cpu` on a machine without that
/// GPU would then start the missing GPU's runtime and panic.
fn pin_default_device(backend: &Backend) {
    // SAFETY: as in `quiet_headless_vulkan_probe`: this runs while the command resolves its
    // device, before it starts any thread of its own, and burn reads the variable only when it
    // picks a default device, which no library thread started earlier does.
    unsafe { std::env::set_var("BURN_DEVICE", backend.kind) };
}

/// burn's CPU backend, flex, on every core.
fn cpu() -> Backend {
    Backend {
        device: Device::flex(),
        name: format!("CPU (flex, {} threads)", rayon::current_num_threads()),
        kind: "flex",
    }
}

/// `auto` once CUDA is ruled out: a hardware wgpu adapter if this build has wgpu, else the CPU.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn auto_without_cuda() -> Backend {
    #[cfg(feature = "wgpu")]
    return wgpu_backend(false).unwrap_or_else(|e| {
        log::info!("using the CPU: {e}");
        cpu()
    });
    #[cfg(not(feature = "wgpu"))]
    cpu()
}

/// CUDA device `index`, checked to exist the way the wgpu branch checks for an adapter: burn's
/// CUDA runtime starts on the first tensor and panics when there is no driver or no GPU — on
/// its device thread, which leaves the thread that asked with a closed channel — so one tiny
/// tensor is placed and read back here, and the first panic's message (the runtime's reason)
/// becomes an error that names the way out.
#[cfg(feature = "cuda")]
fn cuda_backend(index: usize) -> Result<Backend> {
    use burn::tensor::{Tensor, TensorData};
    use std::sync::{Arc, Mutex};
    let tuning = gpu_cache::configure();
    let device = Device::cuda(index);
    let probe = device.clone();
    let reason: Arc<Mutex<Option<String>>> = Arc::default();
    let hook = std::panic::take_hook();
    // The runtime's panic report is replaced by our error: keep its message, print nothing.
    let first = Arc::clone(&reason);
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let text = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()));
        if let (Some(text), Ok(mut first)) = (text, first.lock()) {
            first.get_or_insert(text);
        }
    }));
    let started = std::panic::catch_unwind(move || {
        Tensor::<1>::from_data(TensorData::new(vec![1.0f32], [1]), &probe).into_data()
    });
    std::panic::set_hook(hook);
    if started.is_ok() {
        return Ok(Backend {
            device,
            name: format!("CUDA device {index} ({tuning})"),
            kind: "cuda",
        });
    }
    let why = reason
        .lock()
        .ok()
        .and_then(|r| r.clone())
        .unwrap_or_else(|| "the CUDA runtime did not start".to_string());
    anyhow::bail!(
        "no usable CUDA GPU {index} ({}); install the NVIDIA driver or use --device {}",
        gist(&why),
        if cfg!(feature = "wgpu") {
            "wgpu or cpu"
        } else {
            "cpu"
        }
    )
}

/// A runtime's panic message up to its first line break or " - " aside, in at most 160
/// characters: the CUDA loader's goes on to list every library name it searched for.
#[cfg(feature = "cuda")]
fn gist(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    let line = line.split(" - ").next().unwrap_or(line).trim();
    match line.char_indices().nth(160) {
        Some((end, _)) => format!("{}…", &line[..end]),
        None => line.to_string(),
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
        kind: "wgpu",
    })
}

/// Where the GPU runtime keeps what it measured and compiled for this machine: the winning
/// kernel variant of every autotuned operation (convolutions, matrix products, fused
/// element-wise kernels) and compiled SPIR-V. The first run on a GPU tunes each shape it meets
/// and is slower for it; later runs read the answers back and start at full speed.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(names: &[&str]) -> String {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        match Placement::resolve(&names) {
            Ok(_) => panic!("{names:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn cpu_replicas_share_the_cpu_and_sum_in_host_memory() {
        let names = ["cpu".to_string(), " cpu".to_string()];
        let (placement, name) = Placement::resolve(&names).unwrap();
        assert_eq!(placement.devices, [Device::flex(), Device::flex()]);
        assert!(!placement.collective);
        assert!(name.starts_with("2 CPU replicas"), "{name}");
    }

    #[test]
    fn device_lists_that_cannot_work_are_refused_with_the_reason() {
        assert!(refused(&["tpu"]).contains("'tpu' is not a device"));
        assert!(refused(&[]).contains("names no device"));
        if cfg!(feature = "cuda") {
            assert!(refused(&["cpu", "cuda:0"]).contains("mixes device kinds"));
            assert!(refused(&["cuda:0", "cuda:0"]).contains("names cuda:0 twice"));
            assert!(refused(&["cuda:x"]).contains("'cuda:x' is not a CUDA device"));
        } else {
            assert!(refused(&["cuda:0"]).contains("built without CUDA"));
        }
    }
}
