//! Data-parallel GEMS: one model replica per device, each task's gradients summed across the
//! replicas, then the same GEMS step on every replica.
//!
//! Every replica computes the gradients of its share of the step's window, each micro-batch's
//! loss weighted by its samples over the *whole window's* samples of that task, exactly as one
//! device accumulates them. The sum of the shares is then the single-device gradient of the whole
//! window (up to the order of float additions), and every replica holds it. The randomized SVD
//! is seeded by (seed, parameter path, refresh count), so each replica computes the same bases
//! from the same gradient: no basis or optimizer state ever crosses between devices.
//!
//! The sum goes through Burn, in one of two ways ([`Exchange`]):
//! - [`Exchange::Collective`]: Burn's `all_reduce` (`burn::tensor::distributed`) with a sum,
//!   device to device. In Burn 0.22.1 only the CUDA runtime implements it (NCCL); on wgpu and
//!   the CPU runtimes cubecl panics ("no transport between its devices"), and flex has none.
//! - [`Exchange::DeviceCopy`]: the shares are moved to the first replica's device with
//!   `Tensor::to_device`, added there, and the sum moved back to every replica, as burn-optim's
//!   `MultiGradientsParams` accumulates gradients of several devices. Works on every backend
//!   (through the host on wgpu), and gives every replica bit-identical gradients.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Device;
use burn::tensor::Tensor;
use burn::tensor::distributed::{
    CollectiveTensor, DistributedConfig, DistributedContext, ReduceOperation, all_reduce,
};

use crate::covariance::CovarianceAccumulator;
use crate::diagnostics::StepReport;
use crate::error::{GemsError, Result};
use crate::optimizer::{GemsOptimizer, TaskGradients};

/// How tensors are summed across the replicas' devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exchange {
    /// Burn's collective `all_reduce` (CUDA with NCCL in Burn 0.22.1).
    Collective,
    /// `Tensor::to_device` to the first device, sum there, copy back (any backend).
    DeviceCopy,
}

impl Exchange {
    /// The exchange for a backend name (as `device_from_name` takes, without index): `cuda`
    /// has collectives; `wgpu` and `vulkan` have none in Burn 0.22.1 and copy through Burn's
    /// device transfer; the CPU backends (`flex`, `ndarray`) run on one device and are refused.
    pub fn for_backend(backend: &str) -> Result<Self> {
        match backend {
            "cuda" => Ok(Self::Collective),
            "wgpu" | "vulkan" => Ok(Self::DeviceCopy),
            other => Err(GemsError::InvalidConfig(format!(
                "backend `{other}` has no collective operations and a single device: \
                 several devices need a GPU backend (cuda, wgpu or vulkan)"
            ))),
        }
    }
}

/// The devices of a data-parallel run and how they exchange tensors. Holds Burn's
/// [`DistributedContext`] for the collective exchange (closed when dropped).
#[derive(Debug)]
pub struct DataParallel {
    devices: Vec<Device>,
    exchange: Exchange,
    _context: Option<DistributedContext>,
}

/// One replica: a model and its own GEMS optimizer, on one device.
pub struct Replica<M> {
    /// The model (on the replica's autodiff device).
    pub model: M,
    /// The optimizer; its state stays identical to every other replica's.
    pub optimizer: GemsOptimizer,
}

impl<M> Replica<M> {
    /// The model and the optimizer, as [`DataParallel::step`] takes them.
    pub fn parts(&mut self) -> (&mut M, &mut GemsOptimizer) {
        (&mut self.model, &mut self.optimizer)
    }
}

impl DataParallel {
    /// The replicas' devices (autodiff or not; the exchange uses their inner devices) and how
    /// they exchange tensors. Rejects an empty list; a device listed twice is rejected for the
    /// collective exchange (a rank per device), allowed for the copy (it is then a no-op).
    pub fn new(devices: Vec<Device>, exchange: Exchange) -> Result<Self> {
        if devices.is_empty() {
            return Err(GemsError::InvalidConfig(
                "data-parallel training needs at least one device".into(),
            ));
        }
        let inner: Vec<Device> = devices
            .iter()
            .map(|d| d.clone().without_autodiff())
            .collect();
        let context = match exchange {
            Exchange::Collective => {
                for (i, device) in inner.iter().enumerate() {
                    if inner[..i].contains(device) {
                        return Err(GemsError::InvalidConfig(format!(
                            "device {device:?} is listed twice; a collective needs distinct devices"
                        )));
                    }
                }
                Some(DistributedContext::init(
                    inner.clone(),
                    DistributedConfig {
                        all_reduce_op: ReduceOperation::Sum,
                    },
                ))
            }
            Exchange::DeviceCopy => None,
        };
        Ok(Self {
            devices: inner,
            exchange,
            _context: context,
        })
    }

