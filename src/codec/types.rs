//! Shared types (spec §5.1–5.2): unikernel type, failure behaviour, device specs, MAC
//! addresses, and the DER form of [`Policy`].

use std::collections::BTreeSet;
use std::fmt;

use serde::{Serialize, Serializer};

use crate::codec::der::{
    INTEGER, OCTET_STRING, Reader, Result, SEQUENCE, SET, UTF8_STRING, Writer,
};
use crate::policy::Policy;

/// `MacAddr ::= OCTET STRING (SIZE(6))`. Displays and serializes as `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr([u8; 6]);

impl MacAddr {
    /// The address with these octets.
    pub const fn new(octets: [u8; 6]) -> Self {
        Self(octets)
    }

    /// The six octets.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// ```text
/// Typ ::= CHOICE { solo5 [0] NULL, bhyve [1] NULL }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Typ {
    /// A solo5 unikernel run by a tender.
    Solo5,
    /// A BHyve virtual machine.
    Bhyve,
}

impl Typ {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let (n, mut inner) = r.choice("Typ")?;
        let typ = match n {
            0 => Self::Solo5,
            1 => Self::Bhyve,
            n => return Err(Reader::unknown("Typ", n)),
        };
        inner.null()?;
        inner.finish()?;
        Ok(typ)
    }

    pub(crate) fn encode(self, w: &mut Writer) {
        let n = match self {
            Self::Solo5 => 0,
            Self::Bhyve => 1,
        };
        w.explicit(n, Writer::null);
    }
}

/// ```text
/// FailBehaviour ::= CHOICE {
///     quit     [0] NULL,
///     restart  [1] SET OF Int }   -- empty set: any exit code except 1 and 60..64
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum FailBehaviour {
    /// Do not restart.
    Quit,
    /// Restart on these exit codes; the empty set means "any except 1 and 60–64".
    Restart(BTreeSet<i64>),
}

impl FailBehaviour {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let (n, mut inner) = r.choice("FailBehaviour")?;
        let value = match n {
            0 => {
                inner.null()?;
                Self::Quit
            }
            1 => Self::Restart(int_set(&mut inner)?),
            n => return Err(Reader::unknown("FailBehaviour", n)),
        };
        inner.finish()?;
        Ok(value)
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        match self {
            Self::Quit => w.explicit(0, Writer::null),
            Self::Restart(codes) => w.explicit(1, |w| w.set_of(codes, |w, c| w.int(*c))),
        }
    }
}

/// ```text
/// BlockDeviceSpec ::= SEQUENCE {
///     name        UTF8String,
///     deviceName  UTF8String OPTIONAL,   -- default: name
///     sectorSize  Int OPTIONAL }         -- default: the tender's (512)
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockDeviceSpec {
    /// Device name in the unikernel (solo5 manifest).
    pub name: String,
    /// albatross block device label; `None` = `name`.
    pub device_name: Option<String>,
    /// Sector size passed to the tender.
    pub sector_size: Option<i64>,
}

impl BlockDeviceSpec {
    /// A spec naming only the unikernel's device (legacy names-only lists).
    pub fn named(name: String) -> Self {
        Self {
            name,
            device_name: None,
            sector_size: None,
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self> {
        r.sequence(|r| {
            Ok(Self {
                name: r.utf8()?,
                device_name: r.optional(UTF8_STRING, Reader::utf8)?,
                sector_size: r.optional(INTEGER, Reader::int)?,
            })
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.sequence(|w| {
            w.utf8(&self.name);
            if let Some(d) = &self.device_name {
                w.utf8(d);
            }
            if let Some(s) = self.sector_size {
                w.int(s);
            }
        });
    }
}

/// ```text
/// NetDeviceSpec ::= SEQUENCE {
///     netif   UTF8String,
///     bridge  UTF8String OPTIONAL,   -- default: netif
///     mac     MacAddr OPTIONAL }     -- default: deterministic MAC
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetDeviceSpec {
    /// Network device name in the unikernel.
    pub netif: String,
    /// Host bridge; `None` = `netif`.
    pub bridge: Option<String>,
    /// MAC address; `None` = the deterministic one.
    pub mac: Option<MacAddr>,
}

impl NetDeviceSpec {
    /// A spec naming only the unikernel's device (legacy names-only lists).
    pub fn named(netif: String) -> Self {
        Self {
            netif,
            bridge: None,
            mac: None,
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self> {
        r.sequence(|r| {
            Ok(Self {
                netif: r.utf8()?,
                bridge: r.optional(UTF8_STRING, Reader::utf8)?,
                mac: r.optional(OCTET_STRING, Reader::mac)?,
            })
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.sequence(|w| {
            w.utf8(&self.netif);
            if let Some(b) = &self.bridge {
                w.utf8(b);
            }
            if let Some(m) = &self.mac {
                w.mac(m);
            }
        });
    }
}

/// `SET OF Int` as a set (duplicates collapse, wire order is irrelevant).
pub(crate) fn int_set(r: &mut Reader<'_>) -> Result<BTreeSet<i64>> {
    Ok(r.list(SET, Reader::int)?.into_iter().collect())
}

/// ```text
/// Policy ::= SEQUENCE {
///     cpuids      SEQUENCE OF Int,
///     unikernels  Int,
///     memory      Int,
///     block       Int OPTIONAL,
///     bridges     SEQUENCE OF UTF8String }
/// ```
/// The lists are read as sets (duplicates collapse).
pub(crate) fn decode_policy(r: &mut Reader<'_>) -> Result<Policy> {
    r.sequence(|r| {
        let cpuids = r.list(SEQUENCE, Reader::int)?.into_iter().collect();
        let unikernels = r.int()?;
        let memory = r.int()?;
        let block = r.optional(INTEGER, Reader::int)?;
        let bridges = r.strings()?.into_iter().collect();
        Ok(Policy {
            unikernels,
            cpuids,
            memory,
            block,
            bridges,
        })
    })
}

/// Writes a [`Policy`]; CPU ids ascending, bridges sorted bytewise (the sets' order).
pub(crate) fn encode_policy(policy: &Policy, w: &mut Writer) {
    w.sequence(|w| {
        w.sequence_of(&policy.cpuids, |w, c| w.int(*c));
        w.int(policy.unikernels);
        w.int(policy.memory);
        if let Some(b) = policy.block {
            w.int(b);
        }
        w.sequence_of(&policy.bridges, |w, b| w.utf8(b));
    });
}
