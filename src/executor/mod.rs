//! The executor: the only part of petrel that touches the host.
//!
//! It is driven only by messages (DESIGN.md, "The executor boundary"): an
//! [`Authorized`](crate::auth::Authorized) request plus, where the command has one, an
//! input stream, answered with output frames ([`api`]). It owns the resource trie and
//! re-checks every policy itself with the pure core ([`crate::resources`]), runs tenders,
//! creates taps, writes files — all under the state directory — and persists its state
//! before it replies.
//!
//! - [`Executor`]: start-up (restore and crash recovery), request handling, shutdown,
//!   the event stream;
//! - [`unikernel`]: create, force-create, destroy, restart, info, get;
//! - block device commands (policy and in-use checks, provenance) on the files of
//!   [`block`]; console subscriptions on the buffers of [`console`];
//! - supervision: exits, restart on failure with a back-off, the `--name` fallback;
//! - [`persist`]: the state directory, petrel's records, run records, reconciliation;
//! - [`revoke`]: CRL uploads, operator CRLs, and what happens to revoked work;
//! - [`image`]: images streamed to disk, hashed, inflated with a bound;
//! - [`host`]: the root policy (the host's resources);
//! - [`events`]: the event stream;
//! - [`stats`]: statistics sampling and subscriptions;
//! - host primitives, each small and testable on its own: [`net`] (taps, bridges),
//!   [`manifest`] (solo5 notes), [`mac`], [`tender`] (command line, spawning, signals),
//!   [`cgroup`] (per-unikernel isolation), [`console_lines`].
//!
//! The state directory's layout is documented in `docs/state-directory.md`.

pub mod api;
pub mod block;
mod blockdev;
pub mod cgroup;
pub mod console;
pub mod console_lines;
mod dispatch;
pub mod events;
pub mod host;
pub mod image;
pub mod mac;
pub mod manifest;
pub mod net;
pub mod persist;
pub mod revoke;
mod startup;
mod state;
pub mod stats;
mod supervise;
pub mod tender;
pub mod unikernel;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::codec::DecodeError;
use crate::limits::Limits;
use crate::name::{Name, Path};
use crate::resources::{PolicyError, Usage};
use crate::revocation::SharedRevocations;
use crate::store::StoreError;
use api::{ExecRequest, Handler, OutputReceiver};
pub use blockdev::BlockCommandError;
use cgroup::{Cgroup, Cgroups};
pub use events::{Event, EventStream, Received};
pub use revoke::{ReloadSummary, RevocationSetup};
use state::Inner;
use stats::StatsRound;
pub use supervise::{ADD_NAME_FALLBACK_CODE, backoff, next_attempt, restart_config};
pub use unikernel::UnikernelError;

/// What to do with running work when a certificate that created it is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnRevoke {
    /// Destroy the unikernels and block devices, remove the policies (default).
    #[default]
    Destroy,
    /// Keep running work; only block future access.
    Keep,
}

/// Host resources overriding what is discovered at start-up (the root policy).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostOverrides {
    /// CPU ids unikernels may use.
    pub cpuids: Option<BTreeSet<i64>>,
    /// Memory in MB.
    pub memory: Option<i64>,
    /// Block storage in MB.
    pub block: Option<i64>,
    /// Bridges.
    pub bridges: Option<BTreeSet<String>>,
}

/// How the executor is set up.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// The state directory; everything the executor writes lives below it.
    pub state_dir: PathBuf,
    /// The solo5-hvt compatible tender (`--tender`), a path or a name looked up in PATH.
    pub tender: PathBuf,
    /// Limits.
    pub limits: Limits,
    /// Host resource overrides.
    pub host: HostOverrides,
    /// Revocation consequences.
    pub on_revoke: OnRevoke,
}

