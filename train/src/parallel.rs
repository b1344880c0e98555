//! Data-parallel training on Burn's collective operations (`burn-collective`).
//!
//! Every peer holds the whole model and reads the whole data set; every global batch is split
//! into one contiguous slice of samples per peer (a sample's router rank travels with it).
//! Each peer computes the gradients of its slice, weighted by its share of the batch's loss
//! targets, so that their **sum** is the gradient of the whole batch; the trainable
//! parameters' gradients are summed over the peers with `all_reduce` before clipping and the
//! optimizer step, which every peer then applies identically: the adapters stay equal on every
//! peer without ever being sent. Random draws (batch order, DyLoRA's rank, dropout seeds)
//! derive from `(seed, step)`, which every peer shares, so the global batch, the ranks and
//! a resume are defined independently of the number of peers. Peer 0 alone writes
//! checkpoints, `metrics.jsonl`, `run.json` and the progress bar.
//!
//! Peers on one machine ([`DataParallel::local`]) are threads of one process, one per device
//! (GPUs, or CPU peers for testing); peers on several machines
//! ([`DataParallel::multi_node`]) meet through burn-collective's global orchestrator, which
//! one machine runs (`cargo xtask orchestrator`), and exchange tensors peer to peer.
//!
//! Burn's collective calls block until every peer has made the same call; a peer that died
//! would leave the others waiting forever. Every collective call here therefore runs under a
//! watchdog: when the peers have not all arrived within [`DataParallel::timeout`], the run
//! ends with [`TrainError::Peer`] naming the operation and the step, before anything of that
//! step is written.

use std::sync::mpsc;
use std::time::Duration;

use burn::collective::{self, CollectiveConfig, PeerId, ReduceOperation};
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};

use crate::error::{Result, TrainError};

/// This process's part in data-parallel training: which peer it is, among how many.
#[derive(Clone, Debug)]
pub struct DataParallel {
    /// This peer's index among all peers of all nodes (0 writes checkpoints and metrics).
    pub rank: usize,
    /// Peers in all (all nodes).
    pub world: usize,
    /// How long a collective call waits for the other peers before the run fails.
    pub timeout: Duration,
    /// Machines in the run (1: every peer is a thread of this process).
    pub nodes: usize,
    config: CollectiveConfig,
}

/// Where the peers of a multi-node run meet.
#[derive(Clone, Debug)]
pub struct NodeSetup {
    /// Machines in the run.
    pub nodes: usize,
    /// This machine's index (0-based).
    pub node_rank: usize,
    /// Peers (devices) per machine; the same on every machine.
    pub peers_per_node: usize,
    /// The global orchestrator's WebSocket address, e.g. `ws://10.0.0.1:3000`.
    pub orchestrator: String,
    /// This machine's address as the other machines reach it, e.g. `ws://10.0.0.2:3001`.
    pub node_address: String,
    /// The port of this machine's tensor data service (the port of `node_address`).
    pub data_port: u16,
}

/// The default wait for the other peers (a step of a large model on a slow peer stays well
/// under it; a dead peer is reported after it).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

impl DataParallel {
    /// Peer `rank` of `world` peers on this machine.
    pub fn local(rank: usize, world: usize) -> Result<Self> {
        if world == 0 || rank >= world {
            return Err(TrainError::Config {
                key: "devices".into(),
                message: format!("peer {rank} of {world}: need 0 <= peer < devices, devices >= 1"),
            });
        }
        Ok(Self {
            rank,
            world,
            timeout: DEFAULT_TIMEOUT,
            nodes: 1,
            config: CollectiveConfig::default().with_num_devices(world),
        })
    }

