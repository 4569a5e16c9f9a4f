//! Which burn device a command runs on.

use anyhow::Result;
use burn::tensor::Device;
use clap::ValueEnum;

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

/// A resolved device and a description of it for the user.
pub struct Backend {
    pub device: Device,
    pub name: String,
}

impl DeviceArg {
    /// The device, checked to exist. A missing GPU is an error here (or, for `auto`, a fall
    /// back to the CPU) rather than a panic inside the backend later. GPUs come up lazily, on
    /// the first tensor placed on them.
    pub fn resolve(self) -> Result<Backend> {
        let cpu = || Backend {
            device: Device::flex(),
            name: format!("CPU (flex, {} threads)", rayon::current_num_threads()),
        };
        match self {
            DeviceArg::Cpu => Ok(cpu()),
            #[cfg(feature = "cuda")]
            DeviceArg::Cuda | DeviceArg::Auto => Ok(Backend {
                device: Device::cuda(0),
                name: "CUDA device 0".to_string(),
            }),
            #[cfg(feature = "wgpu")]
            DeviceArg::Wgpu => wgpu_backend(true),
            #[cfg(all(feature = "wgpu", not(feature = "cuda")))]
            DeviceArg::Auto => Ok(wgpu_backend(false).unwrap_or_else(|e| {
                log::info!("using the CPU: {e}");
                cpu()
            })),
            #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
            DeviceArg::Auto => Ok(cpu()),
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
    Ok(Backend {
        device: Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        name: format!(
            "{} ({:?}, {:?}, driver {} {})",
            info.name, info.backend, info.device_type, info.driver, info.driver_info
        ),
    })
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
