//! The albatross AV5 DER codec (`spec/wire.md`): certificate extension, wire messages,
//! state file, framing. Pure: no I/O, no clock, no async.
//!
//! Everything past this module works on the typed values defined here ([`Command`],
//! [`Wire`], [`State`], [`UnikernelConfig`], …) and never sees DER. Decoders are total:
//! they never panic, consume their whole input ("trailing bytes" otherwise), reject what
//! albatross rejects (indefinite or non-minimal lengths, non-minimal INTEGERs, constructed
//! strings, bad NULLs, `Int64` other than 8 octets, MACs other than 6, versions other
//! than 5, unknown CHOICE alternatives) and accept what albatross accepts (any non-zero
//! BOOLEAN, unsorted `SET OF`, non-UTF-8 strings, lenient GeneralizedTime). Nesting and
//! list lengths are capped by [`MAX_DEPTH`] and [`MAX_ELEMENTS`]. Encoders always produce
//! canonical DER, byte-identical to albatross's for the same value.
//!
//! Round trips: `decode(encode(x)) == x` for every value the encoder can produce, that is
//! with `SET OF` device lists already in DER order (see [`Der`]) and `Int` values within
//! albatross's 63-bit range (the encoder writes any `i64`, the decoder refuses what
//! albatross would refuse). Legacy alternatives decode into the current ones and are
//! re-encoded as albatross does today (`create [20]`, `restart [3]`, state `[6]`).

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]

mod command;
mod config;
mod der;
mod error;
mod frame;
mod info;
mod json;
mod state;
mod stats;
mod time;
mod types;
mod wire;

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

pub use command::{
    BlockCmd, Command, ConsoleCmd, PolicyCmd, RevocationCmd, SinceCount, StatsAdd, StatsCmd,
    StatsNetwork, UnikernelCmd,
};
pub use config::{DEFAULT_STARTUP, RestartArgs, UnikernelArguments, UnikernelConfig};
pub use der::{MAX_DEPTH, MAX_ELEMENTS};
pub use error::{DecodeError, Expected, FrameError};
pub use frame::{
    END_OF_STREAM, FrameLength, MAX_FRAMEABLE, decode_frame_header, frame, frame_header,
};
pub use info::{
    BlockInfo, NetInfo, OldInfoError, UnikernelInfo, UnikernelInfoOld4, UnikernelInfoOld5,
};
pub use json::MAX_INLINE_OCTETS;
pub use state::{State, TrieEntry};
pub use stats::{IfData, KinfoMem, RUsage, StatsData, Timeval, VmmStat};
pub use time::Timestamp;
pub use types::{BlockDeviceSpec, FailBehaviour, MacAddr, NetDeviceSpec, Typ};
pub use wire::{
    BlockData, BlockDevice, Data, Header, InfoEntry, Payload, PolicyEntry, Success, Wire,
};

use crate::policy::Policy;
use der::{Reader, SEQUENCE, Writer, decode_all, encode_with};

/// The only wire version (`AV5`).
pub const VERSION: i64 = 5;

/// Arcs of the albatross certificate extension's OID, `1.3.6.1.4.1.49836.42`.
pub const EXTENSION_OID: [u64; 8] = [1, 3, 6, 1, 4, 1, 49836, 42];

/// ```text
/// AlbatrossExtension ::= SEQUENCE {
///     version   Version,     -- INTEGER 5
///     command   Command }
/// ```
/// The `extnValue` of the albatross certificate extension.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Extension {
    /// In a leaf: the request; in an intermediate CA: `policy add`.
    pub command: Command,
}

impl Serialize for Extension {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Extension", 2)?;
        s.serialize_field("version", &VERSION)?;
        s.serialize_field("command", &self.command)?;
        s.end()
    }
}

