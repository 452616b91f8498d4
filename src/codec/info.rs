//! Unikernel information in replies (spec §5.6), current and old formats.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::codec::der::{INTEGER, Reader, Result, SET, Writer};
use crate::codec::time::Timestamp;
use crate::codec::types::{FailBehaviour, MacAddr, Typ, int_set};

/// ```text
/// BlockInfo ::= SEQUENCE {
///     unikernelDevice  UTF8String,
///     hostDevice       UTF8String,
///     sectorSize       Int,
///     size             Int }         -- MB, 0 if unknown
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockInfo {
    /// Device name in the unikernel.
    pub unikernel_device: String,
    /// Block device name on the host.
    pub host_device: String,
    /// Sector size (512 if none was configured).
    pub sector_size: i64,
    /// Size in MB, 0 if unknown.
    pub size: i64,
}

impl BlockInfo {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self> {
        r.sequence(|r| {
            Ok(Self {
                unikernel_device: r.utf8()?,
                host_device: r.utf8()?,
                sector_size: r.int()?,
                size: r.int()?,
            })
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.sequence(|w| {
            w.utf8(&self.unikernel_device);
            w.utf8(&self.host_device);
            w.int(self.sector_size);
            w.int(self.size);
        });
    }
}

/// ```text
/// NetInfo ::= SEQUENCE {
///     unikernelDevice  UTF8String,
///     hostDevice       UTF8String,
///     mac              MacAddr }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetInfo {
    /// Device name in the unikernel.
    pub unikernel_device: String,
    /// The bridge on the host.
    pub host_device: String,
    /// The MAC address actually used.
    pub mac: MacAddr,
}

impl NetInfo {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self> {
        r.sequence(|r| {
            Ok(Self {
                unikernel_device: r.utf8()?,
                host_device: r.utf8()?,
                mac: r.mac()?,
            })
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.sequence(|w| {
            w.utf8(&self.unikernel_device);
            w.utf8(&self.host_device);
            w.mac(&self.mac);
        });
    }
}

/// ```text
/// UnikernelInfo ::= SEQUENCE {                    -- success [13]
///     typ               Typ,
///     startup           Int OPTIONAL,
///     failBehaviour     FailBehaviour,
///     cpuids            SET OF Int,
///     memory            Int,
///     digest            OCTET STRING,
///     blocks        [0] SET OF BlockInfo OPTIONAL,
///     bridges       [1] SET OF NetInfo OPTIONAL,
///     arguments     [2] SEQUENCE OF UTF8String OPTIONAL,
///     started       [3] GeneralizedTime OPTIONAL,   -- always emitted; default 1970-01-01
///     cpus          [4] Int OPTIONAL,               -- always emitted; default 1
///     linuxBootPartition [5] UTF8String OPTIONAL }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnikernelInfo {
    /// Executor kind.
    pub typ: Typ,
    /// Start-up priority.
    pub startup: Option<i64>,
    /// What happens when the unikernel exits.
    pub fail_behaviour: FailBehaviour,
    /// CPUs it is pinned to.
    pub cpuids: BTreeSet<i64>,
    /// Memory in MB.
    pub memory: i64,
    /// solo5: SHA-256 of the uncompressed image; bhyve: the VM name as octets.
    #[serde(serialize_with = "crate::codec::json::hex")]
    pub digest: Vec<u8>,
    /// Block devices, in wire order.
    pub blocks: Vec<BlockInfo>,
    /// Network devices, in wire order.
    pub bridges: Vec<NetInfo>,
    /// Extra arguments.
    pub arguments: Option<Vec<String>>,
    /// When it was started.
    pub started: Timestamp,
    /// Number of vCPUs.
    pub cpus: i64,
    /// grub-bhyve boot partition.
    pub linux_boot_partition: Option<String>,
}

impl UnikernelInfo {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self> {
        r.sequence(|r| {
            let typ = Typ::decode(r)?;
            let startup = r.optional(INTEGER, Reader::int)?;
            let fail_behaviour = FailBehaviour::decode(r)?;
            let cpuids = int_set(r)?;
            let memory = r.int()?;
            let digest = r.octets()?.to_vec();
            let devices = InfoDevices::decode(r)?;
            let cpus = r.optional_explicit(4, Reader::int)?.unwrap_or(1);
            let linux_boot_partition = r.optional_explicit(5, Reader::utf8)?;
            Ok(Self {
                typ,
                startup,
                fail_behaviour,
                cpuids,
                memory,
                digest,
                blocks: devices.blocks,
                bridges: devices.bridges,
                arguments: devices.arguments,
                started: devices.started,
                cpus,
                linux_boot_partition,
            })
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.sequence(|w| {
            self.typ.encode(w);
            if let Some(s) = self.startup {
                w.int(s);
            }
            self.fail_behaviour.encode(w);
            w.set_of(&self.cpuids, |w, c| w.int(*c));
            w.int(self.memory);
            w.octets(&self.digest);
            encode_info_devices(
                w,
                &self.blocks,
                &self.bridges,
                self.arguments.as_deref(),
                self.started,
            );
            w.explicit(4, |w| w.int(self.cpus));
            if let Some(p) = &self.linux_boot_partition {
                w.explicit(5, |w| w.utf8(p));
            }
        });
    }
}

/// Why a [`UnikernelInfo`] has no old form (spec Note W7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OldInfoError {
    /// The old formats carry exactly one CPU id.
    #[error("expected a single CPUid, got {0}")]
    NotOneCpu(usize),
}

/// ```text
/// UnikernelInfoOld5 ::= SEQUENCE {               -- success [11]
///     typ Typ, startup Int OPTIONAL, failBehaviour FailBehaviour,
///     cpuid Int, memory Int, digest OCTET STRING,
///     blocks [0] SET OF BlockInfo OPTIONAL, bridges [1] SET OF NetInfo OPTIONAL,
///     arguments [2] SEQUENCE OF UTF8String OPTIONAL, started [3] GeneralizedTime OPTIONAL }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnikernelInfoOld5 {
    /// Executor kind.
    pub typ: Typ,
    /// Start-up priority.
    pub startup: Option<i64>,
    /// What happens when the unikernel exits.
    pub fail_behaviour: FailBehaviour,
    /// The one CPU it is pinned to.
    pub cpuid: i64,
    /// Memory in MB.
    pub memory: i64,
    /// Image digest (see [`UnikernelInfo::digest`]).
    #[serde(serialize_with = "crate::codec::json::hex")]
    pub digest: Vec<u8>,
    /// Block devices, in wire order.
    pub blocks: Vec<BlockInfo>,
    /// Network devices, in wire order.
    pub bridges: Vec<NetInfo>,
    /// Extra arguments.
    pub arguments: Option<Vec<String>>,
    /// When it was started (always emitted; 1970-01-01 when absent on the wire).
    pub started: Timestamp,
}

impl UnikernelInfoOld5 {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self> {
        r.sequence(|r| {
            let typ = Typ::decode(r)?;
            let startup = r.optional(INTEGER, Reader::int)?;
            let fail_behaviour = FailBehaviour::decode(r)?;
            let cpuid = r.int()?;
            let memory = r.int()?;
            let digest = r.octets()?.to_vec();
            let devices = InfoDevices::decode(r)?;
            Ok(Self {
                typ,
                startup,
                fail_behaviour,
                cpuid,
                memory,
                digest,
                blocks: devices.blocks,
                bridges: devices.bridges,
                arguments: devices.arguments,
                started: devices.started,
            })
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.sequence(|w| {
            self.typ.encode(w);
            if let Some(s) = self.startup {
                w.int(s);
            }
            self.fail_behaviour.encode(w);
            w.int(self.cpuid);
            w.int(self.memory);
            w.octets(&self.digest);
            encode_info_devices(
                w,
                &self.blocks,
                &self.bridges,
                self.arguments.as_deref(),
                self.started,
            );
        });
    }
}

impl TryFrom<&UnikernelInfo> for UnikernelInfoOld5 {
    type Error = OldInfoError;

