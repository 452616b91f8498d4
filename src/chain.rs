//! A verified certificate chain → the typed request it carries
//! (`spec/names-and-policies.md` §4, `spec/tls-endpoint.md` §3).
//!
//! The leaf's albatross extension is the command; every intermediate CA with an albatross
//! extension contributes one label (its common name) to the path and the policy its
//! extension carries. [`decode_request`] is pure: it reads DER that a verifier has already
//! accepted and returns a [`Request`]; nothing past it sees a certificate.
//!
//! Where petrel is stricter than albatross: a certificate carrying the albatross extension
//! twice, or marked critical, is refused; a leaf that is itself a CA is refused; the
//! chain's policies are returned top-down (closest to the trust anchor first) because petrel
//! applies them in that order as one transaction (spec N3, T6).

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]

use std::fmt;

use serde::Serialize;

use crate::codec::{self, BlockCmd, Command, ConsoleCmd, PolicyCmd, StatsCmd, UnikernelCmd};
use crate::limits::MAX_CHAIN_LEN;
use crate::name::{Label, Name, NameError, Path};
use crate::pki::{Certificate, CertificateFacts, CommonName, FactsError};
use crate::policy::Policy;

/// Why a verified chain does not make a request. Texts are albatross's where it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The chain has [`MAX_CHAIN_LEN`] certificates or more.
    #[error("certificate chain too long")]
    TooLong,
    /// A certificate could not be read.
    #[error("certificate {index} of the chain: {source}")]
    Certificate {
        /// Position in the chain, leaf = 0.
        index: usize,
        /// What was wrong.
        source: FactsError,
    },
    /// An albatross extension did not decode.
    #[error("couldn't parse albatross extension: {0}")]
    Extension(codec::DecodeError),
    /// An intermediate's extension is not a policy.
    #[error("unexpected wire {0}")]
    UnexpectedWire(String),
    /// An intermediate with a policy has no common name.
    #[error("policy add may not have an empty name")]
    PolicyWithoutName,
    /// A common name is not a valid label.
    #[error("{0}")]
    Name(NameError),
    /// The leaf has no albatross extension.
    #[error("leaf certificate does not contain an albatross extension")]
    LeafWithoutExtension,
    /// A command that needs a name was sent by a leaf without common name.
    #[error("{0} may not have an empty name")]
    EmptyName(String),
    /// The leaf's command is not accepted over TLS.
    #[error("unexpected command")]
    UnexpectedCommand,
    /// A certificate carries the albatross extension more than once.
    #[error("certificate {0} carries more than one albatross extension")]
    DuplicateExtension(String),
    /// A certificate marks the albatross extension critical.
    #[error("albatross extension of certificate {0} must not be critical")]
    CriticalExtension(String),
    /// The leaf is a CA certificate.
    #[error("leaf certificate {0} must not be a CA certificate")]
    LeafIsCa(String),
}

/// A certificate chain a verifier accepted against the configured CA certificates: the
/// certificates the client sent, leaf first, in path order, and the trust anchor the path
/// ends at. Only verification code in this crate constructs it.
#[derive(Debug, Clone)]
pub struct VerifiedChain {
    sent: Vec<Certificate>,
    anchor: Certificate,
}

impl VerifiedChain {
    /// Wraps a path that has just been verified: `path` leaf first up to and including the
    /// trust anchor (OpenSSL's verified chain). `anchor_sent` says whether the client sent
    /// the anchor itself; if not, it does not count towards the chain length (albatross
    /// takes the certificates the client sent).
    pub(crate) fn from_verified_path(
        mut path: Vec<Certificate>,
        anchor_sent: bool,
    ) -> Option<Self> {
        let anchor = if anchor_sent {
            path.last()?.clone()
        } else {
            path.pop()?
        };
        if path.is_empty() {
            return None;
        }
        Some(Self { sent: path, anchor })
    }

    /// The certificates the client sent, leaf first.
    pub fn certificates(&self) -> &[Certificate] {
        &self.sent
    }

    /// The trust anchor the chain was verified against.
    pub fn anchor(&self) -> &Certificate {
        &self.anchor
    }
}

/// Identifies a certificate for revocation and provenance: the SHA-256 of its issuer's
/// subject public key info and its serial number. This is what a CRL of that issuer
/// names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
pub struct CertId {
    /// SHA-256 of the issuing CA's SubjectPublicKeyInfo, lower-case hex.
    pub issuer_key: String,
    /// Serial number, lower-case hex of its DER content octets.
    pub serial: String,
}

impl fmt::Display for CertId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = self.issuer_key.get(..16).unwrap_or(&self.issuer_key);
        write!(f, "serial {} (issuer key {short}…)", self.serial)
    }
}

/// One certificate of a request's chain, as later layers need it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainLink {
    /// Identity for revocation and provenance.
    pub id: CertId,
    /// The subject's common name (as sent; empty if absent).
    pub common_name: String,
    /// The subject as text.
    pub subject: String,
    /// Whether it is a CA certificate.
    pub is_ca: bool,
    /// The DER, so that CA certificates can be remembered (CRL verification).
    #[serde(skip)]
    pub der: Vec<u8>,
}