/// Decodes an `AlbatrossExtension` (strict: nothing may follow it).
pub fn decode_extension(der: &[u8]) -> Result<Extension, DecodeError> {
    decode_all(der, |r| {
        r.sequence(|r| {
            wire::decode_version(r)?;
            Ok(Extension {
                command: Command::decode(r)?,
            })
        })
    })
}

/// Encodes `cmd` as an `AlbatrossExtension` with version 5.
pub fn encode_extension(cmd: &Command) -> Vec<u8> {
    encode_with(|w| {
        w.sequence(|w| {
            w.int(VERSION);
            cmd.encode(w);
        });
    })
}

/// Decodes a `Wire` message in albatross's order (spec §6.3): first the version is read
/// from the start of the header, so that a peer speaking another version gets "unknown
/// version number 0x…" whatever follows; then the whole message is decoded strictly.
pub fn decode_wire(der: &[u8]) -> Result<Wire, DecodeError> {
    peek_wire_version(der)?;
    decode_all(der, Wire::decode)
}

/// Encodes a `Wire` message.
pub fn encode_wire(w: &Wire) -> Vec<u8> {
    encode_with(|out| w.encode(out))
}

/// Decodes a state file of any version (spec §11, Note W8).
pub fn decode_state(der: &[u8]) -> Result<State, DecodeError> {
    decode_all(der, State::decode)
}

/// Encodes a state file as `[6]` (unikernels V5 and policies).
pub fn encode_state(s: &State) -> Vec<u8> {
    encode_with(|w| s.encode(w))
}

/// albatross's version peek: the content of the outer SEQUENCE, then of the header
/// SEQUENCE, then the first INTEGER. Lengths are read as albatross reads them here
/// (definite, not checked for minimality, and only required to fit the input).
fn peek_wire_version(der: &[u8]) -> Result<(), DecodeError> {
    let header = sequence_content(sequence_content(der)?)?;
    wire::decode_version(&mut Reader::new(header))
}

/// The content of the SEQUENCE at the start of `buf`, leniently (see above).
fn sequence_content(buf: &[u8]) -> Result<&[u8], DecodeError> {
    let (&tag, rest) = buf
        .split_first()
        .ok_or(DecodeError::Missing(Expected::Tag(SEQUENCE)))?;
    if tag != SEQUENCE {
        return Err(DecodeError::UnexpectedTag {
            expected: Expected::Tag(SEQUENCE),
            found: tag,
        });
    }
    let (&first, rest) = rest.split_first().ok_or(DecodeError::Truncated)?;
    let (len, rest) = match first {
        0x80 => return Err(DecodeError::IndefiniteLength),
        short if short < 0x80 => (usize::from(short), rest),
        long => {
            let count = usize::from(long & 0x7F);
            if count > 4 {
                return Err(DecodeError::LengthTooLarge);
            }
            let (octets, rest) = rest.split_at_checked(count).ok_or(DecodeError::Truncated)?;
            let len = octets
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, rest)
        }
    };
    rest.get(..len).ok_or(DecodeError::Truncated)
}

/// DER encoding and strict decoding of one value of the grammar, for the types that
/// appear on their own (and in tests and `petrel inspect`).
///
/// `from_der` accepts exactly one value and nothing after it. `SET OF` device lists come
/// back in wire order, while `to_der` sorts them by encoding (spec §10.2), so
/// `from_der(to_der(x)) == x` holds when `x`'s lists are already in that order.
pub trait Der: Sized {
    /// Decodes one value; trailing octets are an error.
    fn from_der(der: &[u8]) -> Result<Self, DecodeError>;
    /// Encodes the value as canonical DER.
    fn to_der(&self) -> Vec<u8>;
}

macro_rules! der_via {
    ($($ty:ty => $decode:expr, $encode:expr;)*) => {
        $(
            impl Der for $ty {
                fn from_der(der: &[u8]) -> Result<Self, DecodeError> {
                    decode_all(der, $decode)
                }

                fn to_der(&self) -> Vec<u8> {
                    let encode: fn(&$ty, &mut Writer) = $encode;
                    encode_with(|w| encode(self, w))
                }
            }
        )*
    };
}

