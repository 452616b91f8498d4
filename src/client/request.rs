//! What a request is made of, from the command line's text to typed values: device
//! arguments (`--net`, `--block`), the unikernel configuration, console `--since`, the
//! destination, the common name of the certificate that carries the request
//! (`spec/tls-endpoint.md` §4.2, Note T3), and the client-side checks against the issuing
//! CA's policy (`spec/names-and-policies.md` §7.6). Pure: no I/O, the caller passes `now`.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::codec::{
    self, BlockDeviceSpec, Command, FailBehaviour, MacAddr, NetDeviceSpec, PolicyCmd, Timestamp,
    UnikernelArguments, UnikernelCmd, UnikernelConfig,
};
use crate::name::{Label, Name};
use crate::pki::CertificateFacts;
use crate::policy::{Policy, join};

/// Port of the TLS endpoint when the destination names none (albatross: 1025).
pub const DEFAULT_PORT: u16 = 1025;

/// Default zlib level for data sent to a remote endpoint or put in a CSR (albatross: 9).
pub const DEFAULT_COMPRESSION_LEVEL: u32 = 9;

/// Highest zlib level.
pub const MAX_COMPRESSION_LEVEL: u32 = 9;

/// Smallest block sector size a tender accepts (solo5: 512; larger sizes must be powers
/// of two).
pub const MIN_SECTOR_SIZE: i64 = 512;

/// Common name of a request certificate whose name has no label (Note T3 fixed: the
/// endpoint reads it as "the chain's path itself").
pub const PATH_ONLY_CN: &str = ".";

/// Why a command-line value or a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// A `--net` value that is not `[NETIF:]BRIDGE[@MAC]`.
    #[error("invalid --net {0:?}: format is [name:]bridge[@mac]")]
    NetFormat(String),
    /// A MAC address that is not six hex octets.
    #[error("invalid MAC address {0:?} (expected six hex octets such as 00:80:41:ab:cd:ef)")]
    Mac(String),
    /// A `--block` value that is not `NAME[:DEVICE][@SECTOR]`.
    #[error(
        "invalid --block {0:?}: format is 'name[@sector-size]' or 'name:device-name[@sector-size]'"
    )]
    BlockFormat(String),
    /// A sector size that is not an integer (albatross's text).
    #[error("sector size must be an integer")]
    SectorNotInteger,
    /// A sector size below 512 or not a power of two (albatross's text).
    #[error("sector size must be a power of two greater than or equal 512")]
    SectorSize,
    /// Two network devices with the same unikernel-side name (albatross's text).
    #[error("Bridge names must be a set")]
    BridgesNotSet,
    /// Two block devices with the same unikernel-side name (albatross's text).
    #[error("Block devices must be a set")]
    BlocksNotSet,
    /// A compression level above 9.
    #[error("compression level {0} is not between 0 and 9")]
    CompressionLevel(u32),
    /// A `--since` that is neither RFC 3339 nor a duration.
    #[error(
        "couldn't parse timestamp {0:?} (expected RFC 3339 such as 2025-03-12T23:42:15Z, a date, or a duration such as 90s, 10m, 2h, 1d)"
    )]
    Since(String),
    /// A destination that is not `HOST[:PORT]`.
    #[error("invalid destination {0:?}: failed to parse port")]
    Port(String),
    /// An empty destination host.
    #[error("invalid destination {0:?}: empty host")]
    EmptyHost(String),
    /// A request for a name below the root path (albatross's text): the certificate can
    /// only name a label relative to the issuing CA's path.
    #[error("non-empty path")]
    NonEmptyPath,
    /// `add-policy` for a path that is not a single label.
    #[error("a delegated policy is named by one label below its issuing CA, not by the path {0:?}")]
    PolicyPath(String),
    /// The issuing CA's albatross extension does not decode (albatross's text).
    #[error("couldn't parse albatross extension in cert")]
    CaExtension,
}