    fn try_from(info: &UnikernelInfo) -> std::result::Result<Self, OldInfoError> {
        Ok(Self {
            typ: info.typ,
            startup: info.startup,
            fail_behaviour: info.fail_behaviour.clone(),
            cpuid: single_cpu(&info.cpuids)?,
            memory: info.memory,
            digest: info.digest.clone(),
            blocks: info.blocks.clone(),
            bridges: info.bridges.clone(),
            arguments: info.arguments.clone(),
            started: info.started,
        })
    }
}

impl From<UnikernelInfoOld5> for UnikernelInfo {
    /// Up-converts like albatross: `cpuids = {cpuid}`, `cpus = 1`, no boot partition.
    fn from(old: UnikernelInfoOld5) -> Self {
        Self {
            typ: old.typ,
            startup: old.startup,
            fail_behaviour: old.fail_behaviour,
            cpuids: BTreeSet::from([old.cpuid]),
            memory: old.memory,
            digest: old.digest,
            blocks: old.blocks,
            bridges: old.bridges,
            arguments: old.arguments,
            started: old.started,
            cpus: 1,
            linux_boot_partition: None,
        }
    }
}

/// ```text
/// UnikernelInfoOld4 ::= SEQUENCE {               -- success [9]
///     typ Typ, failBehaviour FailBehaviour, cpuid Int, memory Int, digest OCTET STRING,
///     blocks [0] ..., bridges [1] ..., arguments [2] ..., started [3] ... }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnikernelInfoOld4 {
    /// Executor kind.
    pub typ: Typ,
    /// What happens when the unikernel exits.
    pub fail_behaviour: FailBehaviour,
    /// The one CPU it is pinned to.
    pub cpuid: i64,
    /// Memory in MB.
    pub memory: i64,
    /// Image digest (see [`UnikernelInfo::digest`]).
    #[serde(serialize_with = "crate::codec::json::hex")]
    pub digest: Vec<u8>,
    /// Block devices, in wire order.
    pub blocks: Vec<BlockInfo>,
    /// Network devices, in wire order.
    pub bridges: Vec<NetInfo>,
    /// Extra arguments.
    pub arguments: Option<Vec<String>>,
    /// When it was started.
    pub started: Timestamp,
}

impl UnikernelInfoOld4 {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self> {
        r.sequence(|r| {
            let typ = Typ::decode(r)?;
            let fail_behaviour = FailBehaviour::decode(r)?;
            let cpuid = r.int()?;
            let memory = r.int()?;
            let digest = r.octets()?.to_vec();
            let devices = InfoDevices::decode(r)?;
            Ok(Self {
                typ,
                fail_behaviour,
                cpuid,
                memory,
                digest,
                blocks: devices.blocks,
                bridges: devices.bridges,
                arguments: devices.arguments,
                started: devices.started,
            })
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.sequence(|w| {
            self.typ.encode(w);
            self.fail_behaviour.encode(w);
            w.int(self.cpuid);
            w.int(self.memory);
            w.octets(&self.digest);
            encode_info_devices(
                w,
                &self.blocks,
                &self.bridges,
                self.arguments.as_deref(),
                self.started,
            );
        });
    }
}

impl TryFrom<&UnikernelInfo> for UnikernelInfoOld4 {
    type Error = OldInfoError;

