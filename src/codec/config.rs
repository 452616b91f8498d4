//! Unikernel configurations and restart arguments (spec §5.3–5.5), with the legacy forms
//! decoded into the current ones.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::codec::der::{INTEGER, Reader, Result, SEQUENCE, SET, UTF8_STRING, Writer};
use crate::codec::types::{BlockDeviceSpec, FailBehaviour, NetDeviceSpec, Typ, int_set};

/// Start-up priority used when none is configured (albatross: 50).
pub const DEFAULT_STARTUP: i64 = 50;

/// ```text
/// UnikernelConfig ::= SEQUENCE {
///     typ                 Typ,
///     compressed          BOOLEAN,
///     image               OCTET STRING,
///     startup             Int OPTIONAL,
///     addName             BOOLEAN,
///     failBehaviour       FailBehaviour,
///     cpuids              SET OF Int,
///     memory              Int,
///     blocks          [0] SET OF BlockDeviceSpec OPTIONAL,
///     bridges         [1] SET OF NetDeviceSpec OPTIONAL,
///     arguments       [2] SEQUENCE OF UTF8String OPTIONAL,
///     cpus            [3] Int OPTIONAL,
///     linuxBootPartition [4] UTF8String OPTIONAL }
/// ```
/// Encoder rules (albatross's): empty `blocks`/`bridges` are omitted, `arguments` only
/// when `Some` (an empty list is written as an empty SEQUENCE OF), `cpus` always.
/// Device specs are kept in wire order on decode and sorted by encoding on encode.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnikernelConfig {
    /// Executor kind.
    pub typ: Typ,
    /// The image is a zlib stream.
    pub compressed: bool,
    /// The image; empty over TLS when it is streamed after the handshake (spec §8.2).
    #[serde(serialize_with = "crate::codec::json::image")]
    pub image: Vec<u8>,
    /// Start-up priority (lower first); `None` = [`DEFAULT_STARTUP`].
    pub startup: Option<i64>,
    /// Prepend `--name=<label>` to argv.
    pub add_name: bool,
    /// What to do when the unikernel exits.
    pub fail_behaviour: FailBehaviour,
    /// CPUs to pin to.
    pub cpuids: BTreeSet<i64>,
    /// Memory in MB.
    pub memory: i64,
    /// Block devices (`[0]`).
    pub blocks: Vec<BlockDeviceSpec>,
    /// Network devices (`[1]`).
    pub bridges: Vec<NetDeviceSpec>,
    /// Extra unikernel arguments (`[2]`); `None` differs from an empty list.
    pub arguments: Option<Vec<String>>,
    /// Number of vCPUs (`[3]`, BHyve); 1 when absent on the wire.
    pub cpus: i64,
    /// grub-bhyve boot partition (`[4]`).
    pub linux_boot_partition: Option<String>,
}

impl Default for UnikernelConfig {
    /// albatross-client's defaults: solo5, uncompressed, empty image, add the name, quit
    /// on exit, CPU 0, 32 MB, no devices, no arguments, 1 vCPU.
    fn default() -> Self {
        Self {
            typ: Typ::Solo5,
            compressed: false,
            image: Vec::new(),
            startup: None,
            add_name: true,
            fail_behaviour: FailBehaviour::Quit,
            cpuids: BTreeSet::from([0]),
            memory: 32,
            blocks: Vec::new(),
            bridges: Vec::new(),
            arguments: None,
            cpus: 1,
            linux_boot_partition: None,
        }
    }
}