    /// Local peer `local_rank` of the machine `setup.node_rank` in a multi-node run.
    pub fn multi_node(local_rank: usize, setup: &NodeSetup) -> Result<Self> {
        let bad = |key: &str, message: String| TrainError::Config {
            key: key.into(),
            message,
        };
        if setup.nodes == 0 || setup.node_rank >= setup.nodes {
            return Err(bad(
                "node_rank",
                format!(
                    "node {} of {}: need 0 <= node_rank < nodes",
                    setup.node_rank, setup.nodes
                ),
            ));
        }
        if setup.peers_per_node == 0 || local_rank >= setup.peers_per_node {
            return Err(bad(
                "devices",
                format!(
                    "peer {local_rank} of {} per node: need 0 <= peer < devices",
                    setup.peers_per_node
                ),
            ));
        }
        let address = |key: &str, text: &str| {
            text.parse()
                .map_err(|e| bad(key, format!("{text:?} is not an address ({e:?})")))
        };
        let config = CollectiveConfig::default()
            .with_num_devices(setup.peers_per_node)
            .with_num_nodes(setup.nodes as u32)
            .with_global_address(address("orchestrator", &setup.orchestrator)?)
            .with_node_address(address("node_address", &setup.node_address)?)
            // burn-collective's defaults: a ring all-reduce between nodes, a tree within one.
            .with_data_service_port(setup.data_port);
        Ok(Self {
            rank: setup.node_rank * setup.peers_per_node + local_rank,
            world: setup.nodes * setup.peers_per_node,
            timeout: DEFAULT_TIMEOUT,
            nodes: setup.nodes,
            config,
        })
    }

    /// With another wait for the other peers.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The most optimizer steps one launch of this run can take: unlimited on one machine; one
    /// across machines, because burn-collective 0.21's global all-reduce completes only once per
    /// registration (its node-level sync never clears the list of peers that synced, so the
    /// second call waits forever; `docs/upstream/collective-sync-bug.md`).
    pub fn max_steps_per_launch(&self) -> Option<usize> {
        (self.nodes > 1).then_some(1)
    }

    /// Whether this peer writes checkpoints, metrics and progress.
    pub fn is_leader(&self) -> bool {
        self.rank == 0
    }

    fn id(&self) -> PeerId {
        PeerId(self.rank as u32)
    }

    /// Joins the collective on `device`: every peer calls this once before training.
    pub fn register<B: AutodiffBackend>(&self, device: &B::Device) -> Result<()> {
        let (id, device, config) = (self.id(), device.clone(), self.config.clone());
        self.guarded("register", None, move || {
            collective::register::<B::InnerBackend>(id, device, config)
        })
    }

    /// Leaves the collective (every peer, after its last step).
    pub fn finish<B: AutodiffBackend>(&self) -> Result<()> {
        let id = self.id();
        self.guarded("finish", None, move || {
            collective::finish_collective::<B::InnerBackend>(id)
        })
    }

    /// The samples of a batch of `n` this peer computes: a contiguous slice, the peers' slices
    /// covering the batch in order (a peer may get none when `n < world`).
    pub fn slice(&self, n: usize) -> std::ops::Range<usize> {
        self.rank * n / self.world..(self.rank + 1) * n / self.world
    }