    fn try_from(info: &UnikernelInfo) -> std::result::Result<Self, OldInfoError> {
        Ok(Self {
            typ: info.typ,
            fail_behaviour: info.fail_behaviour.clone(),
            cpuid: single_cpu(&info.cpuids)?,
            memory: info.memory,
            digest: info.digest.clone(),
            blocks: info.blocks.clone(),
            bridges: info.bridges.clone(),
            arguments: info.arguments.clone(),
            started: info.started,
        })
    }
}

impl From<UnikernelInfoOld4> for UnikernelInfo {
    /// Up-converts like albatross: no startup, `cpuids = {cpuid}`, `cpus = 1`.
    fn from(old: UnikernelInfoOld4) -> Self {
        Self {
            typ: old.typ,
            startup: None,
            fail_behaviour: old.fail_behaviour,
            cpuids: BTreeSet::from([old.cpuid]),
            memory: old.memory,
            digest: old.digest,
            blocks: old.blocks,
            bridges: old.bridges,
            arguments: old.arguments,
            started: old.started,
            cpus: 1,
            linux_boot_partition: None,
        }
    }
}

/// The one CPU id of a set, or [`OldInfoError::NotOneCpu`].
fn single_cpu(cpuids: &BTreeSet<i64>) -> std::result::Result<i64, OldInfoError> {
    match (cpuids.first(), cpuids.len()) {
        (Some(&cpu), 1) => Ok(cpu),
        (_, n) => Err(OldInfoError::NotOneCpu(n)),
    }
}

/// The `[0]`–`[3]` fields shared by all info formats.
struct InfoDevices {
    blocks: Vec<BlockInfo>,
    bridges: Vec<NetInfo>,
    arguments: Option<Vec<String>>,
    started: Timestamp,
}

impl InfoDevices {
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Self {
            blocks: r
                .optional_explicit(0, |r| r.list(SET, BlockInfo::decode))?
                .unwrap_or_default(),
            bridges: r
                .optional_explicit(1, |r| r.list(SET, NetInfo::decode))?
                .unwrap_or_default(),
            arguments: r.optional_explicit(2, Reader::strings)?,
            started: r
                .optional_explicit(3, Reader::time)?
                .unwrap_or(Timestamp::EPOCH),
        })
    }
}

/// Writes `[0]`, `[1]` (omitted when empty), `[2]` (omitted when `None`) and `[3]`.
fn encode_info_devices(
    w: &mut Writer,
    blocks: &[BlockInfo],
    bridges: &[NetInfo],
    arguments: Option<&[String]>,
    started: Timestamp,
) {
    if !blocks.is_empty() {
        w.explicit(0, |w| w.set_of(blocks, |w, b| b.encode(w)));
    }
    if !bridges.is_empty() {
        w.explicit(1, |w| w.set_of(bridges, |w, b| b.encode(w)));
    }
    if let Some(args) = arguments {
        w.explicit(2, |w| w.strings(args));
    }
    w.explicit(3, |w| w.time(started));
}
