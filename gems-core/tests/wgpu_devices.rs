//! What Burn 0.22.1 offers for several devices on WGPU, measured: which device kinds open,
//! whether two logical devices can share one adapter, and whether Burn's collective
//! `all_reduce` runs between them. Guards the choice of [`Exchange::for_backend`]: wgpu sums
//! gradients through Burn's device transfer because its collective does not run; if a Burn
//! upgrade makes it run, this test fails and says to switch.
//!
//! Prints its findings (`--nocapture`). Skipped without an adapter unless `GEMS_REQUIRE_WGPU`
//! is set.
#![cfg(feature = "wgpu")]

mod common;

use std::sync::mpsc;
use std::time::Duration;

use burn::tensor::distributed::{
    DistributedConfig, DistributedContext, ReduceOperation, all_reduce,
};
use burn::tensor::{Device, DeviceKind, DeviceType, Tensor};
use gems_core::Exchange;

/// Runs `probe` on its own thread: its value, its panic message, or a timeout.
fn attempt<T: Send + 'static>(
    seconds: u64,
    probe: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(probe)).map_err(|panic| {
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic without a message".into())
            });
        let _ = sender.send(outcome);
    });
    receiver
        .recv_timeout(Duration::from_secs(seconds))
        .unwrap_or_else(|_| Err(format!("no answer within {seconds} s")))
}

#[test]
fn wgpu_devices_and_collectives_in_burn_0_22() {
    let Some(adapters) = common::wgpu::found_or_skipped("a WGPU adapter", || {
        let adapters = Device::enumerate(DeviceType::Wgpu).into_vec();
        (!adapters.is_empty()).then_some(adapters)
    }) else {
        return;
    };
    println!("Device::enumerate(DeviceType::Wgpu): {adapters:?}");

    for kind in [
        DeviceKind::DiscreteGpu(0),
        DeviceKind::DiscreteGpu(1),
        DeviceKind::IntegratedGpu(0),
        DeviceKind::VirtualGpu(0),
        DeviceKind::Cpu,
    ] {
        let label = format!("{kind:?}");
        let outcome = attempt(120, move || {
            let device = Device::wgpu(kind);
            let sum = Tensor::<1>::ones([4], &device).sum().into_scalar::<f32>();
            format!("{device:?} sums to {sum}")
        });
        println!("Device::wgpu({label}): {outcome:?}");
    }

    // Two logical devices over one adapter: the same wgpu setup registered twice.
    let (first, setup) = Device::wgpu_options()
        .init_with_setup()
        .expect("an adapter was enumerated");
    let second = Device::wgpu_options()
        .setup(setup)
        .init()
        .expect("a wgpu setup can be registered as a further device");
    println!("two logical devices: {first:?} and {second:?}");
    assert_ne!(first, second, "the registered setup is a device of its own");
    let values = Tensor::<1>::from_floats([1.0, 2.0, 3.0], &first).to_device(&second);
    assert_eq!(values.device(), second);
    assert_eq!(
        values.into_data().try_to_vec::<f32>().unwrap(),
        vec![1.0, 2.0, 3.0],
        "Tensor::to_device between the two devices"
    );

    // Burn's collective between them, as its docs describe: context, then one all_reduce per
    // device, then resolve.
    let devices = vec![first.clone(), second.clone()];
    let collective = attempt(120, move || {
        let _context = DistributedContext::init(
            devices.clone(),
            DistributedConfig {
                all_reduce_op: ReduceOperation::Sum,
            },
        );
        let pending: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(i, device)| {
                let share = Tensor::<1>::from_floats([1.0 + i as f32, 10.0], device);
                all_reduce(share, ReduceOperation::Sum, devices.clone())
            })
            .collect();
        pending
            .into_iter()
            .map(|p| p.resolve().into_data().try_to_vec::<f32>().unwrap())
            .collect::<Vec<_>>()
    });
    println!("all_reduce over the two WGPU devices: {collective:?}");
    match collective {
        Ok(sums) if sums.iter().all(|s| s == &[3.0, 20.0]) => panic!(
            "Burn's all_reduce now runs on WGPU: make Exchange::for_backend(\"wgpu\") \
             Exchange::Collective"
        ),
        outcome => assert_eq!(
            Exchange::for_backend("wgpu").unwrap(),
            Exchange::DeviceCopy,
            "WGPU's collective does not run ({outcome:?}), so wgpu must copy through Burn"
        ),
    }
}

#[test]
fn flex_has_no_collectives() {
    let outcome = attempt(60, || {
        let devices = vec![Device::flex(), Device::flex()];
        let _context = DistributedContext::init(
            devices.clone(),
            DistributedConfig {
                all_reduce_op: ReduceOperation::Sum,
            },
        );
        all_reduce(
            Tensor::<1>::ones([2], &devices[0]),
            ReduceOperation::Sum,
            devices.clone(),
        )
        .resolve()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
    });
    println!("DistributedContext::init + all_reduce on flex: {outcome:?}");
    assert!(outcome.is_err(), "flex ran a collective: {outcome:?}");
    assert!(Exchange::for_backend("flex").is_err());
}
