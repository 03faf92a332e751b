//! Finding working WGPU devices for the tests that compare WGPU with flex (also used by the
//! root package's tests, through `#[path]`).

use burn::tensor::{Device, DeviceKind, Tensor};

/// What `probe` finds, or `None` after saying the test is skipped. A probe that panics counts
/// as finding nothing. With `GEMS_REQUIRE_WGPU` set (CI sets it), finding nothing fails the
/// test instead of skipping it.
pub fn found_or_skipped<T>(
    what: &str,
    probe: impl FnOnce() -> Option<T> + std::panic::UnwindSafe,
) -> Option<T> {
    match std::panic::catch_unwind(probe) {
        Ok(Some(found)) => Some(found),
        _ if std::env::var_os("GEMS_REQUIRE_WGPU").is_some() => {
            panic!("GEMS_REQUIRE_WGPU is set but {what} could not be created")
        }
        _ => {
            eprintln!(
                "skipped: no WGPU adapter (install mesa-vulkan-drivers, or set \
                 GEMS_REQUIRE_WGPU=1 to make this an error)"
            );
            None
        }
    }
}

/// The default WGPU device, when it computes a sum correctly.
pub fn wgpu_device() -> Option<Device> {
    found_or_skipped("a working WGPU device", || {
        let device = Device::wgpu(DeviceKind::DefaultDevice);
        let sum = Tensor::<1>::ones([4], &device).sum().into_scalar::<f32>();
        (sum == 4.0).then_some(device)
    })
}