/// Parses a `--net` value `[NETIF:]BRIDGE[@MAC]` (albatross-client's syntax): with one
/// component the unikernel-side name is given and the bridge defaults to it.
pub fn parse_net(s: &str) -> Result<NetDeviceSpec, RequestError> {
    let format = || RequestError::NetFormat(s.to_owned());
    let (net, mac) = match s.split('@').collect::<Vec<_>>().as_slice() {
        [net] => (*net, None),
        [net, mac] => (*net, Some(parse_mac(mac)?)),
        _ => return Err(format()),
    };
    let (netif, bridge) = split_colon(net).ok_or_else(format)?;
    Ok(NetDeviceSpec { netif, bridge, mac })
}

/// Parses a `--block` value `NAME[:DEVICE][@SECTOR]` (albatross-client's syntax).
pub fn parse_block(s: &str) -> Result<BlockDeviceSpec, RequestError> {
    let format = || RequestError::BlockFormat(s.to_owned());
    let (block, sector_size) = match s.split('@').collect::<Vec<_>>().as_slice() {
        [block] => (*block, None),
        [block, sector] => {
            let size: i64 = sector.parse().map_err(|_| RequestError::SectorNotInteger)?;
            if size < MIN_SECTOR_SIZE || size & (size - 1) != 0 {
                return Err(RequestError::SectorSize);
            }
            (*block, Some(size))
        }
        _ => return Err(format()),
    };
    let (name, device_name) = split_colon(block).ok_or_else(format)?;
    Ok(BlockDeviceSpec {
        name,
        device_name,
        sector_size,
    })
}

/// `a` → `(a, None)`, `a:b` → `(a, Some(b))`; empty parts and more colons are refused.
fn split_colon(s: &str) -> Option<(String, Option<String>)> {
    match s.split(':').collect::<Vec<_>>().as_slice() {
        [a] if !a.is_empty() => Some(((*a).to_owned(), None)),
        [a, b] if !a.is_empty() && !b.is_empty() => Some(((*a).to_owned(), Some((*b).to_owned()))),
        _ => None,
    }
}

/// Parses a MAC address: six two-digit hex octets separated by `:` or `-`.
pub fn parse_mac(s: &str) -> Result<MacAddr, RequestError> {
    let bad = || RequestError::Mac(s.to_owned());
    let parts: Vec<&str> = s.split([':', '-']).collect();
    let mut octets = [0u8; 6];
    if parts.len() != octets.len() {
        return Err(bad());
    }
    for (octet, part) in octets.iter_mut().zip(parts) {
        if part.len() != 2 {
            return Err(bad());
        }
        *octet = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    Ok(MacAddr::new(octets))
}

/// Checks a zlib level (0 = no compression).
pub fn compression_level(level: u32) -> Result<u32, RequestError> {
    if level > MAX_COMPRESSION_LEVEL {
        return Err(RequestError::CompressionLevel(level));
    }
    Ok(level)
}

/// The unikernel settings of `create` and `restart --replace-arguments`, as given on the
/// command line (albatross-client's flags and defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnikernelOptions {
    /// `--cpu` (repeatable); empty means CPU 0.
    pub cpuids: Vec<i64>,
    /// `--mem` in MB (default 32).
    pub memory: i64,
    /// `--arg` (repeatable); empty means no arguments.
    pub arguments: Vec<String>,
    /// `--block` values, parsed.
    pub blocks: Vec<BlockDeviceSpec>,
    /// `--net` values, parsed.
    pub bridges: Vec<NetDeviceSpec>,
    /// `--restart-on-fail`.
    pub restart_on_fail: bool,
    /// `--exit-code` (repeatable): restart only on these codes.
    pub exit_codes: Vec<i64>,
    /// `--startup`.
    pub startup: Option<i64>,
    /// `--no-add-name`.
    pub no_add_name: bool,
}

impl Default for UnikernelOptions {
    fn default() -> Self {
        Self {
            cpuids: Vec::new(),
            memory: 32,
            arguments: Vec::new(),
            blocks: Vec::new(),
            bridges: Vec::new(),
            restart_on_fail: false,
            exit_codes: Vec::new(),
            startup: None,
            no_add_name: false,
        }
    }
}