    /// The replicas' (inner) devices, first one first.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// Number of replicas.
    pub fn replicas(&self) -> usize {
        self.devices.len()
    }

    /// How tensors are exchanged.
    pub fn exchange(&self) -> Exchange {
        self.exchange
    }

    /// Which of a window's `micro_batches` each replica runs: micro-batch `i` goes to replica
    /// `i mod n`, so the shares differ by at most one micro-batch.
    pub fn assign(&self, micro_batches: usize) -> Vec<Vec<usize>> {
        let n = self.replicas();
        (0..n)
            .map(|r| (r..micro_batches).step_by(n).collect())
            .collect()
    }

    /// The sum of one tensor per replica (`shares[r]` on replica r's device), on every
    /// replica's device.
    pub fn sum<const D: usize>(&self, shares: Vec<Tensor<D>>) -> Vec<Tensor<D>> {
        assert_eq!(shares.len(), self.replicas(), "one share per replica");
        match self.exchange {
            Exchange::Collective => {
                // Every rank's all_reduce is queued before any is awaited, as Burn's own
                // gradient-sync server does: awaiting one rank first would wait on the others.
                let pending: Vec<CollectiveTensor<D>> = shares
                    .into_iter()
                    .map(|share| all_reduce(share, ReduceOperation::Sum, self.devices.clone()))
                    .collect();
                pending.into_iter().map(CollectiveTensor::resolve).collect()
            }
            Exchange::DeviceCopy => {
                let first = &self.devices[0];
                let total = shares
                    .into_iter()
                    .map(|share| share.to_device(first))
                    .reduce(|sum, share| sum + share)
                    .expect("at least one replica");
                self.devices
                    .iter()
                    .map(|device| total.clone().to_device(device))
                    .collect()
            }
        }
    }

    /// Each task's gradients, losses and samples summed over the replicas: `shares[r][t]` is
    /// replica r's part of task t (gradients and loss already weighted by its samples over the
    /// window's). Returns, for every replica, the whole window's tasks on its device.
    /// `model` is any replica's model (the replicas share parameter ids).
    pub fn sum_tasks<M: Module>(
        &self,
        model: &M,
        shares: Vec<Vec<TaskGradients>>,
    ) -> Result<Vec<Vec<TaskGradients>>> {
        if shares.len() != self.replicas() {
            return Err(GemsError::InvalidStep(format!(
                "{} replica(s) but {} share(s) of gradients",
                self.replicas(),
                shares.len()
            )));
        }
        let tasks = shares[0].len();
        if let Some((r, share)) = shares.iter().enumerate().find(|(_, s)| s.len() != tasks) {
            return Err(GemsError::InvalidStep(format!(
                "replica 0 has {tasks} task(s), replica {r} has {}",
                share.len()
            )));
        }
        let mut by_task: Vec<Vec<TaskGradients>> = (0..tasks).map(|_| Vec::new()).collect();
        for share in shares {
            for (t, task) in share.into_iter().enumerate() {
                by_task[t].push(task);
            }
        }
        let mut summed: Vec<Vec<TaskGradients>> =
            (0..self.replicas()).map(|_| Vec::new()).collect();
        for parts in by_task {
            let loss = parts.iter().map(|p| p.loss).sum::<f64>();
            let samples = parts.iter().map(|p| p.samples).sum::<usize>();
            let mut summer = GradientSummer {
                parallel: self,
                shares: parts.into_iter().map(|p| p.gradients).collect(),
                sums: (0..self.replicas())
                    .map(|_| GradientsParams::new())
                    .collect(),
            };
            model.visit(&mut summer);
            for (replica, gradients) in summed.iter_mut().zip(summer.sums) {
                replica.push(TaskGradients {
                    gradients,
                    loss,
                    samples,
                });
            }
        }
        Ok(summed)
    }