/// Why the executor could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// A file or directory of the state directory.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The state file does not parse: petrel refuses to start rather than lose it.
    #[error("cannot parse the state file {}: {source}", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<DecodeError>,
    },
    /// petrel's records are damaged.
    #[error(transparent)]
    Records(#[from] persist::RecordsError),
    /// Cleaning up after a previous run failed.
    #[error(transparent)]
    Reconcile(#[from] persist::ReconcileError),
    /// The host's resources could not be discovered.
    #[error(transparent)]
    Host(#[from] host::HostError),
    /// Another process uses the state directory.
    #[error(transparent)]
    Lock(#[from] persist::LockError),
    /// The block directory could not be opened.
    #[error(transparent)]
    Block(#[from] block::BlockError),
    /// An uploaded CRL in the state directory does not parse or verify: petrel refuses
    /// to start rather than forget a revocation.
    #[error("stored CRL {}: {reason}", path.display())]
    Crl {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A stored policy does not fit the stored policies above or below it (the host, the
    /// root policy, is not checked at start-up: see `Resources::restore_stored_policy`).
    #[error("the stored policy {path} cannot be restored: {source}")]
    Policy {
        /// Its path.
        path: Name,
        /// Why.
        source: Box<PolicyError>,
    },
}

/// The executor: owns the resource trie and everything on the host. Cheap to clone.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

impl Executor {
    /// Cleans up after a previous run, restores the state directory and every unikernel
    /// it records, then accepts requests. Must be called inside a tokio runtime; tenders
    /// are spawned from its worker threads and die with them (see
    /// [`tender::spawn_tender`]).
    pub async fn start(
        config: ExecutorConfig,
        network: Arc<dyn net::Network>,
        tender: Arc<dyn tender::Tender>,
    ) -> Result<Self, ExecError> {
        Self::start_full(
            config,
            network,
            tender,
            RevocationSetup::default(),
            Cgroups::disabled(),
        )
        .await
    }

    /// [`Executor::start`] with the trust anchors and operator CRL files revocation
    /// needs: the CRLs are loaded before anything is restored, and (with
    /// [`OnRevoke::Destroy`]) nothing a revoked chain created is restored.
    pub async fn start_with(
        config: ExecutorConfig,
        network: Arc<dyn net::Network>,
        tender: Arc<dyn tender::Tender>,
        revocation: RevocationSetup,
    ) -> Result<Self, ExecError> {
        Self::start_full(config, network, tender, revocation, Cgroups::disabled()).await
    }

    /// [`Executor::start`], each tender in a cgroup of its own in `cgroups` (see
    /// [`cgroup`]); groups left empty by a previous run are removed first.
    pub async fn start_with_cgroups(
        config: ExecutorConfig,
        network: Arc<dyn net::Network>,
        tender: Arc<dyn tender::Tender>,
        cgroups: Cgroups,
    ) -> Result<Self, ExecError> {
        Self::start_full(config, network, tender, RevocationSetup::default(), cgroups).await
    }

    /// [`Executor::start`] with both the revocation set-up and the cgroups.
    pub async fn start_full(
        config: ExecutorConfig,
        network: Arc<dyn net::Network>,
        tender: Arc<dyn tender::Tender>,
        revocation: RevocationSetup,
        cgroups: Cgroups,
    ) -> Result<Self, ExecError> {
        let inner = startup::start(config, network, tender, revocation, cgroups).await?;
        Ok(Self { inner })
    }

    /// The revocation store the executor publishes: hand it to the TLS side
    /// ([`crate::server::Server::new`]) so that every new connection is checked against
    /// the CRLs in force.
    pub fn revocations(&self) -> Arc<SharedRevocations> {
        self.inner.revocation.shared()
    }

    /// The number of certificates newly revoked (by uploads and operator CRLs) since
    /// start-up.
    pub fn revocations_applied(&self) -> u64 {
        self.inner.revocation.applied()
    }

    /// Reads the operator CRLs again (SIGHUP) and applies what became revoked; new
    /// connections see the result at once, open connections are not touched (except
    /// console subscriptions of revoked chains, which are closed).
    pub async fn reload_crls(&self) -> ReloadSummary {
        self.inner.reload_crls().await
    }

    /// Stops every tender (SIGTERM, then SIGKILL after the stop timeout), removes the
    /// taps, and keeps the state file so that the next start restores them. Operations in
    /// progress are finished first; later requests are refused. Finally the state
    /// directory's lock is released: a new executor may then start on it.
    pub async fn shutdown(&self) {
        let names: Vec<Name> = {
            let mut global = self.inner.global();
            global.shutting_down = true;
            for pending in global.pending.values() {
                pending.cancel();
            }
            global.pending.clear();
            global.running.keys().cloned().collect()
        };
        self.inner.quiesce().await;
        let names: BTreeSet<Name> = names
            .into_iter()
            .chain(self.inner.global().running.keys().cloned())
            .collect();
        let mut stops = tokio::task::JoinSet::new();
        for name in names {
            let inner = Arc::clone(&self.inner);
            stops.spawn(async move { inner.stop(&name).await });
        }
        while stops.join_next().await.is_some() {}
        self.inner.stats.0.close();
        self.inner.cgroups.release();
        self.inner.release().await;
    }

    /// Subscribes to the executor's events (started, exited, restarts, destroyed, …).
    pub fn events(&self) -> EventStream {
        self.inner.events.subscribe()
    }

    /// The resources used in the subtree of `path` (running unikernels and creates in
    /// progress, block devices).
    pub fn usage(&self, path: &Path) -> Usage {
        self.inner.global().resources.usage(path)
    }

    /// The state directory.
    pub fn state_dir(&self) -> &persist::StateDir {
        &self.inner.dir
    }

    /// How many unikernels run now.
    pub fn running(&self) -> usize {
        self.inner.global().running.len()
    }

    /// The cgroup `name` runs in, if it runs in one.
    pub fn cgroup(&self, name: &Name) -> Option<Cgroup> {
        self.inner
            .global()
            .running
            .get(name)
            .and_then(|i| i.cgroup.clone())
    }

    /// The cgroups tenders run in.
    pub fn cgroups(&self) -> &Cgroups {
        &self.inner.cgroups
    }

    /// The latest statistics round, if one was taken (see [`stats`]).
    pub fn statistics(&self) -> Option<Arc<StatsRound>> {
        self.inner.stats.0.latest()
    }

    /// With `true`, statistics are sampled every interval whether anybody subscribes or
    /// not (for the metrics exporter); with `false`, only for subscribers.
    pub fn sample_continuously(&self, on: bool) {
        self.inner.stats.0.set_always(on);
    }
}

impl Handler for Executor {
    fn handle(&self, request: ExecRequest) -> OutputReceiver {
        let (tx, rx) = mpsc::channel(api::CHANNEL_DEPTH);
        tokio::spawn(Arc::clone(&self.inner).handle(request, tx));
        rx
    }
}
