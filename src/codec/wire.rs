//! The `wire` message (spec §6): header, command / success / failure / data payloads.

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use crate::codec::VERSION;
use crate::codec::command::Command;
use crate::codec::der::{Reader, Result, SEQUENCE, Writer};
use crate::codec::error::DecodeError;
use crate::codec::info::{UnikernelInfo, UnikernelInfoOld4, UnikernelInfoOld5};
use crate::codec::stats::StatsData;
use crate::codec::time::Timestamp;
use crate::codec::types::{decode_policy, encode_policy};
use crate::name::Name;
use crate::policy::Policy;

/// ```text
/// Wire ::= SEQUENCE {
///     header   Header,
///     payload  Payload }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Wire {
    /// Version, sequence number and the name the message is about.
    pub header: Header,
    /// What the message carries.
    pub payload: Payload,
}

impl Wire {
    /// A message with this header and payload.
    pub fn new(header: Header, payload: Payload) -> Self {
        Self { header, payload }
    }

    /// A reply: exactly the request's header (spec §6.3) with `payload`.
    pub fn reply(request: &Header, payload: Payload) -> Self {
        Self::new(request.clone(), payload)
    }

    /// A command message.
    pub fn command(header: Header, command: Command) -> Self {
        Self::new(header, Payload::Command(command))
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self> {
        r.sequence(|r| {
            Ok(Self {
                header: Header::decode(r)?,
                payload: Payload::decode(r)?,
            })
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.sequence(|w| {
            self.header.encode(w);
            self.payload.encode(w);
        });
    }
}

/// ```text
/// Header ::= SEQUENCE {
///     version   Version,    -- INTEGER 5
///     sequence  Int64,      -- OCTET STRING, 8 octets big-endian
///     name      NameStr }
/// ```
/// The version is always [`VERSION`]; decoding anything else fails.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Header {
    /// Request/reply correlation; clients send 0.
    pub sequence: i64,
    /// The object of the message (unikernel, block device or path).
    pub name: Name,
}

impl Header {
    /// A header with this sequence number and name.
    pub fn new(sequence: i64, name: Name) -> Self {
        Self { sequence, name }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self> {
        r.sequence(|r| {
            decode_version(r)?;
            Ok(Self {
                sequence: r.int64()?,
                name: r.name()?,
            })
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.sequence(|w| {
            w.int(VERSION);
            w.int64(self.sequence);
            w.name(&self.name);
        });
    }
}

impl Serialize for Header {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Header", 3)?;
        s.serialize_field("version", &VERSION)?;
        s.serialize_field("sequence", &self.sequence)?;
        s.serialize_field("name", &self.name)?;
        s.end()
    }
}

/// Reads `Version` and fails unless it is [`VERSION`].
pub(crate) fn decode_version(r: &mut Reader<'_>) -> Result<()> {
    match r.int()? {
        VERSION => Ok(()),
        other => Err(DecodeError::UnknownVersion(other)),
    }
}

/// ```text
/// Payload ::= CHOICE {
///     command  [0] Command,
///     success  [1] Success,
///     failure  [2] UTF8String,
///     data     [3] Data }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Payload {
    /// A request.
    Command(Command),
    /// A successful reply.
    Success(Success),
    /// A failed reply with a human-readable text.
    Failure(String),
    /// Streamed data.
    Data(Data),
}

impl Payload {
    /// A failure with this text.
    pub fn failure(text: impl Into<String>) -> Self {
        Self::Failure(text.into())
    }

    /// A `success string` with this text.
    pub fn success_string(text: impl Into<String>) -> Self {
        Self::Success(Success::String(text.into()))
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let (n, mut inner) = r.choice("payload")?;
        let payload = match n {
            0 => Self::Command(Command::decode(&mut inner)?),
            1 => Self::Success(Success::decode(&mut inner)?),
            2 => Self::Failure(inner.utf8()?),
            3 => Self::Data(Data::decode(&mut inner)?),
            n => return Err(Reader::unknown("payload", n)),
        };
        inner.finish()?;
        Ok(payload)
    }

    fn encode(&self, w: &mut Writer) {
        match self {
            Self::Command(c) => w.explicit(0, |w| c.encode(w)),
            Self::Success(s) => w.explicit(1, |w| s.encode(w)),
            Self::Failure(text) => w.explicit(2, |w| w.utf8(text)),
            Self::Data(d) => w.explicit(3, |w| d.encode(w)),
        }
    }
}

/// ```text
/// Success ::= CHOICE {
///     empty               [0]  NULL,
///     string              [1]  UTF8String,
///     policies            [2]  SEQUENCE OF SEQUENCE { name NameStr, policy Policy },
///     blockDevices        [4]  SEQUENCE OF SEQUENCE { name NameStr, size Int, active BOOLEAN },
///     unikernelImage      [6]  SEQUENCE { compressed BOOLEAN, image OCTET STRING },
///     oldBlockDeviceImage [7]  SEQUENCE { compressed BOOLEAN, image OCTET STRING },
///     oldUnikernelInfo4   [9]  SEQUENCE OF SEQUENCE { name NameStr, info UnikernelInfoOld4 },
///     blockDeviceImage    [10] BOOLEAN,
///     oldUnikernelInfo5   [11] SEQUENCE OF SEQUENCE { name NameStr, info UnikernelInfoOld5 },
///     consoles            [12] SEQUENCE OF NameStr,
///     unikernelInfo       [13] SEQUENCE OF SEQUENCE { name NameStr, info UnikernelInfo } }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Success {
    /// No content.
    Empty,
    /// A text ("created unikernel", …).
    String(String),
    /// Policies, names relative to the query.
    Policies(Vec<PolicyEntry>),
    /// Block devices.
    BlockDevices(Vec<BlockDevice>),
    /// A unikernel image (reply to `get`).
    UnikernelImage {
        /// The image is zlib-compressed.
        compressed: bool,
        /// The image.
        #[serde(serialize_with = "crate::codec::json::image")]
        image: Vec<u8>,
    },
    /// A whole block device image (reply to `dumpOld`).
    OldBlockDeviceImage {
        /// The image is zlib-compressed.
        compressed: bool,
        /// The content.
        #[serde(serialize_with = "crate::codec::json::image")]
        image: Vec<u8>,
    },
    /// Unikernel information in the old format 4.
    OldUnikernelInfo4(Vec<InfoEntry<UnikernelInfoOld4>>),
    /// Start of a block dump stream; `true` = the data that follows is compressed.
    BlockDeviceImage(bool),
    /// Unikernel information in the old format 5.
    OldUnikernelInfo5(Vec<InfoEntry<UnikernelInfoOld5>>),
    /// Names of console buffers.
    Consoles(Vec<Name>),
    /// Unikernel information.
    UnikernelInfo(Vec<InfoEntry<UnikernelInfo>>),
}

/// `SEQUENCE { name NameStr, policy Policy }` of [`Success::Policies`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PolicyEntry {
    /// Path name, relative to the query.
    pub name: Name,
    /// The policy.
    pub policy: Policy,
}

/// `SEQUENCE { name NameStr, size Int, active BOOLEAN }` of [`Success::BlockDevices`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct BlockDevice {
    /// Block device name.
    pub name: Name,
    /// Size in MB.
    pub size: i64,
    /// Attached to a running unikernel.
    pub active: bool,
}

