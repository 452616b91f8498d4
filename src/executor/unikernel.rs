//! Unikernels: create, force-create, destroy, restart, info, get
//! (`spec/unikernel-and-executor.md` §3, §10).
//!
//! A create goes through these steps, each refusing with its own text; nothing on the
//! host is touched before the last check has passed, and any failure after that undoes
//! what was done (taps, image file, reserved resources — Note E3):
//!
//! 1. "Unikernel with same name is already running";
//! 2. the configuration on its own: solo5 only, network and block device names are sets,
//!    CPU ids given, memory positive, bridge and block device names valid;
//! 3. the resource check against every policy from the root down (pure core);
//! 4. the CPU ids exist on this host;
//! 5. the image, from the configuration or the input stream, to `tmp/` (bounded,
//!    hashed, inflated);
//! 6. its solo5 notes: target, the tender's ABI version, the manifest against the
//!    configured devices;
//! 7. every bridge exists;
//! 8. under the name's lock: step 1 again, then the resources are reserved (checked
//!    again, atomically);
//! 9. one tap per network device; the image is committed to `images/`; the unikernel's
//!    cgroup is created (with cgroups); the tender is spawned into it; its run record is
//!    written; it is supervised;
//! 10. the state is persisted; the reply is sent.
//!
//! force-create and restart (§10) check as if the old instance were gone, prepare and
//! check the new one completely, and only then stop the old one, wait for its exit and
//! start the new one. If starting fails after the old one was stopped (a sibling took the
//! resources meanwhile, a tap could not be created, the tender could not be executed),
//! the failure is reported and the old one stays gone: it is never left half-dead, and
//! the state file no longer lists it.
//!
//! A tender started by a command must survive the start check
//! ([`Limits::start_check`](crate::limits::Limits::start_check)): one that exits with
//! status 1 (solo5's own errors) or is killed by a signal within it fails the command with
//! its last words (Note E2), and everything the launch did is undone.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::chain::Request;
use crate::codec::{
    BlockInfo, InfoEntry, NetInfo, RestartArgs, Timestamp, Typ, UnikernelArguments,
    UnikernelConfig, UnikernelInfo,
};
use crate::executor::api::InputReceiver;
use crate::executor::cgroup::{Cgroup, CgroupError, GroupLimits};
use crate::executor::events::Event;
use crate::executor::image::{self, ImageDigest, ImageError, TempImage};
use crate::executor::mac::Mac;
use crate::executor::manifest::{self, Machine, ManifestError, Target};
use crate::executor::net::{InterfaceName, NetError};
use crate::executor::persist::{RunRecord, StateDir};
use crate::executor::state::{Inner, Instance};
use crate::executor::tender::{
    BlockArg, ExitReason, ExitWaiter, MAX_CPU_ID, NetArg, Pid, StopSignal, TenderCommand,
    TenderError, TenderProcess, available_cpus, early_output,
};
use crate::name::{INVALID_LABEL, Label, Name, NameError};
use crate::resources::{ResourceError, UnikernelUsage};
use crate::store::{self, StoreError};

/// Sector size a block device gets when none is configured (solo5's default).
pub const DEFAULT_SECTOR_SIZE: i64 = 512;