/// A policy delegated by an intermediate CA of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DelegatedPolicy {
    /// The path it applies to (the CNs of the intermediates down to this one).
    pub path: Path,
    /// The policy.
    pub policy: Policy,
    /// The intermediate certificate that carries it.
    pub cert: CertId,
}

/// What a request asks of the executor, with everything later layers need to know
/// about the chain that carried it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Request {
    /// Whom the command is about.
    pub name: Name,
    /// The chain's policies, top-down: closest to the trust anchor first.
    pub policies: Vec<DelegatedPolicy>,
    /// The command of the leaf.
    pub command: Command,
    /// Every certificate the client sent, leaf first, then the trust anchor.
    pub chain: Vec<ChainLink>,
}

impl Request {
    /// The leaf's identity.
    pub fn leaf(&self) -> Option<&ChainLink> {
        self.chain.first()
    }

    /// What follows the handshake on the TLS stream for this command, if anything.
    pub fn input(&self) -> Option<InputKind> {
        input_kind(&self.command)
    }
}

/// A stream of raw chunks the client sends after the handshake (`spec/wire.md` §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// The unikernel image of a create / force-create whose certificate carries an
    /// empty image (§8.2).
    Image,
    /// Block device content for `block set` (§8.3).
    BlockData,
    /// A DER CRL for `revocation upload` (DESIGN.md).
    Crl,
}

/// What follows the handshake for `command`.
pub fn input_kind(command: &Command) -> Option<InputKind> {
    match command {
        Command::Unikernel(UnikernelCmd::Create(c) | UnikernelCmd::ForceCreate(c))
            if c.image.is_empty() =>
        {
            Some(InputKind::Image)
        }
        Command::Block(BlockCmd::Set(_)) => Some(InputKind::BlockData),
        Command::Revocation(codec::RevocationCmd::Upload) => Some(InputKind::Crl),
        _ => None,
    }
}

/// Decodes the request a verified chain carries (names doc §4, with petrel's stricter
/// checks described in the module documentation).
pub fn decode_request(chain: &VerifiedChain) -> Result<Request, ChainError> {
    decode_unverified(&chain.sent, &chain.anchor)
}

