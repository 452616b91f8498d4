//! The revocation store and the pure revocation check (DESIGN.md, "Revocation").
//!
//! The store maps an issuer (the SHA-256 of its subject public key info, as in
//! [`CertId`]) to the serials its newest accepted CRL revokes. [`RevocationStore::check`]
//! is a pure function over a request's chain and the store: it behaves the same whatever
//! the TLS stack, and a store replaced after a CRL upload applies to the very next
//! connection. Loading, validating and persisting CRLs happens elsewhere.

use std::collections::{BTreeMap, BTreeSet};

use crate::chain::{CertId, ChainLink};

/// A certificate of the chain is revoked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("certificate {common_name} (serial {serial}) is revoked")]
pub struct Revoked {
    /// The revoked certificate's common name.
    pub common_name: String,
    /// Its serial, lower-case hex.
    pub serial: String,
    /// Its identity.
    pub id: CertId,
}

/// The revoked serials per issuer key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationStore {
    revoked: BTreeMap<String, BTreeSet<String>>,
}

impl RevocationStore {
    /// An empty store: every certificate's status is unknown, and allowed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the serials revoked by the issuer with key hash `issuer_key`.
    pub fn set(&mut self, issuer_key: String, serials: BTreeSet<String>) {
        self.revoked.insert(issuer_key, serials);
    }

    /// The serials revoked by an issuer.
    pub fn revoked_by(&self, issuer_key: &str) -> Option<&BTreeSet<String>> {
        self.revoked.get(issuer_key)
    }

    /// Whether `id` is revoked.
    pub fn is_revoked(&self, id: &CertId) -> bool {
        self.revoked
            .get(&id.issuer_key)
            .is_some_and(|serials| serials.contains(&id.serial))
    }

    /// Checks every certificate of `chain`; the first revoked one (leaf side first) is
    /// reported. An issuer without a CRL means "status unknown, allowed".
    pub fn check(&self, chain: &[ChainLink]) -> Result<(), Revoked> {
        match chain.iter().find(|link| self.is_revoked(&link.id)) {
            Some(link) => Err(Revoked {
                common_name: link.common_name.clone(),
                serial: link.id.serial.clone(),
                id: link.id.clone(),
            }),
            None => Ok(()),
        }
    }
}