/// Why a unikernel command failed. The display text is the failure text sent to the
/// client: albatross's words where albatross has them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnikernelError {
    /// The command needs a unikernel name but got a path (DESIGN.md "Smaller decisions").
    #[error("{command} needs a unikernel name, but {name} is a path")]
    PathName {
        /// The command.
        command: &'static str,
        /// The name given.
        name: Name,
    },
    /// create: a unikernel of that name runs (albatross's text).
    #[error("Unikernel with same name is already running")]
    AlreadyRunning,
    /// create: a unikernel of that name waits for its automatic restart.
    #[error("Unikernel with same name is waiting to be restarted (destroy or force-create it)")]
    Restarting,
    /// Only solo5 unikernels run here.
    #[error("unikernel type bhyve is not supported (petrel runs solo5 unikernels)")]
    Bhyve,
    /// Two network devices with the same unikernel-side name (albatross-client's text).
    #[error("Bridge names must be a set")]
    BridgesNotASet,
    /// Two block devices with the same unikernel-side name (albatross-client's text).
    #[error("Block devices must be a set")]
    BlocksNotASet,
    /// No CPU id configured.
    #[error("no CPU id given: a unikernel needs at least one CPU")]
    NoCpuids,
    /// A CPU id this host does not have.
    #[error("CPU {cpu} is not available on this host (available: {available})")]
    CpuUnavailable {
        /// The CPU id asked for.
        cpu: i64,
        /// The CPU ids available, joined by `, `.
        available: String,
    },
    /// Memory not positive.
    #[error("invalid memory size {0} MB: at least 1 MB is needed")]
    Memory(i64),
    /// A block device's sector size is not a power of two of at least 512.
    #[error("sector size {size} of block device {device} is not a power of two >= 512")]
    SectorSize {
        /// The unikernel-side device name.
        device: String,
        /// The size given.
        size: i64,
    },
    /// A block device name that is not a label.
    #[error("invalid block device name {0:?}: {INVALID_LABEL}")]
    BlockName(String),
    /// The name cannot become a file name.
    #[error("{0}")]
    Name(#[from] NameError),
    /// A resource check failed.
    #[error(transparent)]
    Resource(#[from] ResourceError),
    /// Receiving or reading the image failed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The image's solo5 notes, or the manifest check.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// An image for the spt target (petrel's tender is solo5-hvt compatible).
    #[error("unsupported solo5 target spt (this host runs hvt unikernels)")]
    Spt,
    /// An image for another machine.
    #[error("the image is for {image}, this host is {host}")]
    Machine {
        /// The image's machine.
        image: &'static str,
        /// This host's.
        host: &'static str,
    },
    /// The tender's ABI version check.
    #[error(transparent)]
    Abi(TenderError),
    /// A bridge is invalid or missing, or a tap could not be created.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The tender could not be started (Note E2: not "console failed").
    #[error("could not start the tender: {0}")]
    Spawn(TenderError),
    /// The unikernel's cgroup could not be created.
    #[error("could not create the cgroup of the tender: {0}")]
    Cgroup(#[from] CgroupError),
    /// The stored image of a unikernel is missing.
    #[error("the image of {0} is missing")]
    ImageMissing(Name),
    /// The tender failed within the start check (Note E2: distinct and truthful).
    #[error("the tender failed at start ({reason}){}", colon(output))]
    FailedAtStart {
        /// How it ended.
        reason: ExitReason,
        /// The last line it wrote, if any.
        output: String,
    },
    /// The state or a run record could not be written.
    #[error("could not save the state: {}", .0.reason())]
    Persist(#[from] StoreError),
    /// destroy of a name that neither runs nor waits for a restart (albatross's text).
    #[error("destroy: not found")]
    DestroyNotFound,
    /// restart of a name that neither runs nor waits for a restart (Note E13).
    #[error("restart: not running")]
    RestartNotRunning,
    /// get of a name that does not run (albatross's text).
    #[error("get: no unikernel found")]
    GetNotFound,
    /// The executor is shutting down.
    #[error("the executor is shutting down")]
    ShuttingDown,
}

/// A unikernel configuration checked on its own and turned into what the host needs.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The unikernel.
    pub(crate) name: Name,
    /// Its configuration, image empty (the image lives in `images/`).
    pub(crate) config: UnikernelConfig,
    /// What it takes from the policies.
    pub(crate) usage: UnikernelUsage,
    /// Network devices in configuration order.
    nets: Vec<PlannedNet>,
    /// Block devices in configuration order.
    blocks: Vec<BlockArg>,
    /// CPUs to pin to.
    cpus: BTreeSet<u32>,
    /// `--mem=`.
    memory_mb: u64,
    /// `images/<file>.img`.
    pub(crate) image: PathBuf,
    /// `run/<file>.json`.
    run_record: PathBuf,
}

#[derive(Debug, Clone)]
struct PlannedNet {
    netif: String,
    bridge: InterfaceName,
    mac: Mac,
}

impl Plan {
    /// Checks `config` for unikernel `name` on its own (step 2).
    pub(crate) fn new(
        dir: &StateDir,
        name: &Name,
        mut config: UnikernelConfig,
    ) -> Result<Self, UnikernelError> {
        config.image = Vec::new();
        config.compressed = false;
        if config.typ == Typ::Bhyve {
            return Err(UnikernelError::Bhyve);
        }
        let netifs: HashSet<&str> = config.bridges.iter().map(|n| n.netif.as_str()).collect();
        if netifs.len() != config.bridges.len() {
            return Err(UnikernelError::BridgesNotASet);
        }
        let block_names: HashSet<&str> = config.blocks.iter().map(|b| b.name.as_str()).collect();
        if block_names.len() != config.blocks.len() {
            return Err(UnikernelError::BlocksNotASet);
        }
        if config.cpuids.is_empty() {
            return Err(UnikernelError::NoCpuids);
        }
        let memory_mb = u64::try_from(config.memory)
            .ok()
            .filter(|&m| m > 0)
            .ok_or(UnikernelError::Memory(config.memory))?;
        let mut nets = Vec::with_capacity(config.bridges.len());
        for net in &config.bridges {
            let bridge = InterfaceName::parse(net.bridge.as_deref().unwrap_or(&net.netif))?;
            let mac = match net.mac {
                Some(mac) => Mac::from_octets(mac.octets()),
                None => Mac::deterministic(&net.netif, name),
            };
            nets.push(PlannedNet {
                netif: net.netif.clone(),
                bridge,
                mac,
            });
        }
        let mut blocks = Vec::with_capacity(config.blocks.len());
        let mut devices = BTreeSet::new();
        for block in &config.blocks {
            let device = block.device_name.as_deref().unwrap_or(&block.name);
            let label =
                Label::parse(device).map_err(|_| UnikernelError::BlockName(device.to_owned()))?;
            let sector_size = match block.sector_size {
                None => None,
                Some(size) => Some(
                    u32::try_from(size)
                        .ok()
                        .filter(|s| *s >= 512 && s.is_power_of_two())
                        .ok_or_else(|| UnikernelError::SectorSize {
                            device: block.name.clone(),
                            size,
                        })?,
                ),
            };
            let file = dir.block_file(&Name::labelled(name.path().clone(), label.clone()))?;
            devices.insert(label);
            blocks.push(BlockArg {
                name: block.name.clone(),
                path: file,
                sector_size,
            });
        }
        let usage = UnikernelUsage {
            cpuids: config.cpuids.clone(),
            memory: config.memory,
            bridges: nets.iter().map(|n| n.bridge.as_str().to_owned()).collect(),
            block_devices: devices,
        };
        let cpus = config
            .cpuids
            .iter()
            .map(|&id| u32::try_from(id).unwrap_or(u32::MAX))
            .collect();
        Ok(Self {
            image: dir.image(name)?,
            run_record: dir.run_record(name)?,
            name: name.clone(),
            config,
            usage,
            nets,
            blocks,
            cpus,
            memory_mb,
        })
    }

    /// Step 4: every CPU id exists on this host.
    fn check_host_cpus(&self) -> Result<(), UnikernelError> {
        let available = available_cpus().unwrap_or_default();
        for &id in &self.config.cpuids {
            let ok = u32::try_from(id).is_ok_and(|id| id <= MAX_CPU_ID && available.contains(&id));
            if !ok {
                let list: Vec<String> = available.iter().map(u32::to_string).collect();
                return Err(UnikernelError::CpuUnavailable {
                    cpu: id,
                    available: list.join(", "),
                });
            }
        }
        Ok(())
    }
}

/// Where the image of a launch comes from.
pub(crate) enum ImageSource {
    /// Just received: committed to `images/` by the launch.
    Fresh(TempImage),
    /// Already in `images/`, with its digest.
    Stored(ImageDigest),
}

/// How a launch is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Launch {
    /// By a command (create, force-create, restart): [`Event::Started`], once the tender
    /// has survived the start check ([`crate::limits::START_CHECK`]).
    Requested,
    /// At start-up: [`Event::Started`].
    Started,
    /// By a scheduled restart: [`Event::Restarted`].
    Restarted,
}

/// The name of a command that needs a labelled name.
pub(crate) fn labelled<'a>(
    name: &'a Name,
    command: &'static str,
) -> Result<&'a Name, UnikernelError> {
    if name.is_path() {
        Err(UnikernelError::PathName {
            command,
            name: name.clone(),
        })
    } else {
        Ok(name)
    }
}