impl UnikernelOptions {
    /// The restart arguments these options describe (albatross-client's checks: device
    /// names must be sets).
    pub fn arguments(&self) -> Result<UnikernelArguments, RequestError> {
        let names: BTreeSet<&str> = self.bridges.iter().map(|n| n.netif.as_str()).collect();
        if names.len() != self.bridges.len() {
            return Err(RequestError::BridgesNotSet);
        }
        let names: BTreeSet<&str> = self.blocks.iter().map(|b| b.name.as_str()).collect();
        if names.len() != self.blocks.len() {
            return Err(RequestError::BlocksNotSet);
        }
        let cpuids = if self.cpuids.is_empty() {
            BTreeSet::from([0])
        } else {
            self.cpuids.iter().copied().collect()
        };
        let fail_behaviour = if self.restart_on_fail {
            FailBehaviour::Restart(self.exit_codes.iter().copied().collect())
        } else {
            FailBehaviour::Quit
        };
        Ok(UnikernelArguments {
            fail_behaviour,
            startup: self.startup,
            add_name: !self.no_add_name,
            cpuids,
            memory: self.memory,
            blocks: self.blocks.clone(),
            bridges: self.bridges.clone(),
            arguments: (!self.arguments.is_empty()).then(|| self.arguments.clone()),
            cpus: 1,
            linux_boot_partition: None,
        })
    }

    /// The solo5 configuration of a create: `image` is the (possibly compressed, possibly
    /// empty = streamed) image, `compressed` whether it (or the stream) is zlib.
    pub fn config(
        &self,
        image: Vec<u8>,
        compressed: bool,
    ) -> Result<UnikernelConfig, RequestError> {
        let args = self.arguments()?;
        Ok(UnikernelConfig {
            compressed,
            image,
            startup: args.startup,
            add_name: args.add_name,
            fail_behaviour: args.fail_behaviour,
            cpuids: args.cpuids,
            memory: args.memory,
            blocks: args.blocks,
            bridges: args.bridges,
            arguments: args.arguments,
            ..UnikernelConfig::default()
        })
    }
}

/// Why a unikernel configuration does not fit the issuing CA's policy (§7.6; albatross's
/// texts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigPolicyError {
    /// CPU ids outside the policy.
    #[error("the CPUids {} requested by the unikernel are not allowed by policy", join(.0))]
    Cpuids(BTreeSet<i64>),
    /// More memory than the policy allows.
    #[error("{requested} MB memory assigned to unikernel exceeds policy ({allowed}MB)")]
    Memory {
        /// The configuration's memory.
        requested: i64,
        /// The policy's memory.
        allowed: i64,
    },
    /// Bridges outside the policy (in configuration order, as albatross lists them).
    #[error(
        "Bridge(s) {} not allowed by policy (available: {})",
        join(.disallowed),
        join(.available)
    )]
    Bridges {
        /// The bridges used but not allowed.
        disallowed: Vec<String>,
        /// The policy's bridges.
        available: BTreeSet<String>,
    },
}

/// albatross-client's `fine_with_policy`: CPU ids, then memory, then bridges ("bridges
/// used" = each network device's bridge, or its unikernel-side name without one).
pub fn fits_policy(policy: &Policy, config: &UnikernelConfig) -> Result<(), ConfigPolicyError> {
    if !config.cpuids.is_subset(&policy.cpuids) {
        return Err(ConfigPolicyError::Cpuids(
            config.cpuids.difference(&policy.cpuids).copied().collect(),
        ));
    }
    if config.memory > policy.memory {
        return Err(ConfigPolicyError::Memory {
            requested: config.memory,
            allowed: policy.memory,
        });
    }
    let disallowed: Vec<String> = config
        .bridges
        .iter()
        .map(|n| n.bridge.as_ref().unwrap_or(&n.netif))
        .filter(|b| !policy.bridges.contains(*b))
        .cloned()
        .collect();
    if !disallowed.is_empty() {
        return Err(ConfigPolicyError::Bridges {
            disallowed,
            available: policy.bridges.clone(),
        });
    }
    Ok(())
}

