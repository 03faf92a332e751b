//! `gems train --devices`: data-parallel training over several devices of one machine, through
//! gems-core's [`DataParallel`] (Burn's collective `all_reduce` on CUDA, Burn's device transfer
//! on wgpu/vulkan, which have no collective in Burn 0.22.1).
//!
//! One replica per device. The first replica is the one [`Training`](crate::training::Training)
//! holds (`model`, `optimizer`, `device`): it alone writes checkpoints, validates and evaluates,
//! so everything after a step is unchanged from a single-device run. The other replicas live
//! here. Each window's micro-batches are dealt round-robin to the replicas, which run their
//! backward passes on threads of their own; each task's gradients are summed across them and
//! every replica takes the same GEMS step.

use std::path::PathBuf;
use std::str::FromStr;

use burn::module::Module;
use burn::tensor::Device;
use gems_core::{DataParallel, Exchange, GemsOptimizer, Replica, StepReport, TaskGradients};
use gems_models::Backbone;

use crate::error::{CliError, Result};
use crate::experiment::Experiment;
use crate::knowledge;
use crate::run_dir::RunDir;
use crate::settings::TrainSettings;
use crate::training;

/// The devices of `--devices`: a count (`4`: the backend's first four devices) or a list of
/// device indices (`0,2`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSet {
    indices: Vec<usize>,
}

impl FromStr for DeviceSet {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let text = text.trim();
        if !text.contains(',') {
            return match text.parse::<usize>() {
                Ok(0) => Err("--devices takes a count of at least 1 or a list like 0,1".into()),
                Ok(count) => Ok(Self {
                    indices: (0..count).collect(),
                }),
                Err(_) => Err(format!(
                    "--devices takes a count (4) or a list of device indices (0,1,3), got `{text}`"
                )),
            };
        }
        let mut indices = Vec::new();
        for part in text.split(',') {
            let index = part.trim().parse::<usize>().map_err(|_| {
                format!(
                    "--devices: `{}` in `{text}` is not a device index",
                    part.trim()
                )
            })?;
            if indices.contains(&index) {
                return Err(format!("--devices lists device {index} twice in `{text}`"));
            }
            indices.push(index);
        }
        Ok(Self { indices })
    }
}

impl DeviceSet {
    /// Number of devices.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// The autodiff devices of the set on `backend` (a `--backend` value) and how they exchange
    /// gradients. One device is the backend's own device (`cuda:1` included), on any backend;
    /// several need a backend with more than one device and are checked against the devices
    /// that exist.
    pub fn open(&self, backend: &str) -> Result<DataParallel> {
        let (devices, exchange) = self.resolve(backend)?;
        let devices = devices.into_iter().map(Device::autodiff).collect();
        Ok(DataParallel::new(devices, exchange)?)
    }

    /// The devices of the set on `backend` (without autodiff), in the set's order, and how they
    /// exchange gradients, checked as [`open`](Self::open) checks them.
    pub fn resolve(&self, backend: &str) -> Result<(Vec<Device>, Exchange)> {
        if self.len() == 1 {
            // One replica on the backend's own device: nothing crosses between devices.
            let device = gems_core::device_from_name(backend)?;
            return Ok((vec![device], Exchange::DeviceCopy));
        }
        if backend.contains(':') {
            return Err(CliError::Settings(format!(
                "--devices chooses the devices: give --backend without an index (`{backend}`)"
            )));
        }
        let exchange = Exchange::for_backend(backend)?;
        let available = enumerate(backend);
        if let Some(&missing) = self.indices.iter().find(|&&i| i >= available.len()) {
            return Err(CliError::Settings(format!(
                "--devices asks for {backend} device {missing}, but this machine has {} \
                 {backend} device(s){}",
                available.len(),
                if available.is_empty() {
                    String::new()
                } else {
                    format!(" ({available:?})")
                }
            )));
        }
        let devices = self.indices.iter().map(|&i| available[i].clone()).collect();
        Ok((devices, exchange))
    }

    /// As many logical devices as the set has, all over the backend's default adapter (`wgpu`
    /// only: its setup registered once more per further device), exchanging gradients as
    /// `wgpu` devices do. A rehearsal of the data-parallel path on a machine with one GPU: the
    /// devices share the adapter, so their figures show the path's overhead, never a speed-up.
    /// Must come before anything else uses the backend's default device.
    pub fn on_one_adapter(&self, backend: &str) -> Result<(Vec<Device>, Exchange)> {
        match backend {
            #[cfg(feature = "wgpu")]
            "wgpu" => {
                let failed = |e: burn::tensor::wgpu::WgpuInitError| {
                    CliError::Settings(format!(
                        "cannot open logical wgpu devices over the default adapter: {e}"
                    ))
                };
                let (first, setup) = Device::wgpu_options().init_with_setup().map_err(failed)?;
                let mut devices = vec![first];
                for _ in 1..self.len() {
                    let further = Device::wgpu_options().setup(setup.clone()).init();
                    devices.push(further.map_err(failed)?);
                }
                Ok((devices, Exchange::for_backend(backend)?))
            }
            other => Err(CliError::Settings(format!(
                "logical devices over one adapter need the wgpu backend, not `{other}`"
            ))),
        }
    }
}

