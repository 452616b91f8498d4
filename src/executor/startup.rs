//! Start-up (`spec/unikernel-and-executor.md` §12, DESIGN.md item 6, Note E4):
//!
//! 1. create the state directory (mode 0700), take its lock (one executor per
//!    directory) and clean up after a previous instance:
//!    kill tenders its run records show still running, remove their taps and unused
//!    taps, empty `tmp/` ([`persist::reconcile`]), then remove the cgroups they leave
//!    empty ([`Cgroups::reconcile`]);
//! 2. read petrel's records and the state file (absent: empty; unparsable: refuse to
//!    start), copy the state file to `state.started`; read the uploaded CRLs (one that
//!    does not verify refuses start-up) and the operator CRLs: with `--on-revoke
//!    destroy`, unikernels, block devices and policies created or installed through a
//!    revoked certificate are not restored (they are dropped from the state);
//! 3. import: images embedded in the state file (albatross's files, any version the
//!    codec reads) are extracted to `images/` and the state rewritten without them;
//! 4. register the block device files, discover the root policy (the host), then insert
//!    the stored policies in trie pre-order with the full checks: a policy that no longer
//!    fits refuses start-up naming it;
//! 5. re-create every unikernel in start-up priority order (ties: file order), one after
//!    another, each persisted; those not tried yet stay in the state file until they are
//!    (E4); one that fails to start is logged, reported as an event and dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::codec::{self, DEFAULT_STARTUP, State, UnikernelConfig};
use crate::executor::block::BlockStore;
use crate::executor::cgroup::Cgroups;
use crate::executor::events::Event;
use crate::executor::image;
use crate::executor::net::Network;
use crate::executor::persist::{self, Affected, FILE_MODE, MAX_STATE_SIZE, Records, StateDir};
use crate::executor::revoke::{self, Revocation, RevocationSetup};
use crate::executor::state::{Global, Inner, Parts};
use crate::executor::stats::{self, Sources};
use crate::executor::tender::Tender;
use crate::executor::unikernel::Launch;
use crate::executor::{ExecError, ExecutorConfig, OnRevoke, host};
use crate::name::{Name, Path};
use crate::resources::Resources;
use crate::store;