impl UnikernelConfig {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self> {
        r.sequence(|r| {
            let typ = Typ::decode(r)?;
            let compressed = r.boolean()?;
            let image = r.octets()?.to_vec();
            let startup = r.optional(INTEGER, Reader::int)?;
            let add_name = r.boolean()?;
            let fail_behaviour = FailBehaviour::decode(r)?;
            let cpuids = int_set(r)?;
            let memory = r.int()?;
            let devices = Devices::decode(r, DeviceLists::Specs)?;
            let cpus = r.optional_explicit(3, Reader::int)?.unwrap_or(1);
            let linux_boot_partition = r.optional_explicit(4, Reader::utf8)?;
            Ok(Self {
                typ,
                compressed,
                image,
                startup,
                add_name,
                fail_behaviour,
                cpuids,
                memory,
                blocks: devices.blocks,
                bridges: devices.bridges,
                arguments: devices.arguments,
                cpus,
                linux_boot_partition,
            })
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.sequence(|w| {
            self.typ.encode(w);
            w.boolean(self.compressed);
            w.octets(&self.image);
            if let Some(s) = self.startup {
                w.int(s);
            }
            w.boolean(self.add_name);
            self.fail_behaviour.encode(w);
            w.set_of(&self.cpuids, |w, c| w.int(*c));
            w.int(self.memory);
            encode_devices(w, &self.blocks, &self.bridges, self.arguments.as_deref());
            w.explicit(3, |w| w.int(self.cpus));
            if let Some(p) = &self.linux_boot_partition {
                w.explicit(4, |w| w.utf8(p));
            }
        });
    }

    /// Decodes a legacy configuration and up-converts it (spec §5.5): `cpuids = {cpuid}`,
    /// `cpus = 1`, no boot partition; where the format has none, no `startup` and
    /// `addName = TRUE`; names-only device lists become specs without options.
    pub(crate) fn decode_legacy(r: &mut Reader<'_>, version: Legacy) -> Result<Self> {
        if version == Legacy::V0 {
            return decode_v0(r);
        }
        r.sequence(|r| {
            let typ = Typ::decode(r)?;
            let compressed = r.boolean()?;
            let image = r.octets()?.to_vec();
            let (startup, add_name) = if version == Legacy::V4 {
                (r.optional(INTEGER, Reader::int)?, r.boolean()?)
            } else {
                (None, true)
            };
            let fail_behaviour = FailBehaviour::decode(r)?;
            let cpuid = r.int()?;
            let memory = r.int()?;
            let lists = match version {
                Legacy::V1 => DeviceLists::NamesOnly,
                Legacy::V2 => DeviceLists::V2,
                _ => DeviceLists::Specs,
            };
            let devices = Devices::decode(r, lists)?;
            Ok(Self {
                typ,
                compressed,
                image,
                startup,
                add_name,
                fail_behaviour,
                cpuids: BTreeSet::from([cpuid]),
                memory,
                blocks: devices.blocks,
                bridges: devices.bridges,
                arguments: devices.arguments,
                cpus: 1,
                linux_boot_partition: None,
            })
        })
    }
}

/// The legacy configuration formats (spec §5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Legacy {
    /// `UnikernelConfigV0` (state `[1]`).
    V0,
    /// `UnikernelConfigV1` (state `[0]`).
    V1,
    /// `UnikernelConfigV2` (state `[2]`).
    V2,
    /// `UnikernelConfigV3` (commands `[9]`/`[10]`, state `[3]`/`[4]`).
    V3,
    /// `UnikernelConfigV4` (commands `[16]`/`[17]`, state `[5]`).
    V4,
}

/// ```text
/// UnikernelConfigV0 ::= SEQUENCE {
///     cpu Int, memory Int, block UTF8String OPTIONAL,
///     networkInterfaces SEQUENCE OF UTF8String OPTIONAL, image ImageV0,
///     arguments SEQUENCE OF UTF8String OPTIONAL }
/// ImageV0 ::= CHOICE { hvtAmd64 [0] OCTET STRING, hvtArm64 [1] OCTET STRING,
///                      hvtAmd64Compressed [2] OCTET STRING }
/// ```
/// Up-converted with `typ = solo5`, `compressed` iff `[2]`, `failBehaviour = quit`.
fn decode_v0(r: &mut Reader<'_>) -> Result<UnikernelConfig> {
    r.sequence(|r| {
        let cpu = r.int()?;
        let memory = r.int()?;
        let block = r.optional(UTF8_STRING, Reader::utf8)?;
        let nets = r.optional(SEQUENCE, Reader::strings)?;
        let (n, mut inner) = r.choice("ImageV0")?;
        if n > 2 {
            return Err(Reader::unknown("ImageV0", n));
        }
        let image = inner.octets()?.to_vec();
        inner.finish()?;
        let arguments = r.optional(SEQUENCE, Reader::strings)?;
        Ok(UnikernelConfig {
            typ: Typ::Solo5,
            compressed: n == 2,
            image,
            startup: None,
            add_name: true,
            fail_behaviour: FailBehaviour::Quit,
            cpuids: BTreeSet::from([cpu]),
            memory,
            blocks: block.into_iter().map(BlockDeviceSpec::named).collect(),
            bridges: nets
                .unwrap_or_default()
                .into_iter()
                .map(NetDeviceSpec::named)
                .collect(),
            arguments,
            cpus: 1,
            linux_boot_partition: None,
        })
    })
}

/// ```text
/// UnikernelArguments ::= SEQUENCE {
///     failBehaviour       FailBehaviour,
///     startup             Int OPTIONAL,
///     addName             BOOLEAN,
///     cpuids              SET OF Int,
///     memory              Int,
///     blocks          [0] SET OF BlockDeviceSpec OPTIONAL,
///     bridges         [1] SET OF NetDeviceSpec OPTIONAL,
///     arguments       [2] SEQUENCE OF UTF8String OPTIONAL,
///     cpus            [3] Int OPTIONAL,        -- always emitted; default 1
///     linuxBootPartition [4] UTF8String OPTIONAL }
/// ```
/// Same encoder rules as [`UnikernelConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnikernelArguments {
    /// What to do when the unikernel exits.
    pub fail_behaviour: FailBehaviour,
    /// Start-up priority.
    pub startup: Option<i64>,
    /// Prepend `--name=<label>` to argv.
    pub add_name: bool,
    /// CPUs to pin to.
    pub cpuids: BTreeSet<i64>,
    /// Memory in MB.
    pub memory: i64,
    /// Block devices.
    pub blocks: Vec<BlockDeviceSpec>,
    /// Network devices.
    pub bridges: Vec<NetDeviceSpec>,
    /// Extra unikernel arguments.
    pub arguments: Option<Vec<String>>,
    /// Number of vCPUs.
    pub cpus: i64,
    /// grub-bhyve boot partition.
    pub linux_boot_partition: Option<String>,
}