    /// One GEMS step on every replica (model and optimizer, in device order) from the
    /// replicas' shares of each task (see [`sum_tasks`](Self::sum_tasks)). Returns the first
    /// replica's report. On error the models are unchanged, but the optimizers may have stepped
    /// unequally: the run must stop (and resume from its last checkpoint).
    pub fn step<M: Module>(
        &self,
        learning_rate: f64,
        mut replicas: Vec<(&mut M, &mut GemsOptimizer)>,
        shares: Vec<Vec<TaskGradients>>,
    ) -> Result<StepReport> {
        if replicas.len() != self.replicas() {
            return Err(GemsError::InvalidStep(format!(
                "{} device(s) but {} replica(s)",
                self.replicas(),
                replicas.len()
            )));
        }
        let summed = self.sum_tasks(&*replicas[0].0, shares)?;
        let mut updated = Vec::with_capacity(replicas.len());
        let mut first = None;
        for ((model, optimizer), tasks) in replicas.iter_mut().zip(summed) {
            let (next, report) = optimizer.step(learning_rate, (**model).clone(), tasks)?;
            updated.push(next);
            first.get_or_insert(report);
        }
        for ((model, _), next) in replicas.into_iter().zip(updated) {
            *model = next;
        }
        Ok(first.expect("at least one replica"))
    }

    /// The knowledge covariances of every replica's share of the corpus summed into one
    /// accumulator per replica (on its device), so that each builds the same null space.
    pub fn sum_covariances(
        &self,
        shares: Vec<CovarianceAccumulator>,
    ) -> Result<Vec<CovarianceAccumulator>> {
        if shares.len() != self.replicas() {
            return Err(GemsError::InvalidConfig(format!(
                "{} replica(s) but {} covariance share(s)",
                self.replicas(),
                shares.len()
            )));
        }
        if let Some(mismatch) = shares.iter().find_map(CovarianceAccumulator::mismatch) {
            return Err(GemsError::InvalidConfig(format!(
                "knowledge inputs: {mismatch}"
            )));
        }
        if shares.len() == 1 {
            // Nothing to sum: the one share keeps its own form (the rows themselves while they
            // are fewer than the inputs), so one replica builds exactly the plain bases.
            return Ok(shares);
        }
        let mut paths: Vec<String> = shares.iter().flat_map(|s| s.paths().cloned()).collect();
        paths.sort();
        paths.dedup();
        let mut summed: Vec<CovarianceAccumulator> = (0..self.replicas())
            .map(|_| CovarianceAccumulator::new())
            .collect();
        for path in paths {
            let grams: Vec<Option<(Tensor<2>, u64)>> =
                shares.iter().map(|share| share.gram(&path)).collect();
            let mut widths: Vec<usize> = grams.iter().flatten().map(|(g, _)| g.dims()[0]).collect();
            widths.dedup();
            if widths.len() > 1 {
                return Err(GemsError::InvalidConfig(format!(
                    "knowledge inputs: the replicas observed `{path}` with inputs of widths {widths:?}"
                )));
            }
            let shape = grams
                .iter()
                .flatten()
                .map(|(sum, _)| sum.shape())
                .next()
                .expect("the path was observed by some replica");
            let rows = grams.iter().flatten().map(|(_, rows)| rows).sum::<u64>();
            // A replica that saw none of this weight's inputs adds zeros: a collective needs
            // every rank.
            let parts = grams
                .into_iter()
                .zip(&self.devices)
                .map(|(gram, device)| match gram {
                    Some((sum, _)) => sum.to_device(device),
                    None => Tensor::zeros(shape.clone(), device),
                })
                .collect();
            for (accumulator, sum) in summed.iter_mut().zip(self.sum(parts)) {
                accumulator.insert_gram(&path, sum, rows);
            }
        }
        Ok(summed)
    }
}

/// Walks a replica's model and sums each parameter's gradient over the replicas.
struct GradientSummer<'a> {
    parallel: &'a DataParallel,
    shares: Vec<GradientsParams>,
    sums: Vec<GradientsParams>,
}

impl ModuleVisitor for GradientSummer<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let parts: Vec<Option<Tensor<D>>> = self
            .shares
            .iter_mut()
            .map(|share| share.remove::<D>(param.id))
            .collect();
        if parts.iter().all(Option::is_none) {
            return;
        }
        // A replica without this gradient (no sample of the task in its share) adds zeros: a
        // collective needs every rank.
        let shape = param.lazy_shape();
        let parts = parts
            .into_iter()
            .zip(self.parallel.devices())
            .map(|(part, device)| part.unwrap_or_else(|| Tensor::zeros(shape.clone(), device)))
            .collect();
        for (sums, total) in self.sums.iter_mut().zip(self.parallel.sum(parts)) {
            sums.register(param.id, total);
        }
    }
}