/// `SEQUENCE { name NameStr, info … }` of the unikernel information replies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct InfoEntry<T> {
    /// Unikernel name.
    pub name: Name,
    /// Its information.
    pub info: T,
}

impl<T> InfoEntry<T> {
    fn decode(r: &mut Reader<'_>, info: fn(&mut Reader<'_>) -> Result<T>) -> Result<Self> {
        r.sequence(|r| {
            Ok(Self {
                name: r.name()?,
                info: info(r)?,
            })
        })
    }

    fn encode(&self, w: &mut Writer, info: fn(&T, &mut Writer)) {
        w.sequence(|w| {
            w.name(&self.name);
            info(&self.info, w);
        });
    }
}

impl Success {
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let (n, mut inner) = r.choice("Success")?;
        let i = &mut inner;
        let success = match n {
            0 => i.null().map(|()| Self::Empty)?,
            1 => Self::String(i.utf8()?),
            2 => Self::Policies(i.list(SEQUENCE, |r| {
                r.sequence(|r| {
                    Ok(PolicyEntry {
                        name: r.name()?,
                        policy: decode_policy(r)?,
                    })
                })
            })?),
            4 => Self::BlockDevices(i.list(SEQUENCE, |r| {
                r.sequence(|r| {
                    Ok(BlockDevice {
                        name: r.name()?,
                        size: r.int()?,
                        active: r.boolean()?,
                    })
                })
            })?),
            6 => {
                let (compressed, image) = compressed_image(i)?;
                Self::UnikernelImage { compressed, image }
            }
            7 => {
                let (compressed, image) = compressed_image(i)?;
                Self::OldBlockDeviceImage { compressed, image }
            }
            9 => Self::OldUnikernelInfo4(i.list(SEQUENCE, |r| {
                InfoEntry::decode(r, UnikernelInfoOld4::decode)
            })?),
            10 => Self::BlockDeviceImage(i.boolean()?),
            11 => Self::OldUnikernelInfo5(i.list(SEQUENCE, |r| {
                InfoEntry::decode(r, UnikernelInfoOld5::decode)
            })?),
            12 => Self::Consoles(i.list(SEQUENCE, Reader::name)?),
            13 => Self::UnikernelInfo(
                i.list(SEQUENCE, |r| InfoEntry::decode(r, UnikernelInfo::decode))?,
            ),
            n => return Err(Reader::unknown("Success", n)),
        };
        inner.finish()?;
        Ok(success)
    }

    fn encode(&self, w: &mut Writer) {
        match self {
            Self::Empty => w.explicit(0, Writer::null),
            Self::String(s) => w.explicit(1, |w| w.utf8(s)),
            Self::Policies(ps) => w.explicit(2, |w| {
                w.sequence_of(ps, |w, p| {
                    w.sequence(|w| {
                        w.name(&p.name);
                        encode_policy(&p.policy, w);
                    });
                });
            }),
            Self::BlockDevices(bs) => w.explicit(4, |w| {
                w.sequence_of(bs, |w, b| {
                    w.sequence(|w| {
                        w.name(&b.name);
                        w.int(b.size);
                        w.boolean(b.active);
                    });
                });
            }),
            Self::UnikernelImage { compressed, image } => {
                w.explicit(6, |w| encode_compressed_image(w, *compressed, image));
            }
            Self::OldBlockDeviceImage { compressed, image } => {
                w.explicit(7, |w| encode_compressed_image(w, *compressed, image));
            }
            Self::OldUnikernelInfo4(infos) => w.explicit(9, |w| {
                w.sequence_of(infos, |w, e| e.encode(w, UnikernelInfoOld4::encode));
            }),
            Self::BlockDeviceImage(compressed) => w.explicit(10, |w| w.boolean(*compressed)),
            Self::OldUnikernelInfo5(infos) => w.explicit(11, |w| {
                w.sequence_of(infos, |w, e| e.encode(w, UnikernelInfoOld5::encode));
            }),
            Self::Consoles(names) => w.explicit(12, |w| w.sequence_of(names, |w, n| w.name(n))),
            Self::UnikernelInfo(infos) => w.explicit(13, |w| {
                w.sequence_of(infos, |w, e| e.encode(w, UnikernelInfo::encode));
            }),
        }
    }
}