impl UnikernelArguments {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self> {
        r.sequence(|r| {
            let fail_behaviour = FailBehaviour::decode(r)?;
            let startup = r.optional(INTEGER, Reader::int)?;
            let add_name = r.boolean()?;
            let cpuids = int_set(r)?;
            let memory = r.int()?;
            let devices = Devices::decode(r, DeviceLists::Specs)?;
            let cpus = r.optional_explicit(3, Reader::int)?.unwrap_or(1);
            let linux_boot_partition = r.optional_explicit(4, Reader::utf8)?;
            Ok(Self {
                fail_behaviour,
                startup,
                add_name,
                cpuids,
                memory,
                blocks: devices.blocks,
                bridges: devices.bridges,
                arguments: devices.arguments,
                cpus,
                linux_boot_partition,
            })
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.sequence(|w| {
            self.fail_behaviour.encode(w);
            if let Some(s) = self.startup {
                w.int(s);
            }
            w.boolean(self.add_name);
            w.set_of(&self.cpuids, |w, c| w.int(*c));
            w.int(self.memory);
            encode_devices(w, &self.blocks, &self.bridges, self.arguments.as_deref());
            w.explicit(3, |w| w.int(self.cpus));
            if let Some(p) = &self.linux_boot_partition {
                w.explicit(4, |w| w.utf8(p));
            }
        });
    }

    /// `UnikernelArgumentsV0` (`with_startup = false`) or `V1`, up-converted: `cpuids =
    /// {cpuid}`, `cpus = 1`; V0 also no `startup` and `addName = TRUE`.
    fn decode_legacy(r: &mut Reader<'_>, with_startup: bool) -> Result<Self> {
        r.sequence(|r| {
            let fail_behaviour = FailBehaviour::decode(r)?;
            let (startup, add_name) = if with_startup {
                (r.optional(INTEGER, Reader::int)?, r.boolean()?)
            } else {
                (None, true)
            };
            let cpuid = r.int()?;
            let memory = r.int()?;
            let devices = Devices::decode(r, DeviceLists::Specs)?;
            Ok(Self {
                fail_behaviour,
                startup,
                add_name,
                cpuids: BTreeSet::from([cpuid]),
                memory,
                blocks: devices.blocks,
                bridges: devices.bridges,
                arguments: devices.arguments,
                cpus: 1,
                linux_boot_partition: None,
            })
        })
    }
}

/// ```text
/// RestartArgs ::= CHOICE {
///     noArguments  [0] NULL,
///     argumentsV0  [1] UnikernelArgumentsV0,    -- legacy
///     argumentsV1  [2] UnikernelArgumentsV1,    -- legacy
///     arguments    [3] UnikernelArguments }
/// ```
/// The legacy forms decode into [`RestartArgs::Arguments`]; the encoder writes `[0]` or
/// `[3]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RestartArgs {
    /// Restart with the current configuration.
    NoArguments,
    /// Restart with these arguments.
    Arguments(UnikernelArguments),
}

impl RestartArgs {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let (n, mut inner) = r.choice("RestartArgs")?;
        let value = match n {
            0 => {
                inner.null()?;
                Self::NoArguments
            }
            1 => Self::Arguments(UnikernelArguments::decode_legacy(&mut inner, false)?),
            2 => Self::Arguments(UnikernelArguments::decode_legacy(&mut inner, true)?),
            3 => Self::Arguments(UnikernelArguments::decode(&mut inner)?),
            n => return Err(Reader::unknown("RestartArgs", n)),
        };
        inner.finish()?;
        Ok(value)
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        match self {
            Self::NoArguments => w.explicit(0, Writer::null),
            Self::Arguments(a) => w.explicit(3, |w| a.encode(w)),
        }
    }
}