der_via! {
    Command => Command::decode, Command::encode;
    State => State::decode, State::encode;
    Policy => types::decode_policy, types::encode_policy;
    UnikernelConfig => UnikernelConfig::decode, UnikernelConfig::encode;
    UnikernelArguments => UnikernelArguments::decode, UnikernelArguments::encode;
    RestartArgs => RestartArgs::decode, RestartArgs::encode;
    UnikernelInfo => UnikernelInfo::decode, UnikernelInfo::encode;
    UnikernelInfoOld4 => UnikernelInfoOld4::decode, UnikernelInfoOld4::encode;
    UnikernelInfoOld5 => UnikernelInfoOld5::decode, UnikernelInfoOld5::encode;
    BlockInfo => BlockInfo::decode, BlockInfo::encode;
    NetInfo => NetInfo::decode, NetInfo::encode;
    BlockDeviceSpec => BlockDeviceSpec::decode, BlockDeviceSpec::encode;
    NetDeviceSpec => NetDeviceSpec::decode, NetDeviceSpec::encode;
    FailBehaviour => FailBehaviour::decode, FailBehaviour::encode;
    StatsData => StatsData::decode, StatsData::encode;
    Header => Header::decode, Header::encode;
}

impl Der for Extension {
    fn from_der(der: &[u8]) -> Result<Self, DecodeError> {
        decode_extension(der)
    }

    fn to_der(&self) -> Vec<u8> {
        encode_extension(&self.command)
    }
}

impl Der for Wire {
    fn from_der(der: &[u8]) -> Result<Self, DecodeError> {
        decode_wire(der)
    }

    fn to_der(&self) -> Vec<u8> {
        encode_wire(self)
    }
}

/// The fuzzer's round-trip oracle: for every top-level structure that `data` decodes as
/// (wire message, extension, state file), re-encoding is stable — `encode(decode(encode(v)))`
/// equals `encode(v)` for `v = decode(data)`, and decoding our own encoding never fails.
///
/// # Panics
///
/// When that property is violated; this is an oracle for the fuzzer and the tests, never
/// called on the request path.
pub fn check_roundtrip(data: &[u8]) {
    fn stable<T: Der>(data: &[u8]) {
        if let Ok(value) = T::from_der(data) {
            let once = value.to_der();
            let again = T::from_der(&once)
                .unwrap_or_else(|e| panic!("our own encoding does not decode: {e}"));
            assert_eq!(again.to_der(), once, "encoding is not stable");
        }
    }
    stable::<Wire>(data);
    stable::<Extension>(data);
    stable::<State>(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_checked_before_the_rest() {
        // Version 6 and garbage after the header: the version error wins.
        let der = [0x30, 0x06, 0x30, 0x03, 0x02, 0x01, 0x06, 0xFF];
        assert_eq!(
            decode_wire(&der).unwrap_err().to_string(),
            "unknown version number 0x6"
        );
        // Non-minimal outer length: albatross's peek does not mind, the version error
        // comes first.
        let der = [0x30, 0x81, 0x05, 0x30, 0x03, 0x02, 0x01, 0x07];
        assert_eq!(decode_wire(&der), Err(DecodeError::UnknownVersion(7)));
        // With version 5 the strict decoder then rejects the same length.
        let der = [0x30, 0x81, 0x05, 0x30, 0x03, 0x02, 0x01, 0x05];
        assert_eq!(decode_wire(&der), Err(DecodeError::NonMinimalLength));
        assert_eq!(
            decode_wire(&[0x30, 0x80, 0x30, 0x80]),
            Err(DecodeError::IndefiniteLength)
        );
        assert_eq!(
            decode_wire(&[0x30, 0x04, 0x30, 0x80, 0x00, 0x00]),
            Err(DecodeError::IndefiniteLength)
        );
    }
}
