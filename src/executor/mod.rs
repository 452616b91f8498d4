//! The executor: the only part of petrel that touches the host.
//!
//! For now this holds the host-side primitives the executor proper (dispatch,
//! supervision, state) is built on. Each is small, typed and testable on its own:
//!
//! - [`net`]: tap devices attached to bridges, behind the [`net::Network`] trait
//!   (ioctls on `/dev/net/tun` and sockets, sysfs reads; a recording fake for tests);
//! - [`manifest`]: the solo5 ABI and manifest notes of a unikernel ELF image, read with a
//!   bounded, total reader, and the manifest check against the configured devices;
//! - [`mac`]: the deterministic MAC address of a unikernel's network device;
//! - [`tender`]: the solo5-hvt command line, spawning and signalling tender processes
//!   behind the [`tender::Tender`] trait, exit classification and the restart table;
//! - [`console_lines`]: splitting a tender's console output into lines (pure).
//!
//! The boundary rules of `DESIGN.md` ("The executor boundary") apply to what is built on
//! top: the executor is driven by messages only, never by references into the server.

pub mod api;
pub mod block;
pub mod console;
pub mod console_lines;
pub mod mac;
pub mod manifest;
pub mod net;
pub mod tender;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::codec::Payload;
use crate::limits::Limits;
use api::{ExecRequest, Handler, OutputFrame, OutputReceiver};

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
    pub cpuids: Option<std::collections::BTreeSet<i64>>,
    /// Memory in MB.
    pub memory: Option<i64>,
    /// Block storage in MB.
    pub block: Option<i64>,
    /// Bridges.
    pub bridges: Option<std::collections::BTreeSet<String>>,
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

/// Errors starting or running the executor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// Not implemented yet.
    #[error("not implemented")]
    NotImplemented,
}

/// The executor: owns the resource trie and everything on the host. Cheap to clone.
#[derive(Clone)]
pub struct Executor {
    _network: Arc<dyn net::Network>,
    _tender: Arc<dyn tender::Tender>,
}

impl Executor {
    /// Restores the state directory and every unikernel it records, then accepts
    /// requests.
    pub async fn start(
        _config: ExecutorConfig,
        network: Arc<dyn net::Network>,
        tender: Arc<dyn tender::Tender>,
    ) -> Result<Self, ExecError> {
        Ok(Self {
            _network: network,
            _tender: tender,
        })
    }

    /// Stops every tender (SIGTERM, then SIGKILL after the stop timeout), removes the
    /// taps, and keeps the state file so that the next start restores them.
    pub async fn shutdown(&self) {}
}

impl Handler for Executor {
    fn handle(&self, request: ExecRequest) -> OutputReceiver {
        let (tx, rx) = mpsc::channel(api::CHANNEL_DEPTH);
        let name = request.request.get().name.clone();
        let _ = tx.try_send(OutputFrame {
            name,
            payload: Payload::failure("not implemented"),
        });
        rx
    }
}