/// One optimizer per replica of a run of `settings` over `parallel` (for `gems train --devices`,
/// and `gems bench train --devices`): with `collect_knowledge` (a fresh run of a method with
/// null space) the knowledge covariances are collected over every device's share of the corpus
/// and summed once, so each replica builds the same bases on its own device. Hand the first to
/// [`Training`](crate::training::Training) and the rest to [`Replicas::new`].
pub fn optimizers(
    settings: &TrainSettings,
    experiment: &Experiment,
    model: &Backbone,
    parallel: &DataParallel,
    collect_knowledge: bool,
) -> Result<Vec<GemsOptimizer>> {
    let d_model = model.config().hidden_size();
    let null_spaces: Vec<Option<gems_core::NullSpace>> = if collect_knowledge {
        knowledge::collect_on(
            model,
            experiment,
            &settings.general_corpus,
            settings.general_corpus_tokens,
            &settings.optimizer_config(d_model).knowledge,
            knowledge::cache_directory(settings).as_deref(),
            parallel,
        )?
        .into_iter()
        .map(Some)
        .collect()
    } else {
        (0..parallel.replicas()).map(|_| None).collect()
    };
    null_spaces
        .into_iter()
        .map(|null_space| training::optimizer_for(settings, d_model, null_space))
        .collect()
}

/// The devices this build can use on `backend`, in Burn's enumeration order.
fn enumerate(backend: &str) -> Vec<Device> {
    #[allow(unused_imports)]
    use burn::tensor::DeviceType;
    match backend {
        #[cfg(feature = "wgpu")]
        "wgpu" => Device::enumerate(DeviceType::Wgpu).into_vec(),
        #[cfg(feature = "vulkan")]
        "vulkan" => Device::enumerate(DeviceType::Vulkan).into_vec(),
        #[cfg(feature = "cuda")]
        "cuda" => Device::enumerate(DeviceType::Cuda).into_vec(),
        _ => Vec::new(),
    }
}

/// The replicas after the first, and how the replicas exchange gradients.
pub struct Replicas {
    parallel: DataParallel,
    others: Vec<Replica<Backbone>>,
    checkpoint: PathBuf,
}

impl Replicas {
    /// Replicas of `first` (on the first device) on the other devices of `parallel`, each with
    /// its optimizer (`optimizers[i]` for device `i + 1`; same settings and state as the
    /// first's). `checkpoint` is the run's checkpoint, named when a device fails.
    pub fn new(
        parallel: DataParallel,
        first: &Backbone,
        optimizers: Vec<GemsOptimizer>,
        checkpoint: PathBuf,
    ) -> Self {
        assert_eq!(
            optimizers.len() + 1,
            parallel.replicas(),
            "one optimizer per replica"
        );
        let others = parallel.devices()[1..]
            .iter()
            .zip(optimizers)
            .map(|(device, optimizer)| Replica {
                model: first.clone().fork(&device.clone().autodiff()),
                optimizer,
            })
            .collect();
        Self {
            parallel,
            others,
            checkpoint,
        }
    }

    /// The replicas' devices (without autodiff), the first one first.
    pub fn devices(&self) -> &[Device] {
        self.parallel.devices()
    }

    /// Copies the first replica's weights and the optimizer state of `run`'s checkpoint (just
    /// written from the first replica) to the other replicas. Their gradients are identical,
    /// but on GPUs each device autotunes its own kernels, whose sums round differently (two
    /// WGPU devices measured 3e-8 apart after 7 steps): every checkpoint ends that drift, and
    /// a resumed run starts exactly where the uninterrupted one continues.
    pub fn resync(&mut self, first: &Backbone, run: &RunDir) -> Result<()> {
        for (replica, device) in self.others.iter_mut().zip(&self.parallel.devices()[1..]) {
            replica.model = first.clone().fork(&device.clone().autodiff());
            training::restore_optimizer(run, &mut replica.optimizer, device)?;
        }
        Ok(())
    }