/// [`decode_request`] on certificates nobody verified: `sent` as the client sent them
/// (leaf first) and the `anchor` they claim to chain to. The result is not authorized to
/// do anything (only [`crate::auth::authorize`] makes an `Authorized` request); this entry
/// point exists for the fuzzer and for `petrel inspect`.
pub fn decode_unverified(
    sent: &[Certificate],
    anchor: &Certificate,
) -> Result<Request, ChainError> {
    if sent.len() >= MAX_CHAIN_LEN {
        return Err(ChainError::TooLong);
    }
    let facts = sent
        .iter()
        .enumerate()
        .map(|(index, cert)| {
            cert.facts()
                .map_err(|source| ChainError::Certificate { index, source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let anchor_facts = anchor.facts().map_err(|source| ChainError::Certificate {
        index: sent.len(),
        source,
    })?;
    let links = links(sent, anchor, &facts, &anchor_facts);
    let (leaf, intermediates) = facts.split_first().ok_or(ChainError::TooLong)?;
    let intermediate_links = links.get(1..).unwrap_or_default();

    let mut path = Path::root();
    let mut policies = Vec::new();
    for (cert, link) in intermediates.iter().zip(intermediate_links).rev() {
        let Some(value) = single_extension(cert)? else {
            continue;
        };
        let ext = codec::decode_extension(value).map_err(ChainError::Extension)?;
        let policy = match ext.command {
            Command::Policy(PolicyCmd::Add(policy)) => policy,
            other => return Err(ChainError::UnexpectedWire(other.to_string())),
        };
        let label = match &cert.common_name {
            CommonName::Absent => return Err(ChainError::PolicyWithoutName),
            CommonName::One(cn) => Label::parse(cn).map_err(ChainError::Name)?,
            CommonName::Several(_) => return Err(ChainError::Name(NameError::InvalidLabel)),
        };
        path = path.child(label);
        policies.push(DelegatedPolicy {
            path: path.clone(),
            policy,
            cert: link.id.clone(),
        });
    }

    let leaf_value = single_extension(leaf)?;
    if leaf.basic_constraints.is_some_and(|bc| bc.ca) {
        return Err(ChainError::LeafIsCa(display_cn(&leaf.common_name)));
    }
    let name = match &leaf.common_name {
        CommonName::Absent => {
            let Some(value) = leaf_value else {
                return Err(ChainError::LeafWithoutExtension);
            };
            let ext = codec::decode_extension(value).map_err(ChainError::Extension)?;
            if let Some(what) = needs_name(&ext.command) {
                return Err(ChainError::EmptyName(what.to_owned()));
            }
            Name::of_path(path)
        }
        CommonName::One(cn) if cn == "." || cn == ":" => Name::of_path(path),
        CommonName::One(cn) => Name::labelled(path, Label::parse(cn).map_err(ChainError::Name)?),
        CommonName::Several(_) => return Err(ChainError::Name(NameError::InvalidLabel)),
    };
    let value = leaf_value.ok_or(ChainError::LeafWithoutExtension)?;
    let ext = codec::decode_extension(value).map_err(ChainError::Extension)?;
    if !allowed_over_tls(&ext.command) {
        return Err(ChainError::UnexpectedCommand);
    }
    Ok(Request {
        name,
        policies,
        command: ext.command,
        chain: links,
    })
}

/// Largest number of certificates [`decode_concatenated`] splits off.
pub const MAX_CONCATENATED_CERTS: usize = 16;

/// Splits `der` into concatenated DER certificates (each one complete TLV) and decodes
/// them with [`decode_unverified`], the last one being the anchor. For the fuzzer, which
/// feeds arbitrary bytes here.
pub fn decode_concatenated(der: &[u8]) -> Result<Request, ChainError> {
    let mut certs = Vec::new();
    let mut rest = der;
    while !rest.is_empty() && certs.len() < MAX_CONCATENATED_CERTS {
        let len = tlv_len(rest).ok_or(ChainError::Certificate {
            index: certs.len(),
            source: FactsError::Malformed("truncated certificate".into()),
        })?;
        let (cert, tail) = rest.split_at_checked(len).ok_or(ChainError::Certificate {
            index: certs.len(),
            source: FactsError::Malformed("truncated certificate".into()),
        })?;
        certs.push(Certificate::from_der(cert.to_vec()));
        rest = tail;
    }
    let anchor = certs.pop().ok_or(ChainError::TooLong)?;
    decode_unverified(&certs, &anchor)
}

/// Total length of the DER TLV at the start of `der` (definite lengths up to 4 octets).
fn tlv_len(der: &[u8]) -> Option<usize> {
    let first = *der.get(1)?;
    if first < 0x80 {
        return usize::from(first).checked_add(2);
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 {
        return None;
    }
    let len = der
        .get(2..2 + n)?
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
    len.checked_add(2 + n)
}

/// The chain's links, leaf first, then the trust anchor (whose issuer is itself).
fn links(
    sent: &[Certificate],
    anchor_der: &Certificate,
    facts: &[CertificateFacts],
    anchor: &CertificateFacts,
) -> Vec<ChainLink> {
    let issuers = facts.iter().skip(1).chain(std::iter::once(anchor));
    let mut links: Vec<ChainLink> = facts
        .iter()
        .zip(issuers)
        .zip(sent)
        .map(|((cert, issuer), der)| link(cert, issuer, der))
        .collect();
    links.push(link(anchor, anchor, anchor_der));
    links
}

fn link(cert: &CertificateFacts, issuer: &CertificateFacts, der: &Certificate) -> ChainLink {
    ChainLink {
        id: CertId {
            issuer_key: hex::encode(issuer.public_key.spki_sha256()),
            serial: cert.serial.hex(),
        },
        common_name: display_cn(&cert.common_name),
        subject: cert.subject.text().to_owned(),
        is_ca: cert.basic_constraints.is_some_and(|bc| bc.ca),
        der: der.der().to_vec(),
    }
}

fn display_cn(cn: &CommonName) -> String {
    match cn {
        CommonName::Absent => String::new(),
        CommonName::One(cn) => cn.clone(),
        CommonName::Several(cns) => cns.join("+"),
    }
}

/// The albatross extension's value, refusing duplicates and critical ones.
fn single_extension(cert: &CertificateFacts) -> Result<Option<&[u8]>, ChainError> {
    match cert.albatross.as_slice() {
        [] => Ok(None),
        [ext] if ext.critical => Err(ChainError::CriticalExtension(display_cn(&cert.common_name))),
        [ext] => Ok(Some(&ext.value)),
        _ => Err(ChainError::DuplicateExtension(display_cn(
            &cert.common_name,
        ))),
    }
}

/// For a leaf without common name: the commands albatross refuses with
/// "<what> may not have an empty name".
fn needs_name(command: &Command) -> Option<&'static str> {
    Some(match command {
        Command::Policy(PolicyCmd::Add(_)) => "policy add",
        Command::Policy(PolicyCmd::Remove) => "policy remove",
        Command::Block(BlockCmd::Add(_)) => "block add",
        Command::Block(BlockCmd::AddOld { .. }) => "old block add",
        Command::Block(BlockCmd::Remove) => "block remove",
        Command::Block(BlockCmd::Set(_)) => "block set",
        Command::Block(BlockCmd::SetOld { .. }) => "old block set",
        Command::Block(BlockCmd::Dump(_) | BlockCmd::DumpOld(_)) => "block dump",
        _ => return None,
    })
}

/// Commands a leaf may carry (tls-endpoint.md §3, plus petrel's revocation family).
pub fn allowed_over_tls(command: &Command) -> bool {
    match command {
        Command::Console(c) => matches!(c, ConsoleCmd::Subscribe(_) | ConsoleCmd::ListInactive),
        Command::Statistics(s) => matches!(s, StatsCmd::Subscribe),
        Command::Unikernel(_) | Command::Block(_) | Command::Revocation(_) => true,
        Command::Policy(p) => matches!(p, PolicyCmd::Info),
    }
}
