//! The codec's errors: [`DecodeError`] for DER and [`FrameError`] for the length prefix.
//!
//! Both are small (`Copy`-sized apart from the name error) so that a decoder fed hostile
//! input pays nothing for building messages it may throw away.

use std::fmt;

use crate::name::NameError;

/// Why a DER value did not decode. The texts are albatross's where the spec quotes one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A length points past the end of the input.
    #[error("truncated input")]
    Truncated,
    /// Octets follow the top-level value.
    #[error("trailing bytes")]
    TrailingBytes,
    /// BER indefinite length (`0x80`).
    #[error("indefinite length")]
    IndefiniteLength,
    /// A long-form length that could have been shorter.
    #[error("non-minimal length")]
    NonMinimalLength,
    /// A length of more than four octets (no message comes close).
    #[error("length too large")]
    LengthTooLarge,
    /// A tag number of 31 or more (multi-octet identifier); the grammar uses none.
    #[error("unsupported multi-octet tag")]
    HighTagNumber,
    /// Constructed values nested deeper than [`super::MAX_DEPTH`].
    #[error("nesting too deep")]
    TooDeep,
    /// A `SEQUENCE OF` or `SET OF` with more than [`super::MAX_ELEMENTS`] elements.
    #[error("too many elements in a SEQUENCE OF or SET OF")]
    TooManyElements,
    /// The input ended where a value was required.
    #[error("missing {0}")]
    Missing(Expected),
    /// A value has the wrong tag.
    #[error("expected {expected}, found {}", Tag(*.found))]
    UnexpectedTag {
        /// What the grammar requires here.
        expected: Expected,
        /// The identifier octet found.
        found: u8,
    },
    /// A CHOICE alternative that does not exist (or was dropped).
    #[error("unknown {choice} alternative {}", Tag(*.found))]
    UnknownAlternative {
        /// Which CHOICE (spec name, e.g. `command`, `UnikernelCmd`).
        choice: &'static str,
        /// The identifier octet found.
        found: u8,
    },
    /// An element after the last field of a SEQUENCE or inside an EXPLICIT tag.
    #[error("unexpected {} after the last element", Tag(*.0))]
    ExtraElement(u8),
    /// An OCTET STRING, UTF8String or GeneralizedTime in constructed form.
    #[error("constructed string")]
    ConstructedString,
    /// An INTEGER without content octets.
    #[error("empty integer")]
    EmptyInteger,
    /// An INTEGER with a redundant leading `00` or `FF` octet.
    #[error("non-minimal integer")]
    NonMinimalInteger,
    /// An INTEGER outside the 63-bit range albatross accepts (−2^62 … 2^62−1).
    #[error("integer out of range")]
    IntegerOutOfRange,
    /// A NULL with content octets.
    #[error("NULL with content")]
    BadNull,
    /// A BOOLEAN whose content is not exactly one octet.
    #[error("BOOLEAN of {0} octets")]
    BadBoolean(usize),
    /// An `Int64` (OCTET STRING) of a length other than 8 (spec Note W1).
    #[error("Int64 of {0} octets, expected 8")]
    Int64Length(usize),
    /// A MAC address of a length other than 6 (albatross's text).
    #[error("bad mac address: Macaddr: MAC is exactly 6 bytes")]
    BadMac,
    /// A version other than 5 (albatross prints the value with OCaml's `%X`).
    #[error("unknown version number 0x{}", OcamlHex(*.0))]
    UnknownVersion(i64),
    /// A GeneralizedTime that does not parse or is outside years 0000–9999.
    #[error("invalid GeneralizedTime")]
    BadTime,
    /// A name (`NameStr`) that does not parse; albatross's texts.
    #[error("{0}")]
    Name(#[from] NameError),
    /// Command `log [2]`.
    #[error("support for log dropped")]
    LogDropped,
    /// Data `log [2]`.
    #[error("support for log was dropped")]
    LogDataDropped,
    /// State alternative `[7]` (albatross aborts with this text).
    #[error("not yet implemented")]
    StateReserved,
    /// A state-file trie key that is not a valid name (spec Note W8).
    #[error("invalid key in state file: {0}")]
    StateKey(NameError),
    /// The same key twice in one state-file trie (spec Note W8).
    #[error("duplicate key {0} in state file")]
    DuplicateKey(Box<crate::name::Name>),
}

/// What the grammar expected at a position, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Expected {
    /// A value with this identifier octet.
    Tag(u8),
    /// One of the alternatives of this CHOICE.
    Choice(&'static str),
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag(t) => Tag(*t).fmt(f),
            Self::Choice(c) => write!(f, "{c}"),
        }
    }
}

/// Why a frame length is unacceptable (spec §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The announced body is longer than the configured maximum.
    #[error("frame of {len} octets exceeds the limit of {max} octets")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// A body longer than 2^31−1 octets cannot be framed.
    #[error("frame of {0} octets does not fit the 31-bit length prefix")]
    Unframeable(usize),
}

/// Displays an identifier octet: `[n]` for context-specific constructed tags, the ASN.1
/// type name for the universal ones the grammar uses, hex otherwise.
struct Tag(u8);

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            0x01 => "BOOLEAN",
            0x02 => "INTEGER",
            0x04 => "OCTET STRING",
            0x05 => "NULL",
            0x0C => "UTF8String",
            0x18 => "GeneralizedTime",
            0x30 => "SEQUENCE",
            0x31 => "SET",
            t if t & 0xE0 == 0xA0 && t & 0x1F != 0x1F => {
                return write!(f, "[{}]", t & 0x1F);
            }
            t => return write!(f, "tag 0x{t:02X}"),
        };
        f.write_str(name)
    }
}

/// OCaml's `%X` of a 63-bit `int`: negative values print as their 63-bit two's complement.
struct OcamlHex(i64);

impl fmt::Display for OcamlHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}", self.0 & i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts() {
        assert_eq!(
            DecodeError::UnknownVersion(6).to_string(),
            "unknown version number 0x6"
        );
        assert_eq!(
            DecodeError::UnknownVersion(255).to_string(),
            "unknown version number 0xFF"
        );
        assert_eq!(
            DecodeError::UnknownVersion(-1).to_string(),
            "unknown version number 0x7FFFFFFFFFFFFFFF"
        );
        assert_eq!(
            DecodeError::UnexpectedTag {
                expected: Expected::Tag(0x02),
                found: 0xB3
            }
            .to_string(),
            "expected INTEGER, found [19]"
        );
        assert_eq!(
            DecodeError::UnknownAlternative {
                choice: "command",
                found: 0x13
            }
            .to_string(),
            "unknown command alternative tag 0x13"
        );
        assert_eq!(
            DecodeError::Missing(Expected::Choice("Typ")).to_string(),
            "missing Typ"
        );
        assert_eq!(
            DecodeError::ExtraElement(0x05).to_string(),
            "unexpected NULL after the last element"
        );
    }
}
