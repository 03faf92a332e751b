//! Choosing the compute device at run time from the backends compiled into this build.

use burn::tensor::Device;

use crate::error::{GemsError, Result};

/// Names of the backends compiled into this build, accepted by [`device_from_name`].
pub fn available_backends() -> Vec<&'static str> {
    let mut names = vec!["flex"];
    if cfg!(feature = "ndarray") {
        names.push("ndarray");
    }
    if cfg!(feature = "wgpu") {
        names.push("wgpu");
    }
    if cfg!(feature = "vulkan") {
        names.push("vulkan");
    }
    if cfg!(feature = "cuda") {
        names.push("cuda");
    }
    names
}

/// The device for a backend name: `flex` (alias `cpu`), `ndarray`, `wgpu`, `vulkan` or
/// `cuda`, optionally with a device index (`cuda:1`, `wgpu:0` for the first discrete GPU).
/// Unknown names and backends not compiled in are an error listing what is available.
pub fn device_from_name(name: &str) -> Result<Device> {
    let (backend, index) = match name.split_once(':') {
        Some((backend, index)) => {
            let index = index.parse::<usize>().map_err(|_| unknown(name))?;
            (backend, Some(index))
        }
        None => (name, None),
    };
    match (backend, index) {
        ("flex" | "cpu", None) => Ok(Device::flex()),
        #[cfg(feature = "ndarray")]
        ("ndarray", None) =>
        {
            #[allow(deprecated)]
            Ok(Device::ndarray())
        }
        #[cfg(feature = "wgpu")]
        ("wgpu", index) => Ok(Device::wgpu(wgpu_kind(index))),
        #[cfg(feature = "vulkan")]
        ("vulkan", index) => Ok(Device::vulkan(wgpu_kind(index))),
        #[cfg(feature = "cuda")]
        ("cuda", index) => Ok(Device::cuda(index.unwrap_or(0))),
        _ => Err(unknown(name)),
    }
}

#[cfg(any(feature = "wgpu", feature = "vulkan"))]
fn wgpu_kind(index: Option<usize>) -> burn::tensor::DeviceKind {
    match index {
        Some(index) => burn::tensor::DeviceKind::DiscreteGpu(index),
        None => burn::tensor::DeviceKind::DefaultDevice,
    }
}

fn unknown(name: &str) -> GemsError {
    GemsError::UnknownBackend {
        requested: name.to_string(),
        available: available_backends().join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flex_is_always_available() {
        assert!(device_from_name("flex").is_ok());
        assert!(device_from_name("cpu").is_ok());
    }

    #[test]
    fn unknown_backends_list_the_available_ones() {
        let error = device_from_name("tpu").unwrap_err().to_string();
        assert!(error.contains("`tpu`"), "{error}");
        assert!(error.contains("flex"), "{error}");
        assert!(device_from_name("flex:x").is_err());
    }
}
