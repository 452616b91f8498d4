//! The command grammar (spec §4) plus petrel's revocation family `[6]` (DESIGN.md).

use std::fmt;

use serde::Serialize;

use crate::codec::config::{Legacy, RestartArgs, UnikernelConfig};
use crate::codec::der::{OCTET_STRING, Reader, Result, SEQUENCE, Writer};
use crate::codec::error::DecodeError;
use crate::codec::time::Timestamp;
use crate::codec::types::{decode_policy, encode_policy};
use crate::policy::Policy;

/// ```text
/// Command ::= CHOICE {
///     console     [0] ConsoleCmd,
///     statistics  [1] StatsCmd,
///     log         [2] NULL,          -- rejected: "support for log dropped"
///     unikernel   [3] UnikernelCmd,
///     policy      [4] PolicyCmd,
///     block       [5] BlockCmd,
///     revocation  [6] RevocationCmd }  -- petrel
/// ```
/// `Display` gives albatross's short descriptions ("unikernel create", "policy add", …).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Command {
    /// Console commands.
    Console(ConsoleCmd),
    /// Statistics commands.
    Statistics(StatsCmd),
    /// Unikernel commands.
    Unikernel(UnikernelCmd),
    /// Policy commands.
    Policy(PolicyCmd),
    /// Block device commands.
    Block(BlockCmd),
    /// Revocation commands (petrel).
    Revocation(RevocationCmd),
}

impl Command {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let (n, mut inner) = r.choice("command")?;
        let cmd = match n {
            0 => Self::Console(ConsoleCmd::decode(&mut inner)?),
            1 => Self::Statistics(StatsCmd::decode(&mut inner)?),
            2 => {
                inner.null()?;
                inner.finish()?;
                return Err(DecodeError::LogDropped);
            }
            3 => Self::Unikernel(UnikernelCmd::decode(&mut inner)?),
            4 => Self::Policy(PolicyCmd::decode(&mut inner)?),
            5 => Self::Block(BlockCmd::decode(&mut inner)?),
            6 => Self::Revocation(RevocationCmd::decode(&mut inner)?),
            n => return Err(Reader::unknown("command", n)),
        };
        inner.finish()?;
        Ok(cmd)
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        match self {
            Self::Console(c) => w.explicit(0, |w| c.encode(w)),
            Self::Statistics(c) => w.explicit(1, |w| c.encode(w)),
            Self::Unikernel(c) => w.explicit(3, |w| c.encode(w)),
            Self::Policy(c) => w.explicit(4, |w| c.encode(w)),
            Self::Block(c) => w.explicit(5, |w| c.encode(w)),
            Self::Revocation(c) => w.explicit(6, |w| c.encode(w)),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Console(c) => c.fmt(f),
            Self::Statistics(c) => c.fmt(f),
            Self::Unikernel(c) => c.fmt(f),
            Self::Policy(c) => c.fmt(f),
            Self::Block(c) => c.fmt(f),
            Self::Revocation(c) => c.fmt(f),
        }
    }
}

/// ```text
/// ConsoleCmd ::= CHOICE {
///     add           [0] Int,         -- albatrossd → console daemon
///     subscribe     [2] SinceCount,
///     listInactive  [3] NULL }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ConsoleCmd {
    /// Start reading the console fifo; the value is the unikernel count allowed below.
    Add(i64),
    /// Subscribe to console output.
    Subscribe(SinceCount),
    /// List console buffers of unikernels no longer running.
    ListInactive,
}

impl ConsoleCmd {
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let (n, mut inner) = r.choice("ConsoleCmd")?;
        let cmd = match n {
            0 => Self::Add(inner.int()?),
            2 => Self::Subscribe(SinceCount::decode(&mut inner)?),
            3 => {
                inner.null()?;
                Self::ListInactive
            }
            n => return Err(Reader::unknown("ConsoleCmd", n)),
        };
        inner.finish()?;
        Ok(cmd)
    }

    fn encode(&self, w: &mut Writer) {
        match self {
            Self::Add(n) => w.explicit(0, |w| w.int(*n)),
            Self::Subscribe(s) => w.explicit(2, |w| s.encode(w)),
            Self::ListInactive => w.explicit(3, Writer::null),
        }
    }
}

impl fmt::Display for ConsoleCmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Add(_) => "console add",
            Self::Subscribe(_) => "console subscribe",
            Self::ListInactive => "console list inactive",
        })
    }
}