impl Inner {
    /// `create` and `force-create`.
    pub(crate) async fn create(
        self: &Arc<Self>,
        request: &Request,
        mut config: UnikernelConfig,
        input: Option<InputReceiver>,
        force: bool,
    ) -> Result<&'static str, UnikernelError> {
        let command = if force {
            "unikernel force create"
        } else {
            "unikernel create"
        };
        let name = labelled(&request.name, command)?;
        if !force {
            self.check_free(name)?;
        }
        // Everything up to the bridge check has no effect on the host (the image goes to
        // a temporary file), so it runs before the name's lock is taken: no lock is held
        // while a client streams its image.
        let inline = std::mem::take(&mut config.image);
        let compressed = config.compressed;
        let plan = Plan::new(&self.dir, name, config)?;
        {
            let global = self.global();
            if force {
                global.resources.check_replace(name, &plan.usage)?;
            } else {
                global.resources.check_create(name, &plan.usage)?;
            }
        }
        plan.check_host_cpus()?;
        let image = image::receive(
            &self.dir.tmp(),
            inline,
            compressed,
            input,
            self.config.limits.max_image_size,
        )
        .await?;
        self.inspect(image.file.path(), &plan).await?;
        self.check_bridges(&plan)?;
        let _lock = self.lock_name(name).await;
        if self.global().shutting_down {
            // Shutdown may have waited for the operations holding a lock before this one
            // took its own: it must not stop or start anything now.
            return Err(UnikernelError::ShuttingDown);
        }
        if !force {
            self.check_free(name)?;
        }
        let replaced = force && self.remove_old(name).await;
        match self
            .launch(&plan, ImageSource::Fresh(image), 0, Launch::Requested)
            .await
        {
            Ok(_) => {
                self.global().records.set_unikernel(name, &request.chain);
                self.persist_created(name).await?;
                Ok("created unikernel")
            }
            Err(e) => {
                // The old one is gone; during shutdown the state file keeps it.
                if replaced && !matches!(e, UnikernelError::ShuttingDown) {
                    self.forget_logged(name).await;
                }
                Err(e)
            }
        }
    }

    /// `restart`, with the current configuration or new arguments.
    pub(crate) async fn restart(
        self: &Arc<Self>,
        request: &Request,
        args: RestartArgs,
    ) -> Result<&'static str, UnikernelError> {
        let name = labelled(&request.name, "unikernel restart")?;
        let _lock = self.lock_name(name).await;
        let (current, digest) = {
            let global = self.global();
            if let Some(instance) = global.running.get(name) {
                (instance.config.clone(), instance.digest)
            } else if let Some(pending) = global.pending.get(name) {
                (pending.config.clone(), pending.digest)
            } else {
                return Err(UnikernelError::RestartNotRunning);
            }
        };
        let new_arguments = matches!(args, RestartArgs::Arguments(_));
        let config = match args {
            RestartArgs::NoArguments => current,
            RestartArgs::Arguments(arguments) => with_arguments(current, arguments),
        };
        let plan = Plan::new(&self.dir, name, config)?;
        self.global().resources.check_replace(name, &plan.usage)?;
        plan.check_host_cpus()?;
        self.inspect(&plan.image, &plan).await?;
        self.check_bridges(&plan)?;
        self.remove_old(name).await;
        match self
            .launch(&plan, ImageSource::Stored(digest), 0, Launch::Requested)
            .await
        {
            Ok(_) => {
                if new_arguments {
                    self.global().records.set_unikernel(name, &request.chain);
                }
                self.persist_created(name).await?;
                Ok("created unikernel")
            }
            Err(e) => {
                if !matches!(e, UnikernelError::ShuttingDown) {
                    self.forget_logged(name).await;
                }
                Err(e)
            }
        }
    }

    /// `destroy`.
    pub(crate) async fn destroy(
        self: &Arc<Self>,
        name: &Name,
    ) -> Result<&'static str, UnikernelError> {
        let name = labelled(name, "unikernel destroy")?;
        let _lock = self.lock_name(name).await;
        let reply = if self.stop(name).await.is_some() {
            "destroyed unikernel"
        } else if let Some(pending) = self.global().pending.remove(name) {
            pending.cancel();
            "destroyed: removed from restarting"
        } else {
            return Err(UnikernelError::DestroyNotFound);
        };
        self.events.emit(Event::Destroyed { name: name.clone() });
        self.forget(name).await?;
        Ok(reply)
    }

    /// `info`: a labelled name gives that unikernel (or nothing), a path every
    /// unikernel below it, named relative to the path.
    pub(crate) fn info(&self, name: &Name) -> Vec<InfoEntry<UnikernelInfo>> {
        let global = self.global();
        let info = |unikernel: &Name, instance: &Instance| {
            let blocks = instance
                .config
                .blocks
                .iter()
                .map(|block| {
                    let device = block
                        .device_name
                        .clone()
                        .unwrap_or_else(|| block.name.clone());
                    // The size is looked up with the block device's full name (Note E11).
                    let size = Label::parse(&device)
                        .ok()
                        .and_then(|label| {
                            global
                                .resources
                                .block(&Name::labelled(unikernel.path().clone(), label))
                        })
                        .map_or(0, |b| b.size_mb);
                    BlockInfo {
                        unikernel_device: block.name.clone(),
                        host_device: device,
                        sector_size: block.sector_size.unwrap_or(DEFAULT_SECTOR_SIZE),
                        size,
                    }
                })
                .collect();
            UnikernelInfo {
                typ: instance.config.typ,
                startup: instance.config.startup,
                fail_behaviour: instance.config.fail_behaviour.clone(),
                cpuids: instance.config.cpuids.clone(),
                memory: instance.config.memory,
                digest: instance.digest.0.to_vec(),
                blocks,
                bridges: instance.nets.clone(),
                arguments: instance.config.arguments.clone(),
                started: instance.started,
                cpus: instance.config.cpus,
                linux_boot_partition: instance.config.linux_boot_partition.clone(),
            }
        };
        if name.is_path() {
            global
                .running
                .iter()
                .filter_map(|(unikernel, instance)| {
                    Some(InfoEntry {
                        name: unikernel.relative_to(name.path())?,
                        info: info(unikernel, instance),
                    })
                })
                .collect()
        } else {
            global
                .running
                .get(name)
                .map(|instance| InfoEntry {
                    name: name.clone(),
                    info: info(name, instance),
                })
                .into_iter()
                .collect()
        }
    }

    /// `get`: the image of a running unikernel, compressed at `level` (0: not).
    pub(crate) async fn get(
        &self,
        name: &Name,
        level: i64,
    ) -> Result<(bool, Vec<u8>), UnikernelError> {
        let name = labelled(name, "unikernel get")?;
        if !self.global().running.contains_key(name) {
            return Err(UnikernelError::GetNotFound);
        }
        let path = self.dir.image(name)?;
        Ok(image::for_get(&path, level, self.config.limits.max_image_size).await?)
    }

    /// Starts a unikernel from its stored image: at start-up and for scheduled restarts.
    pub(crate) async fn relaunch(
        self: &Arc<Self>,
        name: &Name,
        config: UnikernelConfig,
        digest: Option<ImageDigest>,
        attempt: u32,
        launch: Launch,
    ) -> Result<Pid, UnikernelError> {
        let plan = Plan::new(&self.dir, name, config)?;
        plan.check_host_cpus()?;
        if !plan.image.exists() {
            return Err(UnikernelError::ImageMissing(name.clone()));
        }
        let digest = match digest {
            Some(digest) => digest,
            None => image::digest_of(&plan.image).await?,
        };
        self.inspect(&plan.image, &plan).await?;
        self.check_bridges(&plan)?;
        self.launch(&plan, ImageSource::Stored(digest), attempt, launch)
            .await
    }

    /// Stops the running instance of `name` (SIGTERM, SIGKILL after the stop timeout) and
    /// waits until its exit has been handled (taps removed, resources freed). `None` if
    /// it does not run. The caller holds the name's lock.
    pub(crate) async fn stop(&self, name: &Name) -> Option<ExitReason> {
        let (id, mut exited) = {
            let mut global = self.global();
            let instance = global.running.get_mut(name)?;
            let (tx, rx) = tokio::sync::oneshot::channel();
            instance.stop = Some(tx);
            self.tender.signal(instance.pid, StopSignal::Term);
            (instance.id, rx)
        };
        match tokio::time::timeout(self.config.limits.stop_timeout, &mut exited).await {
            Ok(reason) => reason.ok(),
            Err(_) => {
                {
                    let global = self.global();
                    if let Some(instance) = global.running.get(name).filter(|i| i.id == id) {
                        tracing::warn!(%name, pid = %instance.pid, "tender ignored SIGTERM, sending SIGKILL");
                        self.tender.signal(instance.pid, StopSignal::Kill);
                    }
                }
                exited.await.ok()
            }
        }
    }

    /// create: nothing of that name runs or waits for a restart.
    fn check_free(&self, name: &Name) -> Result<(), UnikernelError> {
        let global = self.global();
        if global.running.contains_key(name) {
            return Err(UnikernelError::AlreadyRunning);
        }
        if global.pending.contains_key(name) {
            return Err(UnikernelError::Restarting);
        }
        Ok(())
    }

    /// Removes whatever runs or waits under `name` before it is replaced: stops a running
    /// instance (and waits), cancels a pending restart (Note E5). True if there was one.
    async fn remove_old(&self, name: &Name) -> bool {
        if self.stop(name).await.is_some() {
            return true;
        }
        match self.global().pending.remove(name) {
            Some(pending) => {
                pending.cancel();
                true
            }
            None => false,
        }
    }

    /// Forgets a unikernel that no longer runs nor waits: its image, its provenance, its
    /// state entry.
    pub(crate) async fn forget(&self, name: &Name) -> Result<(), StoreError> {
        self.global().records.remove_unikernel(name);
        if let Ok(image) = self.dir.image(name) {
            store::remove_durably(&image)?;
        }
        self.persist().await
    }

    /// [`Inner::forget`] on a failure path, where only logging is left.
    pub(crate) async fn forget_logged(&self, name: &Name) {
        if let Err(e) = self.forget(name).await {
            tracing::error!(%name, error = %e, "could not forget a unikernel");
        }
    }

    /// Persists after a successful start. If that fails, the unikernel is stopped again:
    /// whatever is reported created is in the state file.
    async fn persist_created(&self, name: &Name) -> Result<(), UnikernelError> {
        if let Err(e) = self.persist().await {
            tracing::error!(%name, error = %e, "state not saved, stopping the new unikernel");
            self.stop(name).await;
            self.forget_logged(name).await;
            return Err(UnikernelError::Persist(e));
        }
        Ok(())
    }

    /// Step 6: the image's notes, the tender's ABI version and the manifest.
    async fn inspect(&self, image: &std::path::Path, plan: &Plan) -> Result<(), UnikernelError> {
        let path = image.to_owned();
        let parsed = tokio::task::spawn_blocking(move || manifest::read_image_file(&path))
            .await
            .map_err(|e| ImageError::Worker(e.to_string()))??;
        match parsed.abi.target {
            Target::Hvt => {}
            Target::Spt => return Err(UnikernelError::Spt),
            other => {
                other.tender_name()?;
            }
        }
        let host = host_machine();
        if Some(parsed.machine) != host {
            return Err(UnikernelError::Machine {
                image: machine_name(Some(parsed.machine)),
                host: machine_name(host),
            });
        }
        let tender = &self.config.tender;
        if !self.abi_known(tender, parsed.abi.version) {
            self.tender
                .check_abi_version(tender, parsed.abi.version)
                .await
                .map_err(UnikernelError::Abi)?;
            self.abi_confirmed(tender, parsed.abi.version);
        }
        manifest::check_manifest(
            &parsed.manifest,
            plan.blocks.iter().map(|b| b.name.as_str()),
            plan.nets.iter().map(|n| n.netif.as_str()),
        )?;
        Ok(())
    }

    /// Step 7: every bridge exists.
    fn check_bridges(&self, plan: &Plan) -> Result<(), UnikernelError> {
        let bridges: BTreeSet<&InterfaceName> = plan.nets.iter().map(|n| &n.bridge).collect();
        for bridge in bridges {
            self.network.check_bridge(bridge)?;
        }
        Ok(())
    }

    /// Steps 8 and 9: reserve, create taps, commit the image, spawn, record, supervise.
    /// On failure everything done here is undone.
    async fn launch(
        self: &Arc<Self>,
        plan: &Plan,
        image: ImageSource,
        attempt: u32,
        launch: Launch,
    ) -> Result<Pid, UnikernelError> {
        let name = &plan.name;
        {
            let mut global = self.global();
            if global.shutting_down {
                return Err(UnikernelError::ShuttingDown);
            }
            if global.running.contains_key(name) {
                return Err(UnikernelError::AlreadyRunning);
            }
            for device in &plan.usage.block_devices {
                let block = Name::labelled(name.path().clone(), device.clone());
                if global.busy_blocks.contains(&block) {
                    return Err(ResourceError::BlockInUse(block).into());
                }
            }
            global
                .resources
                .insert_unikernel(name, plan.usage.clone())?;
        }
        let mut undo = Undo {
            inner: self,
            name,
            taps: Vec::new(),
            image: None,
            cgroup: None,
            armed: true,
        };
        for net in &plan.nets {
            undo.taps.push(self.network.create_tap(&net.bridge)?);
        }
        let digest = match image {
            ImageSource::Fresh(temp) => {
                undo.image = Some(plan.image.clone());
                temp.file.commit(&plan.image)?;
                temp.digest
            }
            ImageSource::Stored(digest) => digest,
        };
        let command = TenderCommand {
            tender: self.config.tender.clone(),
            memory_mb: plan.memory_mb,
            nets: plan
                .nets
                .iter()
                .zip(&undo.taps)
                .map(|(net, tap)| NetArg {
                    netif: net.netif.clone(),
                    tap: tap.clone(),
                    mac: net.mac,
                })
                .collect(),
            blocks: plan.blocks.clone(),
            image: plan.image.clone(),
            name_arg: plan
                .config
                .add_name
                .then(|| name.label().map(|l| l.to_string()))
                .flatten(),
            argv: plan.config.arguments.clone().unwrap_or_default(),
            cpus: plan.cpus.clone(),
        };
        undo.cgroup = self.cgroups.create(
            name,
            &GroupLimits::for_unikernel(plan.memory_mb, &plan.cpus),
        )?;
        // Spawned on this (worker) thread: the tender's PR_SET_PDEATHSIG follows it.
        let process = match &undo.cgroup {
            Some(cgroup) => self.tender.spawn_in(&command, &cgroup.join()),
            None => self.tender.spawn(&command),
        }
        .map_err(UnikernelError::Spawn)?;
        let record = RunRecord::new(name, process.pid, &plan.image, &undo.taps);
        let path = plan.run_record.clone();
        let written = tokio::task::spawn_blocking(move || record.write(&path))
            .await
            .unwrap_or_else(|e| {
                Err(StoreError::Io {
                    op: "write",
                    path: plan.run_record.clone(),
                    source: std::io::Error::other(e.to_string()),
                })
            });
        let mut process = process;
        if launch == Launch::Requested && written.is_ok() {
            if let Some(failure) = self.start_check(&mut process).await {
                let _ = std::fs::remove_file(&plan.run_record);
                return Err(failure);
            }
        }
        let id = self.next_id();
        let refused = {
            let mut global = self.global();
            match written {
                Err(e) => Some(UnikernelError::Persist(e)),
                Ok(()) if global.shutting_down => Some(UnikernelError::ShuttingDown),
                Ok(()) => {
                    global.running.insert(
                        name.clone(),
                        Instance {
                            id,
                            config: plan.config.clone(),
                            pid: process.pid,
                            taps: undo.taps.clone(),
                            nets: plan
                                .nets
                                .iter()
                                .map(|net| NetInfo {
                                    unikernel_device: net.netif.clone(),
                                    host_device: net.bridge.as_str().to_owned(),
                                    mac: crate::codec::MacAddr::new(net.mac.octets()),
                                })
                                .collect(),
                            digest,
                            started: now(),
                            started_at: Instant::now(),
                            attempt,
                            stop: None,
                            cgroup: undo.cgroup.clone(),
                        },
                    );
                    None
                }
            }
        };
        if let Some(error) = refused {
            self.tender.signal(process.pid, StopSignal::Kill);
            process.exit.await;
            let _ = std::fs::remove_file(&plan.run_record);
            if let Some(cgroup) = undo.cgroup.take() {
                if let Err(e) = cgroup.remove().await {
                    tracing::error!(%name, error = %e, "could not remove a cgroup after a failed create");
                }
            }
            return Err(error);
        }
        undo.disarm();
        self.events.emit(match launch {
            Launch::Requested | Launch::Started => Event::Started {
                name: name.clone(),
                pid: process.pid,
            },
            Launch::Restarted => Event::Restarted {
                name: name.clone(),
                pid: process.pid,
            },
        });
        self.attach_console(name, process.console);
        self.watch(name.clone(), id, process.exit);
        Ok(process.pid)
    }
}