    /// One step over a window of `micro_batches`: each replica computes its share with
    /// `gradients(model, device, micro-batch indices)` (one thread per replica), then every
    /// replica takes the same GEMS step. Returns the first replica's report and the window's
    /// loss of each task. A replica that fails (a device error panics inside Burn) ends the
    /// step with an error naming its device; nothing is saved.
    pub fn step<F>(
        &mut self,
        learning_rate: f64,
        first: (&mut Backbone, &mut GemsOptimizer),
        micro_batches: usize,
        gradients: F,
    ) -> Result<(StepReport, Vec<f64>)>
    where
        F: Fn(&Backbone, &Device, &[usize]) -> Result<Vec<TaskGradients>> + Sync,
    {
        let assignment = self.parallel.assign(micro_batches);
        let devices: Vec<Device> = self
            .devices()
            .iter()
            .map(|d| d.clone().autodiff())
            .collect();
        let models: Vec<&Backbone> = std::iter::once(&*first.0)
            .chain(self.others.iter().map(|r| &r.model))
            .collect();
        let gradients = &gradients;
        let shares: Vec<Vec<TaskGradients>> = std::thread::scope(|scope| {
            let running: Vec<_> = models
                .iter()
                .zip(&devices)
                .zip(&assignment)
                .map(|((model, device), micros)| {
                    scope.spawn(move || gradients(model, device, micros))
                })
                .collect();
            running
                .into_iter()
                .zip(&devices)
                .map(|(thread, device)| {
                    thread
                        .join()
                        .map_err(|panic| self.device_failure(device, &*panic))
                        .and_then(|shares| shares)
                })
                .collect::<Result<_>>()
        })?;
        let tasks = shares.first().map_or(0, Vec::len);
        let losses = (0..tasks)
            .map(|t| shares.iter().map(|share| share[t].loss).sum())
            .collect();
        let replicas = std::iter::once(first)
            .chain(self.others.iter_mut().map(Replica::parts))
            .collect();
        let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.parallel.step(learning_rate, replicas, shares)
        }))
        .map_err(|panic| self.device_failure(&devices[0], &*panic))??;
        Ok((report, losses))
    }
}