/// `SEQUENCE { compressed BOOLEAN, image OCTET STRING }`.
fn compressed_image(r: &mut Reader<'_>) -> Result<(bool, Vec<u8>)> {
    r.sequence(|r| Ok((r.boolean()?, r.octets()?.to_vec())))
}

fn encode_compressed_image(w: &mut Writer, compressed: bool, image: &[u8]) {
    w.sequence(|w| {
        w.boolean(compressed);
        w.octets(image);
    });
}

/// ```text
/// Data ::= CHOICE {
///     statistics  [1] StatsData,
///     log         [2] NULL,          -- rejected: "support for log was dropped"
///     console     [3] SEQUENCE { timestamp GeneralizedTime, line UTF8String },
///     block       [4] CHOICE { someData [0] OCTET STRING, noData [1] NULL } }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Data {
    /// Statistics of a unikernel (boxed: it is by far the largest variant).
    Statistics(Box<StatsData>),
    /// One console line.
    Console {
        /// When the line was read.
        timestamp: Timestamp,
        /// The line.
        line: String,
    },
    /// Block dump stream.
    Block(BlockData),
}

/// ```text
/// CHOICE { someData [0] OCTET STRING, noData [1] NULL }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum BlockData {
    /// The next chunk of block device content.
    SomeData(#[serde(serialize_with = "crate::codec::json::hex")] Vec<u8>),
    /// End of the block stream.
    NoData,
}

impl Data {
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let (n, mut inner) = r.choice("Data")?;
        let data = match n {
            1 => Self::Statistics(Box::new(StatsData::decode(&mut inner)?)),
            2 => {
                inner.null()?;
                inner.finish()?;
                return Err(DecodeError::LogDataDropped);
            }
            3 => inner.sequence(|r| {
                Ok(Self::Console {
                    timestamp: r.time()?,
                    line: r.utf8()?,
                })
            })?,
            4 => {
                let (n, mut block) = inner.choice("block data")?;
                let data = match n {
                    0 => BlockData::SomeData(block.octets()?.to_vec()),
                    1 => block.null().map(|()| BlockData::NoData)?,
                    n => return Err(Reader::unknown("block data", n)),
                };
                block.finish()?;
                Self::Block(data)
            }
            n => return Err(Reader::unknown("Data", n)),
        };
        inner.finish()?;
        Ok(data)
    }

    fn encode(&self, w: &mut Writer) {
        match self {
            Self::Statistics(s) => w.explicit(1, |w| s.encode(w)),
            Self::Console { timestamp, line } => w.explicit(3, |w| {
                w.sequence(|w| {
                    w.time(*timestamp);
                    w.utf8(line);
                });
            }),
            Self::Block(BlockData::SomeData(chunk)) => {
                w.explicit(4, |w| w.explicit(0, |w| w.octets(chunk)));
            }
            Self::Block(BlockData::NoData) => w.explicit(4, |w| w.explicit(1, Writer::null)),
        }
    }
}