impl Inner {
    /// Waits up to the start check for `process` to fail at start: exit status 1 (solo5's
    /// own errors: KVM, taps, block devices, the image) or a signal. Such a failure is
    /// returned with the tender's last words, the caller undoes the launch. Any other
    /// exit within the window (a unikernel that finished its job, or one that does not
    /// understand `--name`) is left to supervision, as if it had come later.
    async fn start_check(&self, process: &mut TenderProcess) -> Option<UnikernelError> {
        let window = self.config.limits.start_check;
        let reason = tokio::time::timeout(window, &mut process.exit).await.ok()?;
        if matches!(reason, ExitReason::Exited(1) | ExitReason::Signaled(_)) {
            return Some(UnikernelError::FailedAtStart {
                reason,
                output: early_output(&process.console),
            });
        }
        process.exit = ExitWaiter::new(std::future::ready(reason));
        None
    }
}

/// Undoes a launch that failed: taps, committed image, cgroup, reservation.
struct Undo<'a> {
    inner: &'a Inner,
    name: &'a Name,
    taps: Vec<InterfaceName>,
    image: Option<PathBuf>,
    /// Created, nothing runs in it (a spawned tender is reaped before undoing).
    cgroup: Option<Cgroup>,
    armed: bool,
}

impl Undo<'_> {
    /// The launch succeeded: keep everything.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for tap in self.taps.drain(..) {
            if let Err(e) = self.inner.network.remove_tap(&tap) {
                tracing::error!(%tap, error = %e, "could not remove a tap after a failed create");
            }
        }
        if let Some(image) = self.image.take() {
            if let Err(e) = store::remove_durably(&image) {
                tracing::error!(image = %image.display(), error = %e, "could not remove an image after a failed create");
            }
        }
        if let Some(cgroup) = self.cgroup.take() {
            cgroup.remove_now();
        }
        self.inner.global().resources.remove_unikernel(self.name);
    }
}

