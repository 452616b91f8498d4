//! The deterministic MAC address of a unikernel's network device
//! (`spec/unikernel-and-executor.md` §5).
//!
//! `mac = 00:80:41 ‖ MD5(netif ‖ text(name))[0..3]`: the first three octets of the MD5
//! digest of the unikernel-side device name immediately followed by the unikernel's
//! textual name. This is the formula albatross 2.x executes (Note E1: not the one its
//! documentation comment describes).

use std::fmt;
use std::str::FromStr;

use md5::{Digest, Md5};

use crate::name::Name;

/// The organisationally unique identifier every deterministic MAC starts with.
pub const MAC_PREFIX: [u8; 3] = [0x00, 0x80, 0x41];

/// A MAC address, shown as six lower-case two-digit hex octets joined by `:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac([u8; 6]);

/// Why a MAC address text did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MacError {
    /// Not six two-digit hex octets separated by `:`.
    #[error("invalid MAC address {0:?} (expected six two-digit hex octets separated by ':')")]
    Invalid(String),
}

impl Mac {
    /// The MAC albatross assigns to network device `netif` of unikernel `name` when the
    /// configuration gives none.
    pub fn deterministic(netif: &str, name: &Name) -> Self {
        let mut hasher = Md5::new();
        hasher.update(netif.as_bytes());
        hasher.update(name.text().as_bytes());
        let digest = hasher.finalize();
        let [a, b, c] = MAC_PREFIX;
        Self([a, b, c, digest[0], digest[1], digest[2]])
    }

    /// A MAC from its six octets.
    pub fn from_octets(octets: [u8; 6]) -> Self {
        Self(octets)
    }

    /// The six octets.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for Mac {
    type Err = MacError;

    /// Parses six two-digit hex octets separated by `:` (either case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || MacError::Invalid(s.to_owned());
        let mut octets = [0u8; 6];
        let mut parts = s.split(':');
        for octet in &mut octets {
            let part = parts.next().ok_or_else(invalid)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| invalid())?;
        }
        if parts.next().is_some() {
            return Err(invalid());
        }
        Ok(Self(octets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(netif: &str, name: &str) -> String {
        Mac::deterministic(netif, &Name::parse(name).unwrap()).to_string()
    }

    #[test]
    fn spec_examples() {
        assert_eq!(mac("service", ":hello"), "00:80:41:cd:8a:eb");
        assert_eq!(mac("service", "foo:bar"), "00:80:41:0c:85:fb");
    }

    #[test]
    fn depends_on_netif_and_name() {
        assert_ne!(mac("service", "foo:bar"), mac("other", "foo:bar"));
        assert_ne!(mac("service", "foo:bar"), mac("service", "foo:baz"));
    }

    #[test]
    fn formats_lower_case_two_digit_octets() {
        let m = Mac::from_octets([0x0a, 0xff, 0x00, 0x01, 0xAB, 0x10]);
        assert_eq!(m.to_string(), "0a:ff:00:01:ab:10");
    }

    #[test]
    fn parses_and_round_trips() {
        let m: Mac = "00:80:41:CD:8a:eb".parse().unwrap();
        assert_eq!(m.octets(), [0x00, 0x80, 0x41, 0xcd, 0x8a, 0xeb]);
        assert_eq!(m.to_string(), "00:80:41:cd:8a:eb");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "00:80:41:cd:8a",
            "00:80:41:cd:8a:eb:01",
            "00:80:41:cd:8a:e",
            "00:80:41:cd:8a:ebb",
            "00-80-41-cd-8a-eb",
            "00:80:41:cd:8a:gg",
            "+0:80:41:cd:8a:eb",
        ] {
            assert_eq!(
                bad.parse::<Mac>(),
                Err(MacError::Invalid(bad.to_owned())),
                "{bad}"
            );
        }
        assert_eq!(
            "x".parse::<Mac>().unwrap_err().to_string(),
            "invalid MAC address \"x\" (expected six two-digit hex octets separated by ':')"
        );
    }
}