/// The policy an issuing CA delegates: the `policy add` in its albatross extension, or
/// `None` if it has no extension or another command.
pub fn ca_policy(facts: &CertificateFacts) -> Result<Option<Policy>, RequestError> {
    let Some(ext) = facts.albatross.first() else {
        return Ok(None);
    };
    match codec::decode_extension(&ext.value) {
        Ok(codec::Extension {
            command: Command::Policy(PolicyCmd::Add(policy)),
        }) => Ok(Some(policy)),
        Ok(_) => Ok(None),
        Err(_) => Err(RequestError::CaExtension),
    }
}

/// The common name of the certificate (or CSR) that carries `command` for `name`
/// (§4.2, Note T3 fixed): a policy add is named by the single label of the delegated
/// path; any other command by the name's label, or `.` for a path-only name. A name
/// below the root path cannot be expressed (the issuing CA fixes the path): "non-empty
/// path".
pub fn request_common_name(command: &Command, name: &Name) -> Result<String, RequestError> {
    if let Command::Policy(PolicyCmd::Add(_)) = command {
        return match (name.path().labels(), name.label()) {
            ([label], None) | ([], Some(label)) => Ok(label.as_str().to_owned()),
            _ => Err(RequestError::PolicyPath(name.path().text())),
        };
    }
    if !name.path().is_root() {
        return Err(RequestError::NonEmptyPath);
    }
    Ok(name.label().map_or(PATH_ONLY_CN, Label::as_str).to_owned())
}

/// How the replies to a command are read (`spec/tls-endpoint.md` §3 step 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyMode {
    /// One final frame.
    Single,
    /// A `success` frame, then data frames until the server ends the stream.
    Read,
    /// `success blockDeviceImage`, then block data frames until `noData`.
    Dump,
}

impl ReplyMode {
    /// The mode of `command` (unknown → read, as albatross-client's `certificate`).
    pub fn of(command: &Command) -> Self {
        match command {
            Command::Console(codec::ConsoleCmd::Subscribe(_))
            | Command::Statistics(codec::StatsCmd::Subscribe) => Self::Read,
            Command::Block(codec::BlockCmd::Dump(_)) => Self::Dump,
            _ => Self::Single,
        }
    }
}

/// What follows the handshake for `command`: nothing, an image (create with an empty
/// image, §8.2), block data (block set, §8.3), or a CRL (revocation upload).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// Nothing is streamed.
    None,
    /// The unikernel image; `compressed` says whether the stream is zlib.
    Image {
        /// The stream is zlib.
        compressed: bool,
    },
    /// Block device content; `compressed` says whether the stream is zlib.
    BlockData {
        /// The stream is zlib.
        compressed: bool,
    },
    /// A DER CRL (`revocation upload`, petrel), never compressed.
    Crl,
}

impl StreamKind {
    /// What the endpoint reads after the handshake for `command`.
    pub fn of(command: &Command) -> Self {
        match command {
            Command::Unikernel(UnikernelCmd::Create(c) | UnikernelCmd::ForceCreate(c))
                if c.image.is_empty() =>
            {
                Self::Image {
                    compressed: c.compressed,
                }
            }
            Command::Block(codec::BlockCmd::Set(compressed)) => Self::BlockData {
                compressed: *compressed,
            },
            Command::Revocation(codec::RevocationCmd::Upload) => Self::Crl,
            _ => Self::None,
        }
    }
}