/// ```text
/// SinceCount ::= CHOICE {
///     since  [0] GeneralizedTime,
///     count  [1] Int }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SinceCount {
    /// All buffered lines with a timestamp at or after this one.
    Since(Timestamp),
    /// The last `count` buffered lines.
    Count(i64),
}

impl SinceCount {
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let (n, mut inner) = r.choice("SinceCount")?;
        let value = match n {
            0 => Self::Since(inner.time()?),
            1 => Self::Count(inner.int()?),
            n => return Err(Reader::unknown("SinceCount", n)),
        };
        inner.finish()?;
        Ok(value)
    }

    fn encode(&self, w: &mut Writer) {
        match self {
            Self::Since(t) => w.explicit(0, |w| w.time(*t)),
            Self::Count(n) => w.explicit(1, |w| w.int(*n)),
        }
    }
}

/// ```text
/// StatsCmd ::= CHOICE {
///     add        [0] SEQUENCE { vmmdev UTF8String, pid Int,
///                               network SEQUENCE OF SEQUENCE { bridge, tap } },
///     remove     [1] NULL,
///     subscribe  [2] NULL,
///     initial    [3] NULL }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StatsCmd {
    /// Start collecting statistics of a tender process.
    Add(StatsAdd),
    /// Stop collecting.
    Remove,
    /// Subscribe to statistics.
    Subscribe,
    /// albatross-stats → albatrossd at connect time.
    Initial,
}

/// The argument of [`StatsCmd::Add`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct StatsAdd {
    /// `solo5-<pid>` on FreeBSD, empty on Linux.
    pub vmmdev: String,
    /// The tender's process id.
    pub pid: i64,
    /// Network devices of the unikernel.
    pub network: Vec<StatsNetwork>,
}

/// One network device of [`StatsAdd`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct StatsNetwork {
    /// The unikernel's network device name (albatross calls it `bridge`).
    pub bridge: String,
    /// The tap device on the host.
    pub tap: String,
}

impl StatsCmd {
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let (n, mut inner) = r.choice("StatsCmd")?;
        let cmd = match n {
            0 => Self::Add(inner.sequence(|r| {
                Ok(StatsAdd {
                    vmmdev: r.utf8()?,
                    pid: r.int()?,
                    network: r.list(SEQUENCE, |r| {
                        r.sequence(|r| {
                            Ok(StatsNetwork {
                                bridge: r.utf8()?,
                                tap: r.utf8()?,
                            })
                        })
                    })?,
                })
            })?),
            1 => {
                inner.null()?;
                Self::Remove
            }
            2 => {
                inner.null()?;
                Self::Subscribe
            }
            3 => {
                inner.null()?;
                Self::Initial
            }
            n => return Err(Reader::unknown("StatsCmd", n)),
        };
        inner.finish()?;
        Ok(cmd)
    }

    fn encode(&self, w: &mut Writer) {
        match self {
            Self::Add(add) => w.explicit(0, |w| {
                w.sequence(|w| {
                    w.utf8(&add.vmmdev);
                    w.int(add.pid);
                    w.sequence_of(&add.network, |w, n| {
                        w.sequence(|w| {
                            w.utf8(&n.bridge);
                            w.utf8(&n.tap);
                        });
                    });
                });
            }),
            Self::Remove => w.explicit(1, Writer::null),
            Self::Subscribe => w.explicit(2, Writer::null),
            Self::Initial => w.explicit(3, Writer::null),
        }
    }
}

impl fmt::Display for StatsCmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // albatross's words, including its "stat" for the last three.
        f.write_str(match self {
            Self::Add(_) => "stats add",
            Self::Remove => "stat remove",
            Self::Subscribe => "stat subscribe",
            Self::Initial => "stat initial",
        })
    }
}

/// ```text
/// UnikernelCmd ::= CHOICE {
///     destroy        [3]  NULL,
///     createV3       [9]  UnikernelConfigV3,    -- legacy
///     forceCreateV3  [10] UnikernelConfigV3,    -- legacy
///     get            [11] Int,                  -- compression level 0..9
///     restart        [14] RestartArgs,
///     infoOld4       [15] NULL,
///     createV4       [16] UnikernelConfigV4,    -- legacy
///     forceCreateV4  [17] UnikernelConfigV4,    -- legacy
///     infoOld5       [18] NULL,
///     info           [19] NULL,
///     create         [20] UnikernelConfig,
///     forceCreate    [21] UnikernelConfig }
/// ```
/// The legacy create tags decode into [`UnikernelCmd::Create`] /
/// [`UnikernelCmd::ForceCreate`] with the configuration up-converted; the encoder writes
/// `[20]` / `[21]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum UnikernelCmd {
    /// Current information (`[19]`, answered with success `[13]`).
    Info,
    /// Old information query `[15]`, answered with success `[9]`.
    InfoOld4,
    /// Old information query `[18]`, answered with success `[11]`.
    InfoOld5,
    /// Create; fails if one with the same name runs.
    Create(UnikernelConfig),
    /// Create, destroying one with the same name first.
    ForceCreate(UnikernelConfig),
    /// Restart, optionally with new arguments.
    Restart(RestartArgs),
    /// Destroy.
    Destroy,
    /// Fetch the image with this compression level.
    Get(i64),
}