/// Brings the executor up (see the module documentation).
pub(crate) async fn start(
    config: ExecutorConfig,
    network: Arc<dyn Network>,
    tender: Arc<dyn Tender>,
    setup: RevocationSetup,
    cgroups: Cgroups,
) -> Result<Arc<Inner>, ExecError> {
    let dir = StateDir::new(config.state_dir.clone());
    dir.create()?;
    let lock = dir.lock_waiting().await?;
    let leftovers = persist::reconcile(&dir, network.as_ref()).await?;
    if leftovers != persist::Leftovers::default() {
        tracing::warn!(?leftovers, "cleaned up after a previous run");
    }
    match cgroups.reconcile() {
        Ok(removed) if removed.is_empty() => {}
        Ok(removed) => tracing::warn!(?removed, "removed cgroups left over from a previous run"),
        Err(e) => tracing::warn!(error = %e, "could not clean up leftover cgroups"),
    }
    let mut records = Records::load(&dir.records_file())?;
    let mut state = read_state(&dir)?;
    extract_images(&dir, &mut state, config.limits.max_image_size).await;
    let crls = revoke::load(
        &dir,
        &setup,
        &records,
        config.limits.max_crl_size,
        time::OffsetDateTime::now_utc(),
    )?;
    // What revoked chains created is not restored (unless work is kept).
    let revoked = match config.on_revoke {
        OnRevoke::Destroy => records.affected_by(&crls.book.store().revoked_ids()),
        OnRevoke::Keep => Affected::default(),
    };
    if !revoked.is_empty() {
        tracing::warn!(
            unikernels = ?revoked.unikernels.iter().map(Name::text).collect::<Vec<_>>(),
            blocks = ?revoked.blocks.iter().map(Name::text).collect::<Vec<_>>(),
            policies = ?revoked.policies.iter().map(|p| Name::of_path(p.clone()).text()).collect::<Vec<_>>(),
            "created or installed through revoked certificates: not restored"
        );
    }

    let (blocks, devices) = BlockStore::open(dir.block())?;
    let root = host::root_policy(&dir.block(), network.as_ref(), &config.host)?;
    let mut resources = Resources::new(root);
    for (name, size_mb) in devices {
        if revoked.blocks.contains(&name) {
            if let Err(e) = blocks.remove(&name) {
                tracing::error!(%name, error = %e, "could not remove a revoked block device");
            }
            continue;
        }
        // Only the root policy is in place yet: this fails only if the host's block
        // storage is smaller than the devices (overridden, or the disk shrank).
        if let Err(e) = resources.insert_block(&name, size_mb) {
            tracing::warn!(%name, error = %e, "block device not registered");
        }
    }
    let mut policies = State {
        unikernels: Vec::new(),
        policies: state.policies.clone(),
    };
    policies.sort();
    for entry in &policies.policies {
        let path = policy_path(&entry.name);
        if path.is_root() || revoked.policies.contains(&path) {
            continue;
        }
        let beyond_host = resources
            .restore_stored_policy(&path, entry.value.clone())
            .map_err(|source| ExecError::Policy {
                path: Name::of_path(path.clone()),
                source: Box::new(source),
            })?;
        if let Some(exceeded) = beyond_host {
            // Kept: the host is still enforced on every create below it.
            tracing::warn!(%path, %exceeded, "stored policy exceeds this host's resources");
        }
    }

    let mut order: Vec<(Name, UnikernelConfig)> = state
        .unikernels
        .iter()
        .filter(|e| !revoked.unikernels.contains(&e.name))
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();
    // A stable sort: equal priorities keep the state file's order.
    order.sort_by_key(|(_, config)| config.startup.unwrap_or(DEFAULT_STARTUP));
    let keep: BTreeSet<_> = order
        .iter()
        .filter_map(|(name, _)| dir.image(name).ok())
        .collect();
    for removed in persist::remove_unreferenced_images(&dir, &keep)? {
        tracing::warn!(image = %removed.display(), "removed an image no unikernel refers to");
    }
    let unikernel_names = order.iter().map(|(name, _)| name.text()).collect();
    let policy_names = resources
        .policies_below(&Path::root())
        .iter()
        .map(|(name, _)| name.text())
        .collect();
    let block_names = resources
        .blocks_below(&Path::root())
        .iter()
        .map(|(name, _)| name.text())
        .collect();
    records.retain(&unikernel_names, &policy_names, &block_names);

    let global = Global {
        resources,
        running: BTreeMap::new(),
        pending: BTreeMap::new(),
        startup: order.iter().cloned().collect(),
        records,
        busy_blocks: BTreeSet::new(),
        shutting_down: false,
    };
    let revocation = Revocation::new(setup, crls);
    let inner = Arc::new(Inner::new(Parts {
        config,
        network,
        tender,
        cgroups,
        blocks,
        lock,
        global,
        revocation,
    }));
    stats::spawn_sampler(&inner, Sources::default());
    inner.persist().await?;
    for (name, config) in order {
        let _lock = inner.lock_name(&name).await;
        inner.global().startup.remove(&name);
        if let Err(e) = inner
            .relaunch(&name, config, None, 0, Launch::Started)
            .await
        {
            tracing::error!(%name, error = %e, "could not restore a unikernel");
            inner.events.emit(Event::StartFailed {
                name: name.clone(),
                reason: e.to_string(),
            });
            inner.global().records.remove_unikernel(&name);
            if let Ok(image) = inner.dir.image(&name) {
                if let Err(e) = store::remove_durably(&image) {
                    tracing::error!(%name, error = %e, "could not remove the image");
                }
            }
        }
        inner.persist().await?;
    }
    Ok(inner)
}

/// The state file (absent: empty), after copying it to `state.started`.
fn read_state(dir: &StateDir) -> Result<State, ExecError> {
    let path = dir.state_file();
    let Some(data) = store::read_bounded(&path, MAX_STATE_SIZE)? else {
        return Ok(State::default());
    };
    let state = codec::decode_state(&data).map_err(|source| ExecError::State {
        path: path.clone(),
        source: Box::new(source),
    })?;
    store::write_atomic(&dir.state_started_file(), &data, FILE_MODE)?;
    Ok(state)
}

/// Moves images embedded in the state file (albatross's) to `images/`, inflated; the
/// configurations are left with an empty image. An image that cannot be extracted is
/// logged; its unikernel then fails to start (and is dropped) like any other.
async fn extract_images(dir: &StateDir, state: &mut State, limit: u64) {
    for entry in &mut state.unikernels {
        let config = &mut entry.value;
        if config.image.is_empty() {
            config.compressed = false;
            continue;
        }
        let inline = std::mem::take(&mut config.image);
        let compressed = std::mem::replace(&mut config.compressed, false);
        let name = &entry.name;
        let result = async {
            let target = dir.image(name).map_err(|e| e.to_string())?;
            let image = image::receive(&dir.tmp(), inline, compressed, None, limit)
                .await
                .map_err(|e| e.to_string())?;
            image.file.commit(&target).map_err(|e| e.to_string())
        }
        .await;
        match result {
            Ok(()) => tracing::info!(%name, "imported the image embedded in the state file"),
            Err(e) => tracing::error!(%name, error = %e, "could not import the embedded image"),
        }
    }
}

/// The path a state file's policy key names (a labelled key, which albatross never
/// writes, is taken as the path of its label sequence, as albatross's trie would).
fn policy_path(name: &Name) -> Path {
    match name.label() {
        Some(label) => name.path().child(label.clone()),
        None => name.path().clone(),
    }
}