    /// Runs one collective call on a helper thread and waits at most [`Self::timeout`]: Burn's
    /// calls block until every peer arrives, so a dead peer must not hang this one forever.
    fn guarded<T: Send + 'static>(
        &self,
        what: &str,
        step: Option<usize>,
        call: impl FnOnce() -> std::result::Result<T, collective::CollectiveError> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("collective-{what}"))
            .spawn(move || {
                let _ = tx.send(call());
            })
            .map_err(|e| TrainError::Model(format!("starting the collective thread: {e}")))?;
        let at = step.map_or(String::new(), |s| format!(" at step {}", s + 1));
        match rx.recv_timeout(self.timeout) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(TrainError::Peer {
                peer: self.rank,
                message: format!("{what}{at}: burn-collective: {e:?}"),
            }),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(TrainError::Peer {
                peer: self.rank,
                message: format!(
                    "{what}{at}: the other {} peer(s) did not all arrive within {} s: a peer died \
                     or cannot be reached",
                    self.world - 1,
                    self.timeout.as_secs()
                ),
            }),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(TrainError::Peer {
                peer: self.rank,
                message: format!("{what}{at}: the collective call panicked"),
            }),
        }
    }

    fn all_reduce_flat<B: AutodiffBackend>(
        &self,
        t: Tensor<B::InnerBackend, 1>,
        what: &str,
        step: usize,
    ) -> Result<Tensor<B::InnerBackend, 1>> {
        let id = self.id();
        let primitive = t.into_primitive().tensor();
        let out = self.guarded(what, Some(step), move || {
            collective::all_reduce::<B::InnerBackend>(id, primitive, ReduceOperation::Sum)
        })?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(out)))
    }

    /// Sums the step's statistics (`stats`) and the trainable parameters' gradients over the
    /// peers in **one** collective call: a flat vector `[stats, presence flags, gradients]` in
    /// the model's parameter order (the same on every peer). One call per step keeps the
    /// latency of a multi-node step to one ring pass (burn-collective 0.21's global ring also
    /// hangs when many small all-reduces follow each other; see ARCHITECTURE.md). A peer
    /// without a gradient for a parameter (its slice of the batch was empty, or the parameter
    /// was not used by its samples) sends zeros and a 0 flag; a parameter no peer has a
    /// gradient for stays without one, as in a single process (the optimizer leaves it alone).
    ///
    /// The flat vector holds one more copy of the trainable gradients while it is reduced.
    pub fn all_reduce_step<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        model: &M,
        grads: GradientsParams,
        stats: &[f64],
        device: &B::Device,
        step: usize,
    ) -> Result<(GradientsParams, Vec<f64>)> {
        let mut pack = Pack::<B> {
            grads,
            flags: Vec::new(),
            parts: Vec::new(),
        };
        model.visit(&mut pack);
        let Pack {
            grads,
            flags,
            parts,
        } = pack;
        // A leading 1 per peer: the sum counts the peers that took part. burn-collective
        // completes an all-reduce with the peers still registered, so a peer that left (ended
        // early, or finished) would otherwise silently shrink the batch.
        let head: Vec<f32> = std::iter::once(1.0)
            .chain(stats.iter().map(|&v| v as f32))
            .chain(flags.iter().map(|&f| f as u8 as f32))
            .collect();
        let head_len = head.len();
        let mut all = vec![Tensor::<B::InnerBackend, 1>::from_data(
            TensorData::new(head, [head_len]),
            device,
        )];
        all.extend(parts);
        let flat = Tensor::cat(all, 0);
        // On failure the process's collective state is reset: the run is over for this peer,
        // and a later run in the same process (a library user retrying) starts clean.
        let abandon = |e: TrainError| {
            collective::reset_collective::<B::InnerBackend>();
            Err(e)
        };
        let summed = match self.all_reduce_flat::<B>(flat, "all-reduce of the gradients", step) {
            Ok(summed) => summed,
            Err(e) => return abandon(e),
        };
        let head: Vec<f32> = summed
            .clone()
            .slice(0..head_len)
            .into_data()
            .iter::<f32>()
            .collect();
        let took_part = head[0].round() as usize;
        if took_part != self.world {
            return abandon(TrainError::Peer {
                peer: self.rank,
                message: format!(
                    "all-reduce of the gradients at step {}: {took_part} of {} peers took part: \
                     a peer left the run (it ended early or failed)",
                    step + 1,
                    self.world
                ),
            });
        }
        let (stats_sum, flags_sum) = head[1..].split_at(stats.len());
        let mut unpack = Unpack::<B> {
            grads,
            flat: summed,
            offset: head_len,
            anywhere: flags_sum.iter().map(|&n| n > 0.0).collect(),
            next: 0,
        };
        model.visit(&mut unpack);
        Ok((unpack.grads, stats_sum.iter().map(|&v| v as f64).collect()))
    }
}

/// Gathers this peer's gradients, flattened, in the model's parameter order.
struct Pack<B: AutodiffBackend> {
    grads: GradientsParams,
    flags: Vec<bool>,
    parts: Vec<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Pack<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        if !value.is_require_grad() {
            return;
        }
        let n = value.shape().num_elements();
        let grad = self.grads.remove::<B::InnerBackend, D>(param.id);
        self.flags.push(grad.is_some());
        let grad = grad.unwrap_or_else(|| value.inner().zeros_like());
        self.parts.push(grad.reshape([n]));
    }
}

/// Puts the summed gradients back, in the same order.
struct Unpack<B: AutodiffBackend> {
    grads: GradientsParams,
    flat: Tensor<B::InnerBackend, 1>,
    offset: usize,
    anywhere: Vec<bool>,
    next: usize,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Unpack<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        if !value.is_require_grad() {
            return;
        }
        let dims: [usize; D] = value.dims();
        let n = value.shape().num_elements();
        let range = self.offset..self.offset + n;
        self.offset += n;
        let i = self.next;
        self.next += 1;
        if self.anywhere.get(i).copied().unwrap_or(false) {
            let g = self.flat.clone().slice(range).reshape(dims);
            self.grads.register(param.id, g);
        }
    }
}