impl UnikernelCmd {
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let (n, mut inner) = r.choice("UnikernelCmd")?;
        let i = &mut inner;
        let cmd = match n {
            3 => i.null().map(|()| Self::Destroy)?,
            9 => Self::Create(UnikernelConfig::decode_legacy(i, Legacy::V3)?),
            10 => Self::ForceCreate(UnikernelConfig::decode_legacy(i, Legacy::V3)?),
            11 => Self::Get(i.int()?),
            14 => Self::Restart(RestartArgs::decode(i)?),
            15 => i.null().map(|()| Self::InfoOld4)?,
            16 => Self::Create(UnikernelConfig::decode_legacy(i, Legacy::V4)?),
            17 => Self::ForceCreate(UnikernelConfig::decode_legacy(i, Legacy::V4)?),
            18 => i.null().map(|()| Self::InfoOld5)?,
            19 => i.null().map(|()| Self::Info)?,
            20 => Self::Create(UnikernelConfig::decode(i)?),
            21 => Self::ForceCreate(UnikernelConfig::decode(i)?),
            n => return Err(Reader::unknown("UnikernelCmd", n)),
        };
        inner.finish()?;
        Ok(cmd)
    }

    fn encode(&self, w: &mut Writer) {
        match self {
            Self::Destroy => w.explicit(3, Writer::null),
            Self::Get(level) => w.explicit(11, |w| w.int(*level)),
            Self::Restart(args) => w.explicit(14, |w| args.encode(w)),
            Self::InfoOld4 => w.explicit(15, Writer::null),
            Self::InfoOld5 => w.explicit(18, Writer::null),
            Self::Info => w.explicit(19, Writer::null),
            Self::Create(c) => w.explicit(20, |w| c.encode(w)),
            Self::ForceCreate(c) => w.explicit(21, |w| c.encode(w)),
        }
    }
}

impl fmt::Display for UnikernelCmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Info => "unikernel info",
            Self::InfoOld4 => "old unikernel info4",
            Self::InfoOld5 => "old unikernel info5",
            Self::Create(_) => "unikernel create",
            Self::ForceCreate(_) => "unikernel force create",
            Self::Restart(_) => "unikernel restart",
            Self::Destroy => "unikernel destroy",
            Self::Get(_) => "unikernel get",
        })
    }
}

/// ```text
/// PolicyCmd ::= CHOICE {
///     info    [0] NULL,
///     add     [1] Policy,
///     remove  [2] NULL }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PolicyCmd {
    /// The policies at and below the path.
    Info,
    /// Install a policy at the path (also the command of every intermediate CA).
    Add(Policy),
    /// Remove the policy at the path.
    Remove,
}

impl PolicyCmd {
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let (n, mut inner) = r.choice("PolicyCmd")?;
        let cmd = match n {
            0 => inner.null().map(|()| Self::Info)?,
            1 => Self::Add(decode_policy(&mut inner)?),
            2 => inner.null().map(|()| Self::Remove)?,
            n => return Err(Reader::unknown("PolicyCmd", n)),
        };
        inner.finish()?;
        Ok(cmd)
    }

    fn encode(&self, w: &mut Writer) {
        match self {
            Self::Info => w.explicit(0, Writer::null),
            Self::Add(p) => w.explicit(1, |w| encode_policy(p, w)),
            Self::Remove => w.explicit(2, Writer::null),
        }
    }
}

impl fmt::Display for PolicyCmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Info => "policy info",
            Self::Add(_) => "policy add",
            Self::Remove => "policy remove",
        })
    }
}