/// `: text`, or nothing for an empty text.
fn colon(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// The configuration `restart` runs with new arguments: everything but the type and the
/// image replaced (spec §2).
fn with_arguments(current: UnikernelConfig, arguments: UnikernelArguments) -> UnikernelConfig {
    UnikernelConfig {
        typ: current.typ,
        compressed: current.compressed,
        image: current.image,
        startup: arguments.startup,
        add_name: arguments.add_name,
        fail_behaviour: arguments.fail_behaviour,
        cpuids: arguments.cpuids,
        memory: arguments.memory,
        blocks: arguments.blocks,
        bridges: arguments.bridges,
        arguments: arguments.arguments,
        cpus: arguments.cpus,
        linux_boot_partition: arguments.linux_boot_partition,
    }
}

/// The wall clock, for `info`'s start time.
fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Timestamp::from_millis(ms).unwrap_or(Timestamp::EPOCH)
}

fn host_machine() -> Option<Machine> {
    if cfg!(target_arch = "x86_64") {
        Some(Machine::X86_64)
    } else if cfg!(target_arch = "aarch64") {
        Some(Machine::Aarch64)
    } else {
        None
    }
}

fn machine_name(machine: Option<Machine>) -> &'static str {
    match machine {
        Some(Machine::X86_64) => "x86_64",
        Some(Machine::Aarch64) => "aarch64",
        None => "another machine",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::codec::{BlockDeviceSpec, FailBehaviour, MacAddr, NetDeviceSpec};

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    fn plan(config: UnikernelConfig) -> Result<Plan, UnikernelError> {
        Plan::new(&StateDir::new("/s"), &name("a:web"), config)
    }

    #[test]
    fn plan_of_a_full_configuration() {
        let config = UnikernelConfig {
            image: vec![1, 2, 3],
            compressed: true,
            cpuids: BTreeSet::from([1]),
            memory: 64,
            blocks: vec![
                BlockDeviceSpec {
                    name: "storage".into(),
                    device_name: Some("data".into()),
                    sector_size: Some(4096),
                },
                BlockDeviceSpec::named("log".into()),
            ],
            bridges: vec![
                NetDeviceSpec::named("service".into()),
                NetDeviceSpec {
                    netif: "admin".into(),
                    bridge: Some("br0".into()),
                    mac: Some(MacAddr::new([2, 0, 0, 0, 0, 1])),
                },
            ],
            ..UnikernelConfig::default()
        };
        let plan = plan(config).unwrap();
        assert!(plan.config.image.is_empty());
        assert!(!plan.config.compressed);
        assert_eq!(plan.image, PathBuf::from("/s/images/a:web.img"));
        assert_eq!(plan.run_record, PathBuf::from("/s/run/a:web.json"));
        assert_eq!(
            plan.usage,
            UnikernelUsage {
                cpuids: BTreeSet::from([1]),
                memory: 64,
                bridges: BTreeSet::from(["br0".to_owned(), "service".to_owned()]),
                block_devices: BTreeSet::from([
                    Label::parse("data").unwrap(),
                    Label::parse("log").unwrap()
                ]),
            }
        );
        assert_eq!(
            plan.blocks,
            vec![
                BlockArg {
                    name: "storage".into(),
                    path: "/s/block/a:data".into(),
                    sector_size: Some(4096),
                },
                BlockArg {
                    name: "log".into(),
                    path: "/s/block/a:log".into(),
                    sector_size: None,
                },
            ]
        );
        let macs: Vec<String> = plan.nets.iter().map(|n| n.mac.to_string()).collect();
        assert_eq!(
            macs,
            [
                Mac::deterministic("service", &name("a:web")).to_string(),
                "02:00:00:00:00:01".to_owned()
            ]
        );
        assert_eq!(plan.memory_mb, 64);
        assert_eq!(plan.cpus, BTreeSet::from([1]));
    }

    #[test]
    fn plan_refusals() {
        let base = UnikernelConfig::default();
        let cases: Vec<(UnikernelConfig, &str)> = vec![
            (
                UnikernelConfig {
                    typ: Typ::Bhyve,
                    ..base.clone()
                },
                "unikernel type bhyve is not supported (petrel runs solo5 unikernels)",
            ),
            (
                UnikernelConfig {
                    bridges: vec![
                        NetDeviceSpec::named("service".into()),
                        NetDeviceSpec {
                            bridge: Some("br0".into()),
                            ..NetDeviceSpec::named("service".into())
                        },
                    ],
                    ..base.clone()
                },
                "Bridge names must be a set",
            ),
            (
                UnikernelConfig {
                    blocks: vec![
                        BlockDeviceSpec::named("a".into()),
                        BlockDeviceSpec::named("a".into()),
                    ],
                    ..base.clone()
                },
                "Block devices must be a set",
            ),
            (
                UnikernelConfig {
                    cpuids: BTreeSet::new(),
                    ..base.clone()
                },
                "no CPU id given: a unikernel needs at least one CPU",
            ),
            (
                UnikernelConfig {
                    memory: 0,
                    ..base.clone()
                },
                "invalid memory size 0 MB: at least 1 MB is needed",
            ),
            (
                UnikernelConfig {
                    bridges: vec![NetDeviceSpec {
                        bridge: Some("a/b".into()),
                        ..NetDeviceSpec::named("service".into())
                    }],
                    ..base.clone()
                },
                "invalid interface name \"a/b\": contains '/', ':', NUL or whitespace",
            ),
            (
                UnikernelConfig {
                    blocks: vec![BlockDeviceSpec {
                        sector_size: Some(1000),
                        ..BlockDeviceSpec::named("disk".into())
                    }],
                    ..base.clone()
                },
                "sector size 1000 of block device disk is not a power of two >= 512",
            ),
            (
                UnikernelConfig {
                    blocks: vec![BlockDeviceSpec {
                        device_name: Some("a:b".into()),
                        ..BlockDeviceSpec::named("disk".into())
                    }],
                    ..base.clone()
                },
                "invalid block device name \"a:b\": invalid label (only [a-zA-Z0-9-.] allowed, 1 to 63 chars)",
            ),
        ];
        for (config, text) in cases {
            assert_eq!(plan(config).unwrap_err().to_string(), text);
        }
        assert_eq!(
            labelled(&name("a:"), "unikernel destroy")
                .unwrap_err()
                .to_string(),
            "unikernel destroy needs a unikernel name, but a: is a path"
        );
    }

    #[test]
    fn unavailable_cpu() {
        let plan = plan(UnikernelConfig {
            cpuids: BTreeSet::from([0, 5000]),
            ..UnikernelConfig::default()
        })
        .unwrap();
        let available: Vec<String> = available_cpus()
            .unwrap()
            .iter()
            .map(u32::to_string)
            .collect();
        assert_eq!(
            plan.check_host_cpus().unwrap_err().to_string(),
            format!(
                "CPU 5000 is not available on this host (available: {})",
                available.join(", ")
            )
        );
    }

    #[test]
    fn failure_texts() {
        use std::path::Path;

        use crate::executor::net::InterfaceName;
        let cases: Vec<(UnikernelError, &str)> = vec![
            (
                UnikernelError::PathName {
                    command: "unikernel get",
                    name: name("a:"),
                },
                "unikernel get needs a unikernel name, but a: is a path",
            ),
            (
                UnikernelError::AlreadyRunning,
                "Unikernel with same name is already running",
            ),
            (
                UnikernelError::Restarting,
                "Unikernel with same name is waiting to be restarted (destroy or force-create it)",
            ),
            (
                UnikernelError::Bhyve,
                "unikernel type bhyve is not supported (petrel runs solo5 unikernels)",
            ),
            (UnikernelError::BridgesNotASet, "Bridge names must be a set"),
            (UnikernelError::BlocksNotASet, "Block devices must be a set"),
            (
                UnikernelError::NoCpuids,
                "no CPU id given: a unikernel needs at least one CPU",
            ),
            (
                UnikernelError::CpuUnavailable {
                    cpu: 9,
                    available: "0, 1".into(),
                },
                "CPU 9 is not available on this host (available: 0, 1)",
            ),
            (
                UnikernelError::Memory(-1),
                "invalid memory size -1 MB: at least 1 MB is needed",
            ),
            (
                UnikernelError::SectorSize {
                    device: "disk".into(),
                    size: 100,
                },
                "sector size 100 of block device disk is not a power of two >= 512",
            ),
            (
                UnikernelError::BlockName("a b".into()),
                "invalid block device name \"a b\": invalid label (only [a-zA-Z0-9-.] allowed, 1 to 63 chars)",
            ),
            (
                UnikernelError::Name(NameError::TooLongForFile(300)),
                "name too long (300 octets, at most 200 allowed as a file name)",
            ),
            (
                UnikernelError::Resource(ResourceError::MaxUnikernels(2)),
                "maximum amount of unikernels (2) reached",
            ),
            (
                UnikernelError::Image(ImageError::StreamClosed),
                "image stream ended before its terminator",
            ),
            (
                UnikernelError::Manifest(ManifestError::NotElf),
                "not an ELF image",
            ),
            (
                UnikernelError::Spt,
                "unsupported solo5 target spt (this host runs hvt unikernels)",
            ),
            (
                UnikernelError::Machine {
                    image: "aarch64",
                    host: "x86_64",
                },
                "the image is for aarch64, this host is x86_64",
            ),
            (
                UnikernelError::Abi(TenderError::VersionOutput {
                    expected: 3,
                    output: "ABI version 2".into(),
                }),
                "unexpected solo5 tender --version output, expected one line with 'ABI version 3', got ABI version 2",
            ),
            (
                UnikernelError::Net(NetError::NoSuchInterface(
                    InterfaceName::parse("br9").unwrap(),
                )),
                "interface br9 does not exist",
            ),
            (
                UnikernelError::Spawn(TenderError::Injected("boom".into())),
                "could not start the tender: injected failure: boom",
            ),
            (
                UnikernelError::Cgroup(CgroupError::InUse("petrel/:x".into())),
                "could not create the cgroup of the tender: cgroup petrel/:x is in use by other \
                 processes (another petrel-endpoint with the same --cgroup-parent?)",
            ),
            (
                UnikernelError::ImageMissing(name(":x")),
                "the image of :x is missing",
            ),
            (
                UnikernelError::FailedAtStart {
                    reason: ExitReason::Exited(1),
                    output: "solo5-hvt: KVM: no such device".into(),
                },
                "the tender failed at start (exited with 1): solo5-hvt: KVM: no such device",
            ),
            (
                UnikernelError::FailedAtStart {
                    reason: ExitReason::Signaled(11),
                    output: String::new(),
                },
                "the tender failed at start (killed by signal 11)",
            ),
            (
                UnikernelError::Persist(StoreError::Truncated(Path::new("/s/records").into())),
                "could not save the state: truncated record file",
            ),
            (UnikernelError::DestroyNotFound, "destroy: not found"),
            (UnikernelError::RestartNotRunning, "restart: not running"),
            (UnikernelError::GetNotFound, "get: no unikernel found"),
            (
                UnikernelError::ShuttingDown,
                "the executor is shutting down",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }

    #[test]
    fn restart_arguments_replace_all_but_type_and_image() {
        let current = UnikernelConfig {
            image: vec![9],
            compressed: true,
            ..UnikernelConfig::default()
        };
        let arguments = UnikernelArguments {
            fail_behaviour: FailBehaviour::Restart(BTreeSet::from([3])),
            startup: Some(4),
            add_name: false,
            cpuids: BTreeSet::from([1]),
            memory: 128,
            blocks: vec![BlockDeviceSpec::named("d".into())],
            bridges: vec![NetDeviceSpec::named("n".into())],
            arguments: Some(vec!["--x".into()]),
            cpus: 2,
            linux_boot_partition: Some("p".into()),
        };
        let new = with_arguments(current, arguments.clone());
        assert_eq!(
            new,
            UnikernelConfig {
                typ: Typ::Solo5,
                compressed: true,
                image: vec![9],
                startup: Some(4),
                add_name: false,
                fail_behaviour: arguments.fail_behaviour,
                cpuids: arguments.cpuids,
                memory: 128,
                blocks: arguments.blocks,
                bridges: arguments.bridges,
                arguments: arguments.arguments,
                cpus: 2,
                linux_boot_partition: Some("p".into()),
            }
        );
    }
}