impl Replicas {
    /// The error of a replica whose device failed (Burn panics on device errors).
    fn device_failure(&self, device: &Device, panic: &(dyn std::any::Any + Send)) -> CliError {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        CliError::run(
            &self.checkpoint,
            format!(
                "device {device:?} failed during a step ({message}); the run stopped and keeps \
                 this last checkpoint: continue with `gems train --resume` (on fewer devices if \
                 one is lost)"
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use burn::module::{ModuleVisitor, Param};
    use burn::tensor::Tensor;

    use super::*;
    use crate::experiment::new_backbone;
    use crate::run_dir::{self, RunDir};
    use crate::training::{Progress, Training, training_examples};
    use gems_data::batch::EncodedExample;

    #[derive(Default)]
    struct Values(Vec<f32>);

    impl ModuleVisitor for Values {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let values = param.val().into_data().try_into_vec_as::<f32>().unwrap();
            self.0.extend(values);
        }
    }

    fn values(model: &Backbone) -> Vec<f32> {
        let mut values = Values::default();
        model.visit(&mut values);
        values.0
    }

    /// The weights of every replica after a short GEMS run with `replicas` replicas on the flex
    /// device (1: the plain loop), three micro-batches per window (dealt unevenly), a refresh
    /// every 2 steps and a checkpoint (and resync) at step 3.
    fn train(replicas: usize) -> Vec<Vec<f32>> {
        let folder = tempfile::tempdir().unwrap();
        let settings = TrainSettings {
            max_steps: 5,
            refresh_every: 2,
            checkpoint_every: 3,
            batch_size: 8,
            gradient_accumulation: 3,
            ..TrainSettings::default()
        };
        let experiment = Experiment::prepare(&settings, None).unwrap();
        let device = Device::flex().autodiff();
        let model = new_backbone(&settings, None, &experiment.tokenizer, &device).unwrap();
        // Parameters are initialised lazily, in the order of first use: visit them in module
        // order first, as `gems train` does when it saves the initial weights.
        values(&model);
        let parallel =
            DataParallel::new(vec![device.clone(); replicas], Exchange::DeviceCopy).unwrap();
        let mut optimizers = optimizers(&settings, &experiment, &model, &parallel, true).unwrap();
        let optimizer = optimizers.remove(0);
        let run = RunDir::create(&folder.path().join("run")).unwrap();
        let checkpoint = run.path(run_dir::CHECKPOINT);
        let replicas =
            (replicas > 1).then(|| Replicas::new(parallel, &model, optimizers, checkpoint));
        let examples = training_examples(&experiment).unwrap();
        let mut training = Training {
            settings: &settings,
            experiment: &experiment,
            run: &run,
            device,
            model,
            optimizer,
            progress: Progress::start(String::new()),
            replicas,
        };
        assert!(training.run(&examples, None).unwrap());
        assert_eq!(training.progress.step, 5);
        std::iter::once(values(&training.model))
            .chain(
                training
                    .replicas
                    .iter()
                    .flat_map(|r| r.others.iter().map(|other| values(&other.model))),
            )
            .collect()
    }

    /// The window's task gradients summed over two replicas' shares (micro-batches 0 and 2, and
    /// 1) equal one device's over the whole window.
    #[test]
    fn two_shares_of_a_window_sum_to_its_gradients() {
        let settings = TrainSettings::default();
        let experiment = Experiment::prepare(&settings, None).unwrap();
        let device = Device::flex().autodiff();
        let model = new_backbone(&settings, None, &experiment.tokenizer, &device).unwrap();
        values(&model);
        let examples = training_examples(&experiment).unwrap();
        let window: Vec<&EncodedExample> = examples[..24].iter().collect();
        let micro_batches: Vec<&[&EncodedExample]> = window.chunks(8).collect();
        let samples =
            gems_data::Task::ALL.map(|task| window.iter().filter(|e| e.task == task).count());
        let gradients = |micros: &[usize]| {
            let chosen = micros.iter().map(|&m| (m, micro_batches[m]));
            let window = crate::training::Window { step: 0, samples };
            crate::training::window_gradients(
                &experiment,
                &settings,
                &window,
                &model,
                &device,
                chosen,
                |_| Vec::new(),
                |_, task, _| task,
            )
            .unwrap()
        };
        let whole = gradients(&[0, 1, 2]);
        let parallel = DataParallel::new(vec![device.clone(); 2], Exchange::DeviceCopy).unwrap();
        let summed = parallel
            .sum_tasks(&model, vec![gradients(&[0, 2]), gradients(&[1])])
            .unwrap()
            .remove(0);
        struct Compare<'a> {
            whole: &'a [TaskGradients],
            summed: &'a [TaskGradients],
            worst: f32,
            largest: f32,
            params: usize,
        }
        impl ModuleVisitor for Compare<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                for (a, b) in self.whole.iter().zip(self.summed) {
                    let (Some(x), Some(y)) = (
                        a.gradients.get::<D>(param.id),
                        b.gradients.get::<D>(param.id),
                    ) else {
                        assert!(
                            a.gradients.get::<D>(param.id).is_none()
                                && b.gradients.get::<D>(param.id).is_none()
                        );
                        continue;
                    };
                    self.params += 1;
                    self.worst = self
                        .worst
                        .max((x.clone() - y).abs().max().into_scalar::<f32>());
                    self.largest = self.largest.max(x.abs().max().into_scalar::<f32>());
                }
            }
        }
        let mut compare = Compare {
            whole: &whole,
            summed: &summed,
            worst: 0.0,
            largest: 0.0,
            params: 0,
        };
        model.visit(&mut compare);
        eprintln!(
            "{} gradients, largest {:e}, worst difference {:e}",
            compare.params, compare.largest, compare.worst
        );
        assert!(compare.params > 10);
        assert!(
            compare.worst <= 1e-6 * compare.largest,
            "worst {:e}",
            compare.worst
        );
        for (a, b) in whole.iter().zip(&summed) {
            assert_eq!(a.samples, b.samples);
            assert!((a.loss - b.loss).abs() <= 1e-6 * a.loss.abs());
        }
    }

    /// Two replicas through `Training` (threads, the summed step, a checkpoint and resync at
    /// step 3) stay identical and train. Their distance to the one-device run is printed, not
    /// asserted: the summed gradients equal the whole window's to float rounding (test above),
    /// and Adam's first steps, which normalise every coordinate, turn rounding in near-zero
    /// coordinates into steps of the learning rate's size (measured: 5e-5 after 5 steps).
    #[test]
    fn two_replicas_stay_identical_through_steps_and_a_checkpoint() {
        let plain = train(1).remove(0);
        let replicas = train(2);
        assert_eq!(replicas.len(), 2);
        assert_eq!(replicas[0], replicas[1], "the replicas differ");
        let worst = plain
            .iter()
            .zip(&replicas[0])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("two replicas vs one device after 5 steps: {worst:e}");
        assert_ne!(replicas[0], values_before(), "training moved nothing");
    }

    fn values_before() -> Vec<f32> {
        let settings = TrainSettings::default();
        let experiment = Experiment::prepare(&settings, None).unwrap();
        let device = Device::flex().autodiff();
        values(&new_backbone(&settings, None, &experiment.tokenizer, &device).unwrap())
    }

    #[test]
    fn device_sets_are_counts_or_distinct_indices() {
        assert_eq!("3".parse::<DeviceSet>().unwrap().indices, vec![0, 1, 2]);
        assert_eq!("2, 0".parse::<DeviceSet>().unwrap().indices, vec![2, 0]);
        for (text, expected) in [
            ("0", "at least 1"),
            ("1,1", "device 1 twice"),
            ("1,x", "`x`"),
            ("many", "`many`"),
        ] {
            let error = text.parse::<DeviceSet>().unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