/// ```text
/// BlockCmd ::= CHOICE {
///     info     [0] NULL,
///     add      [1] Int,                    -- size in MB
///     remove   [2] NULL,
///     addOld   [3] SEQUENCE { size Int, compress BOOLEAN, data OCTET STRING OPTIONAL },
///     setOld   [4] SEQUENCE { compress BOOLEAN, data OCTET STRING },
///     dumpOld  [5] Int,
///     dump     [6] Int,
///     set      [7] BOOLEAN }               -- the streamed data is compressed
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum BlockCmd {
    /// Block devices at and below the path.
    Info,
    /// Create an empty block device of this many MB.
    Add(i64),
    /// Remove the block device.
    Remove,
    /// Legacy create with inline data.
    AddOld {
        /// Size in MB.
        size: i64,
        /// `data` is zlib-compressed.
        compress: bool,
        /// Initial content.
        #[serde(serialize_with = "crate::codec::json::image_opt")]
        data: Option<Vec<u8>>,
    },
    /// Legacy replace of the content with inline data.
    SetOld {
        /// `data` is zlib-compressed.
        compress: bool,
        /// New content.
        #[serde(serialize_with = "crate::codec::json::image")]
        data: Vec<u8>,
    },
    /// Legacy dump with this compression level; the whole image in one reply.
    DumpOld(i64),
    /// Dump with this compression level; streamed (spec §8.4).
    Dump(i64),
    /// Replace the content with the stream that follows; `true` = it is compressed.
    Set(bool),
}

impl BlockCmd {
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let (n, mut inner) = r.choice("BlockCmd")?;
        let i = &mut inner;
        let cmd = match n {
            0 => i.null().map(|()| Self::Info)?,
            1 => Self::Add(i.int()?),
            2 => i.null().map(|()| Self::Remove)?,
            3 => i.sequence(|r| {
                Ok(Self::AddOld {
                    size: r.int()?,
                    compress: r.boolean()?,
                    data: r.optional(OCTET_STRING, |r| r.octets().map(<[u8]>::to_vec))?,
                })
            })?,
            4 => i.sequence(|r| {
                Ok(Self::SetOld {
                    compress: r.boolean()?,
                    data: r.octets()?.to_vec(),
                })
            })?,
            5 => Self::DumpOld(i.int()?),
            6 => Self::Dump(i.int()?),
            7 => Self::Set(i.boolean()?),
            n => return Err(Reader::unknown("BlockCmd", n)),
        };
        inner.finish()?;
        Ok(cmd)
    }

    fn encode(&self, w: &mut Writer) {
        match self {
            Self::Info => w.explicit(0, Writer::null),
            Self::Add(size) => w.explicit(1, |w| w.int(*size)),
            Self::Remove => w.explicit(2, Writer::null),
            Self::AddOld {
                size,
                compress,
                data,
            } => w.explicit(3, |w| {
                w.sequence(|w| {
                    w.int(*size);
                    w.boolean(*compress);
                    if let Some(d) = data {
                        w.octets(d);
                    }
                });
            }),
            Self::SetOld { compress, data } => w.explicit(4, |w| {
                w.sequence(|w| {
                    w.boolean(*compress);
                    w.octets(data);
                });
            }),
            Self::DumpOld(level) => w.explicit(5, |w| w.int(*level)),
            Self::Dump(level) => w.explicit(6, |w| w.int(*level)),
            Self::Set(compressed) => w.explicit(7, |w| w.boolean(*compressed)),
        }
    }
}

impl fmt::Display for BlockCmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Info => "block info",
            Self::Add(_) => "block add",
            Self::Remove => "block remove",
            Self::AddOld { .. } => "old block add",
            Self::SetOld { .. } => "old block set",
            Self::DumpOld(_) => "old block dump",
            Self::Dump(_) => "block dump",
            Self::Set(_) => "block set",
        })
    }
}

/// ```text
/// RevocationCmd ::= CHOICE {      -- petrel (DESIGN.md "Revocation")
///     upload [0] NULL,            -- the DER CRL follows as data chunks
///     info   [1] NULL }           -- reply: the stored CRLs of the caller's chain
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RevocationCmd {
    /// Upload a CRL for the leaf's issuer.
    Upload,
    /// Show the stored CRLs of the caller's chain.
    Info,
}

impl RevocationCmd {
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let (n, mut inner) = r.choice("RevocationCmd")?;
        let cmd = match n {
            0 => Self::Upload,
            1 => Self::Info,
            n => return Err(Reader::unknown("RevocationCmd", n)),
        };
        inner.null()?;
        inner.finish()?;
        Ok(cmd)
    }

    fn encode(self, w: &mut Writer) {
        let n = match self {
            Self::Upload => 0,
            Self::Info => 1,
        };
        w.explicit(n, Writer::null);
    }
}

impl fmt::Display for RevocationCmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Upload => "revocation upload",
            Self::Info => "revocation info",
        })
    }
}