/// Parses `--since`: RFC 3339 (`2025-03-12T23:42:15Z`), a date (`2025-03-12`, midnight
/// UTC, as albatross-client), or a duration before `now` (`90s`, `10m`, `2h`, `1d`,
/// `1h30m`).
pub fn parse_since(s: &str, now: OffsetDateTime) -> Result<Timestamp, RequestError> {
    let bad = || RequestError::Since(s.to_owned());
    let time = if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        t
    } else if let Ok(t) = OffsetDateTime::parse(&format!("{s}T00:00:00Z"), &Rfc3339) {
        t
    } else {
        let seconds = parse_duration(s).ok_or_else(bad)?;
        now.checked_sub(time::Duration::seconds(seconds))
            .ok_or_else(bad)?
    };
    let millis = i64::try_from(time.unix_timestamp_nanos() / 1_000_000).map_err(|_| bad())?;
    Timestamp::from_millis(millis).ok_or_else(bad)
}

/// `1h30m` → 5400: numbers each followed by one of `s`, `m`, `h`, `d`, `w`.
fn parse_duration(s: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut number = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit: i64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return None,
        };
        let n: i64 = number.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        number.clear();
    }
    (number.is_empty() && !s.is_empty()).then_some(total)
}

/// Where to connect: `HOST[:PORT]`, `[IPV6]:PORT` or a bare IPv6 address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    /// Host name or address (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Destination {
    /// Parses a destination; the port defaults to [`DEFAULT_PORT`].
    pub fn parse(s: &str) -> Result<Self, RequestError> {
        if s.parse::<Ipv6Addr>().is_ok() {
            return Ok(Self {
                host: s.to_owned(),
                port: DEFAULT_PORT,
            });
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| RequestError::Port(s.to_owned()))?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| RequestError::Port(s.to_owned()))?,
                    ),
                ),
            }
        } else {
            match s.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (s, None),
            }
        };
        if host.is_empty() {
            return Err(RequestError::EmptyHost(s.to_owned()));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p.parse().map_err(|_| RequestError::Port(s.to_owned()))?,
        };
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }

    /// The host as an IP address, if it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::Path;

    fn policy(cpuids: &[i64], memory: i64, bridges: &[&str]) -> Policy {
        Policy {
            unikernels: 2,
            cpuids: cpuids.iter().copied().collect(),
            memory,
            block: None,
            bridges: bridges.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn net_arguments() {
        assert_eq!(
            parse_net("service").unwrap(),
            NetDeviceSpec {
                netif: "service".into(),
                bridge: None,
                mac: None
            }
        );
        assert_eq!(
            parse_net("service:br0@00:80:41:AB:cd:0f").unwrap(),
            NetDeviceSpec {
                netif: "service".into(),
                bridge: Some("br0".into()),
                mac: Some(MacAddr::new([0, 0x80, 0x41, 0xab, 0xcd, 0x0f]))
            }
        );
        assert_eq!(
            parse_net("br0@00-80-41-ab-cd-0f").unwrap().mac,
            Some(MacAddr::new([0, 0x80, 0x41, 0xab, 0xcd, 0x0f]))
        );
        for bad in ["a:b:c", ":br0", "a@b@c", ""] {
            assert_eq!(
                parse_net(bad).unwrap_err().to_string(),
                format!("invalid --net {bad:?}: format is [name:]bridge[@mac]")
            );
        }
        assert_eq!(
            parse_net("a@00:11:22:33:44").unwrap_err().to_string(),
            "invalid MAC address \"00:11:22:33:44\" (expected six hex octets such as 00:80:41:ab:cd:ef)"
        );
    }

    #[test]
    fn block_arguments() {
        assert_eq!(
            parse_block("storage:data@4096").unwrap(),
            BlockDeviceSpec {
                name: "storage".into(),
                device_name: Some("data".into()),
                sector_size: Some(4096)
            }
        );
        assert_eq!(
            parse_block("storage").unwrap(),
            BlockDeviceSpec::named("storage".into())
        );
        assert_eq!(
            parse_block("a@1000").unwrap_err().to_string(),
            "sector size must be a power of two greater than or equal 512"
        );
        assert_eq!(parse_block("a@256").unwrap_err(), RequestError::SectorSize);
        assert_eq!(
            parse_block("a@x").unwrap_err().to_string(),
            "sector size must be an integer"
        );
        assert_eq!(
            parse_block("a:b:c").unwrap_err().to_string(),
            "invalid --block \"a:b:c\": format is 'name[@sector-size]' or 'name:device-name[@sector-size]'"
        );
    }

    #[test]
    fn configuration_defaults_and_sets() {
        let config = UnikernelOptions::default()
            .config(Vec::new(), true)
            .unwrap();
        assert_eq!(
            config,
            UnikernelConfig {
                compressed: true,
                ..UnikernelConfig::default()
            }
        );
        let opts = UnikernelOptions {
            cpuids: vec![2, 1, 2],
            arguments: vec!["--x=1".into()],
            restart_on_fail: true,
            exit_codes: vec![3],
            no_add_name: true,
            startup: Some(10),
            ..UnikernelOptions::default()
        };
        let config = opts.config(vec![1], false).unwrap();
        assert_eq!(config.cpuids, BTreeSet::from([1, 2]));
        assert_eq!(config.arguments, Some(vec!["--x=1".to_owned()]));
        assert_eq!(
            config.fail_behaviour,
            FailBehaviour::Restart(BTreeSet::from([3]))
        );
        assert!(!config.add_name);
        assert_eq!(config.startup, Some(10));
        let twice = UnikernelOptions {
            bridges: vec![parse_net("a:br0").unwrap(), parse_net("a:br1").unwrap()],
            ..UnikernelOptions::default()
        };
        assert_eq!(
            twice.config(Vec::new(), false).unwrap_err().to_string(),
            "Bridge names must be a set"
        );
        let twice = UnikernelOptions {
            blocks: vec![parse_block("a").unwrap(), parse_block("a:b").unwrap()],
            ..UnikernelOptions::default()
        };
        assert_eq!(
            twice.arguments().unwrap_err().to_string(),
            "Block devices must be a set"
        );
    }

    #[test]
    fn policy_fit_texts() {
        let p = policy(&[0, 1], 512, &["br0", "service"]);
        let fits = |cpuids: &[i64], memory: i64, nets: &[&str]| {
            let opts = UnikernelOptions {
                cpuids: cpuids.to_vec(),
                memory,
                bridges: nets.iter().map(|n| parse_net(n).unwrap()).collect(),
                ..UnikernelOptions::default()
            };
            fits_policy(&p, &opts.config(Vec::new(), false).unwrap())
                .err()
                .map(|e| e.to_string())
        };
        assert_eq!(fits(&[1], 512, &["service", "x:br0"]), None);
        assert_eq!(
            fits(&[1, 2, 3], 1024, &[]).as_deref(),
            Some("the CPUids 2, 3 requested by the unikernel are not allowed by policy")
        );
        assert_eq!(
            fits(&[0], 513, &[]).as_deref(),
            Some("513 MB memory assigned to unikernel exceeds policy (512MB)")
        );
        assert_eq!(
            fits(&[0], 32, &["a:br1", "service", "b:other"]).as_deref(),
            Some("Bridge(s) br1, other not allowed by policy (available: br0, service)")
        );
    }

    #[test]
    fn common_names() {
        let name = |s: &str| Name::parse(s).unwrap();
        let info = Command::Unikernel(UnikernelCmd::Info);
        assert_eq!(request_common_name(&info, &name(":")).unwrap(), ".");
        assert_eq!(request_common_name(&info, &name("Web")).unwrap(), "web");
        assert_eq!(
            request_common_name(&info, &name("a:web"))
                .unwrap_err()
                .to_string(),
            "non-empty path"
        );
        assert_eq!(
            request_common_name(&info, &name("a:")).unwrap_err(),
            RequestError::NonEmptyPath
        );
        let add = Command::Policy(PolicyCmd::Add(policy(&[0], 64, &[])));
        let path = |s: &str| Name::of_path(Path::parse(s).unwrap());
        assert_eq!(request_common_name(&add, &path("user")).unwrap(), "user");
        assert_eq!(
            request_common_name(&add, &path("a:b"))
                .unwrap_err()
                .to_string(),
            "a delegated policy is named by one label below its issuing CA, not by the path \"a:b\""
        );
        assert_eq!(
            request_common_name(&add, &path("")).unwrap_err(),
            RequestError::PolicyPath(String::new())
        );
    }

    #[test]
    fn modes_and_streams() {
        let streamed = UnikernelConfig {
            compressed: true,
            ..UnikernelConfig::default()
        };
        let create = Command::Unikernel(UnikernelCmd::Create(streamed.clone()));
        assert_eq!(
            StreamKind::of(&create),
            StreamKind::Image { compressed: true }
        );
        assert_eq!(ReplyMode::of(&create), ReplyMode::Single);
        let embedded = Command::Unikernel(UnikernelCmd::ForceCreate(UnikernelConfig {
            image: vec![1],
            ..streamed
        }));
        assert_eq!(StreamKind::of(&embedded), StreamKind::None);
        let set = Command::Block(codec::BlockCmd::Set(false));
        assert_eq!(
            StreamKind::of(&set),
            StreamKind::BlockData { compressed: false }
        );
        assert_eq!(
            ReplyMode::of(&Command::Block(codec::BlockCmd::Dump(9))),
            ReplyMode::Dump
        );
        assert_eq!(
            ReplyMode::of(&Command::Console(codec::ConsoleCmd::Subscribe(
                codec::SinceCount::Count(20)
            ))),
            ReplyMode::Read
        );
    }

    #[test]
    fn since_values() {
        let now = OffsetDateTime::from_unix_timestamp(1_748_779_200).unwrap();
        let at = |s: &str| parse_since(s, now).unwrap().millis();
        assert_eq!(at("2025-06-01T12:00:00Z"), 1_748_779_200_000);
        assert_eq!(at("2025-06-01T14:00:00.5+02:00"), 1_748_779_200_500);
        assert_eq!(at("2025-06-01"), 1_748_736_000_000);
        assert_eq!(at("90s"), 1_748_779_110_000);
        assert_eq!(at("1h30m"), 1_748_773_800_000);
        assert_eq!(at("2d"), 1_748_606_400_000);
        for bad in ["", "10", "1x", "yesterday", "m"] {
            assert_eq!(
                parse_since(bad, now).unwrap_err(),
                RequestError::Since(bad.into())
            );
        }
    }

    #[test]
    fn destinations() {
        let d = |s: &str| Destination::parse(s).unwrap();
        assert_eq!(
            d("example.org"),
            Destination {
                host: "example.org".into(),
                port: 1025
            }
        );
        assert_eq!(
            d("10.0.0.1:4433"),
            Destination {
                host: "10.0.0.1".into(),
                port: 4433
            }
        );
        assert_eq!(
            d("[::1]:99"),
            Destination {
                host: "::1".into(),
                port: 99
            }
        );
        assert_eq!(
            d("[::1]"),
            Destination {
                host: "::1".into(),
                port: 1025
            }
        );
        assert_eq!(
            d("fe80::1"),
            Destination {
                host: "fe80::1".into(),
                port: 1025
            }
        );
        assert_eq!(d("[::1]:99").to_string(), "[::1]:99");
        assert_eq!(d("h:7").to_string(), "h:7");
        assert_eq!(
            Destination::parse("h:x").unwrap_err().to_string(),
            "invalid destination \"h:x\": failed to parse port"
        );
        assert_eq!(
            Destination::parse(":1").unwrap_err(),
            RequestError::EmptyHost(":1".into())
        );
        assert_eq!(d("127.0.0.1").ip(), Some("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn compression_levels() {
        assert_eq!(compression_level(0), Ok(0));
        assert_eq!(compression_level(9), Ok(9));
        assert_eq!(
            compression_level(10).unwrap_err().to_string(),
            "compression level 10 is not between 0 and 9"
        );
    }
}