/// How a configuration format writes its device lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeviceLists {
    /// `[0] SET OF BlockDeviceSpec`, `[1] SET OF NetDeviceSpec` (V3 and later).
    Specs,
    /// `[0] SET OF UTF8String`, `[1] SEQUENCE OF SEQUENCE { netif, bridge OPTIONAL }`.
    V2,
    /// `[0] SET OF UTF8String`, `[1] SET OF UTF8String`.
    NamesOnly,
}

/// The `[0]`, `[1]`, `[2]` fields shared by every configuration format.
struct Devices {
    blocks: Vec<BlockDeviceSpec>,
    bridges: Vec<NetDeviceSpec>,
    arguments: Option<Vec<String>>,
}

impl Devices {
    fn decode(r: &mut Reader<'_>, lists: DeviceLists) -> Result<Self> {
        let blocks = r.optional_explicit(0, |r| match lists {
            DeviceLists::Specs => r.list(SET, BlockDeviceSpec::decode),
            DeviceLists::V2 | DeviceLists::NamesOnly => Ok(r
                .list(SET, Reader::utf8)?
                .into_iter()
                .map(BlockDeviceSpec::named)
                .collect()),
        })?;
        let bridges = r.optional_explicit(1, |r| match lists {
            DeviceLists::Specs => r.list(SET, NetDeviceSpec::decode),
            DeviceLists::V2 => r.list(SEQUENCE, |r| {
                r.sequence(|r| {
                    Ok(NetDeviceSpec {
                        netif: r.utf8()?,
                        bridge: r.optional(UTF8_STRING, Reader::utf8)?,
                        mac: None,
                    })
                })
            }),
            DeviceLists::NamesOnly => Ok(r
                .list(SET, Reader::utf8)?
                .into_iter()
                .map(NetDeviceSpec::named)
                .collect()),
        })?;
        let arguments = r.optional_explicit(2, Reader::strings)?;
        Ok(Self {
            blocks: blocks.unwrap_or_default(),
            bridges: bridges.unwrap_or_default(),
            arguments,
        })
    }
}

/// Writes `[0]`, `[1]` (omitted when empty) and `[2]` (omitted when `None`).
fn encode_devices(
    w: &mut Writer,
    blocks: &[BlockDeviceSpec],
    bridges: &[NetDeviceSpec],
    arguments: Option<&[String]>,
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
}
