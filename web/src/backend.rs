//! Which backend the page computes on, and the sentence that tells the user why.
//!
//! A software WebGPU adapter (Chrome's SwiftShader, Mesa's llvmpipe/lavapipe, Windows' Basic
//! Render Driver) runs our kernels on the CPU through a GPU emulator: measured here, ResNet-18
//! at 224 takes 9.2 s an image on SwiftShader and 0.19 s on the wasm CPU path. So WebGPU is
//! used only on a hardware adapter, unless the user forces it (`?backend=webgpu`, which the
//! browser tests use to check WebGPU's answers on SwiftShader).

use serde::{Deserialize, Serialize};

/// What `?backend=` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// The fastest honest choice (no `?backend=`).
    Auto,
    Cpu,
    Webgpu,
}

impl Requested {
    /// `?backend=` value: `cpu`, `webgpu`, anything else (or nothing) is `Auto`.
    pub fn parse(value: &str) -> Self {
        match value.trim().to_ascii_lowercase().as_str() {
            "cpu" => Requested::Cpu,
            "webgpu" | "gpu" => Requested::Webgpu,
            _ => Requested::Auto,
        }
    }
}

/// What the browser says about its WebGPU adapter (`GPUAdapter.info`, `isFallbackAdapter`,
/// `features`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AdapterFacts {
    pub vendor: String,
    pub architecture: String,
    pub device: String,
    pub description: String,
    /// `GPUAdapterInfo.isFallbackAdapter` (or the older `GPUAdapter.isFallbackAdapter`): the
    /// browser's own word that the adapter is a software one.
    pub is_fallback_adapter: bool,
    /// The adapter offers `shader-f16` (half-precision arithmetic in shaders).
    pub shader_f16: bool,
}

impl AdapterFacts {
    /// Whether the adapter runs on the CPU: the browser says so, or its name is one of the
    /// software rasterisers (older browsers do not report `isFallbackAdapter`).
    pub fn is_software(&self) -> bool {
        const SOFTWARE: [&str; 5] = [
            "swiftshader",
            "llvmpipe",
            "lavapipe",
            "software",
            "basic render",
        ];
        self.is_fallback_adapter
            || [
                &self.vendor,
                &self.architecture,
                &self.device,
                &self.description,
            ]
            .iter()
            .any(|field| {
                let field = field.to_ascii_lowercase();
                SOFTWARE.iter().any(|name| field.contains(name))
            })
    }

    /// A short name for the "about this device" panel.
    pub fn name(&self) -> String {
        let parts: Vec<&str> = [&self.vendor, &self.architecture, &self.description]
            .into_iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        if parts.is_empty() {
            "unnamed adapter".into()
        } else {
            parts.join(" ")
        }
    }
}

/// The page's decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    /// `webgpu` or `cpu`: what `data-backend` says.
    pub backend: &'static str,
    /// Why, in words for the user.
    pub reason: String,
}

/// Picks the backend: WebGPU on a hardware adapter, the wasm CPU path otherwise, and whatever
/// `requested` forces.
pub fn choose(requested: Requested, adapter: Option<&AdapterFacts>) -> Choice {
    let cpu = |reason: String| Choice {
        backend: "cpu",
        reason,
    };
    match (requested, adapter) {
        (Requested::Cpu, _) => cpu("WebGPU turned off with ?backend=cpu".into()),
        (_, None) => cpu("WebGPU is not available in this browser, so this is slower".into()),
        (Requested::Webgpu, Some(a)) => Choice {
            backend: "webgpu",
            reason: if a.is_software() {
                format!(
                    "forced with ?backend=webgpu on {}, a software adapter (slow)",
                    a.name()
                )
            } else {
                format!("forced with ?backend=webgpu on {}", a.name())
            },
        },
        (Requested::Auto, Some(a)) if a.is_software() => cpu(format!(
            "the only WebGPU adapter is {}, a software renderer, which is slower than \
             WebAssembly on the CPU (?backend=webgpu uses it anyway)",
            a.name()
        )),
        (Requested::Auto, Some(a)) => Choice {
            backend: "webgpu",
            reason: format!("your GPU: {}", a.name()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn swiftshader() -> AdapterFacts {
        // What headless Chromium 156 reports on a machine without a GPU.
        AdapterFacts {
            vendor: "google".into(),
            architecture: "swiftshader".into(),
            is_fallback_adapter: true,
            ..Default::default()
        }
    }

    fn hardware() -> AdapterFacts {
        AdapterFacts {
            vendor: "nvidia".into(),
            architecture: "hopper".into(),
            shader_f16: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_software_adapter_gets_the_cpu_path_and_says_why() {
        let c = choose(Requested::Auto, Some(&swiftshader()));
        assert_eq!(c.backend, "cpu");
        assert!(c.reason.contains("software"), "{}", c.reason);
        // Without the browser's flag, the name alone gives it away.
        let unflagged = AdapterFacts {
            is_fallback_adapter: false,
            ..swiftshader()
        };
        assert!(unflagged.is_software());
        assert_eq!(choose(Requested::Auto, Some(&unflagged)).backend, "cpu");
        let llvmpipe = AdapterFacts {
            description: "llvmpipe (LLVM 15.0.6, 256 bits)".into(),
            ..Default::default()
        };
        assert_eq!(choose(Requested::Auto, Some(&llvmpipe)).backend, "cpu");
    }

    #[test]
    fn a_hardware_adapter_gets_webgpu() {
        assert!(!hardware().is_software());
        let c = choose(Requested::Auto, Some(&hardware()));
        assert_eq!(c.backend, "webgpu");
        assert!(c.reason.contains("nvidia hopper"), "{}", c.reason);
    }

    #[test]
    fn the_url_parameter_forces_either_way() {
        let forced = choose(Requested::Webgpu, Some(&swiftshader()));
        assert_eq!(forced.backend, "webgpu");
        assert!(forced.reason.contains("software adapter"));
        assert_eq!(choose(Requested::Cpu, Some(&hardware())).backend, "cpu");
        // Forcing WebGPU without an adapter cannot work: the CPU, with the reason.
        let none = choose(Requested::Webgpu, None);
        assert_eq!(none.backend, "cpu");
        assert!(none.reason.contains("not available"));
        assert_eq!(Requested::parse("WebGPU"), Requested::Webgpu);
        assert_eq!(Requested::parse(""), Requested::Auto);
    }

    #[test]
    fn adapter_facts_read_the_browsers_json() {
        let a: AdapterFacts = serde_json::from_str(
            r#"{"vendor":"google","architecture":"swiftshader","isFallbackAdapter":true,"shaderF16":false,"extra":1}"#,
        )
        .unwrap();
        assert_eq!(a, swiftshader());
    }
}
