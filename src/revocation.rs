//! The revocation store, the pure revocation check, and the book of accepted CRLs
//! (DESIGN.md, "Revocation").
//!
//! The store maps an issuer (the SHA-256 of its subject public key info, as in
//! [`CertId`]) to the serials its effective CRL revokes. [`RevocationStore::check`]
//! is a pure function over a request's chain and the store: it behaves the same whatever
//! the TLS stack, and a store published after a CRL upload or a reload applies to the
//! very next connection ([`SharedRevocations`]).
//!
//! [`CrlBook`] holds the CRLs behind the store: per issuer the last uploaded one and the
//! best operator one; the one with the higher CRL number is the issuer's effective CRL,
//! whatever its origin. Reading, validating and persisting CRLs happens in the executor;
//! everything here is pure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::chain::{CertId, ChainLink};
use crate::pki::CrlNumber;
use crate::pki::crl::ValidatedCrl;
use crate::pki::rfc3339;

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

    /// The number of issuers with a CRL in force.
    pub fn issuers(&self) -> usize {
        self.revoked.len()
    }

    /// Whether `id` is revoked.
    pub fn is_revoked(&self, id: &CertId) -> bool {
        self.revoked
            .get(&id.issuer_key)
            .is_some_and(|serials| serials.contains(&id.serial))
    }

    /// Every revoked certificate.
    pub fn revoked_ids(&self) -> BTreeSet<CertId> {
        self.revoked
            .iter()
            .flat_map(|(issuer_key, serials)| {
                serials.iter().map(|serial| CertId {
                    issuer_key: issuer_key.clone(),
                    serial: serial.clone(),
                })
            })
            .collect()
    }

    /// The certificates revoked here but not in `previous`: those whose consequences
    /// (destroyed work, removed policies, closed consoles) are still to be applied.
    pub fn newly_revoked_since(&self, previous: &RevocationStore) -> BTreeSet<CertId> {
        self.revoked_ids()
            .into_iter()
            .filter(|id| !previous.is_revoked(id))
            .collect()
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

/// The revocation store that applies to new connections. The executor publishes a new
/// store (a CRL upload, a reload, an operator CRL whose issuer just became known) with
/// [`SharedRevocations::replace`]; it applies to the very next connection, while
/// connections in progress keep the store they started with. Once the executor runs in
/// a process of its own, the same store travels as a message and the TLS side calls
/// `replace`.
#[derive(Debug, Default)]
pub struct SharedRevocations(RwLock<Arc<RevocationStore>>);

impl SharedRevocations {
    /// Starts with `store`.
    pub fn new(store: RevocationStore) -> Self {
        Self(RwLock::new(Arc::new(store)))
    }

    /// The store for a connection starting now.
    pub fn current(&self) -> Arc<RevocationStore> {
        Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces the store for later connections.
    pub fn replace(&self, store: RevocationStore) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(store);
    }
}

/// Where a CRL came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrlOrigin {
    /// Uploaded by a leaf of the issuer (`revocation upload`), stored in the state
    /// directory.
    Uploaded,
    /// An operator's file (`--crl FILE` or the state directory's `crls/`).
    Operator(PathBuf),
}

impl CrlOrigin {
    /// In words, for `revocation info` and logs: `uploaded` or `operator <file>`.
    pub fn text(&self) -> String {
        match self {
            Self::Uploaded => "uploaded".to_owned(),
            Self::Operator(path) => format!("operator {}", path.display()),
        }
    }
}

/// A CRL accepted for an issuer: its issuer name, signature and CRL number checked
/// against the issuing CA's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerCrl {
    /// SHA-256 of the issuer's SubjectPublicKeyInfo, lower-case hex (what
    /// [`CertId::issuer_key`] of the certificates it issued holds).
    pub issuer_key: String,
    /// The CRL.
    pub crl: ValidatedCrl,
    /// Where it came from.
    pub origin: CrlOrigin,
}

impl IssuerCrl {
    /// The serials it revokes, lower-case hex as in [`CertId::serial`].
    pub fn serials(&self) -> BTreeSet<String> {
        self.crl.revoked().iter().map(|e| e.serial.hex()).collect()
    }
}

/// A CRL number that does not exceed the stored one (replay protection).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CRL number {new} is not greater than the stored {stored}")]
pub struct NotNewer {
    /// The number offered.
    pub new: CrlNumber,
    /// The number of the issuer's effective CRL.
    pub stored: CrlNumber,
}

/// What `revocation info` reports for one issuer of the caller's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrlInfo {
    /// The issuer (RFC 4514-like).
    pub subject: String,
    /// SHA-256 of the issuer's SubjectPublicKeyInfo, hex.
    pub issuer_key: String,
    /// The CRL number, decimal.
    pub crl_number: String,
    /// thisUpdate, RFC 3339.
    pub this_update: String,
    /// nextUpdate, RFC 3339, if the CRL has one.
    pub next_update: Option<String>,
    /// `uploaded` or `operator <file>`.
    pub origin: String,
    /// The revoked serials, lower-case hex, in the CRL's order.
    pub revoked: Vec<String>,
}

/// Every CRL petrel holds: per issuer, the last uploaded CRL and the operator CRL with
/// the highest number. The issuer's effective CRL is the one of the two with the higher
/// number (the uploaded one on a tie); the [`RevocationStore`] is made of the effective
/// CRLs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrlBook {
    uploaded: BTreeMap<String, IssuerCrl>,
    operator: BTreeMap<String, IssuerCrl>,
}

impl CrlBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// The effective CRL of the issuer with key hash `issuer_key`.
    pub fn effective(&self, issuer_key: &str) -> Option<&IssuerCrl> {
        match (self.uploaded.get(issuer_key), self.operator.get(issuer_key)) {
            (Some(up), Some(op)) if op.crl.number() > up.crl.number() => Some(op),
            (Some(up), _) => Some(up),
            (None, op) => op,
        }
    }

    /// Every effective CRL, by issuer key.
    pub fn effective_all(&self) -> Vec<&IssuerCrl> {
        let keys: BTreeSet<&String> = self.uploaded.keys().chain(self.operator.keys()).collect();
        keys.into_iter()
            .filter_map(|key| self.effective(key))
            .collect()
    }

    /// Refuses `number` for the issuer unless it is greater than the number of the
    /// issuer's effective CRL (the first CRL of an issuer may carry any number).
    pub fn check_newer(&self, issuer_key: &str, number: &CrlNumber) -> Result<(), NotNewer> {
        match self.effective(issuer_key) {
            Some(stored) if number <= stored.crl.number() => Err(NotNewer {
                new: number.clone(),
                stored: stored.crl.number().clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Stores an uploaded CRL (the caller checked [`CrlBook::check_newer`]).
    pub fn insert_uploaded(&mut self, crl: IssuerCrl) {
        self.uploaded.insert(crl.issuer_key.clone(), crl);
    }

    /// Adds an operator CRL; of several for one issuer the highest number is kept. True
    /// if it was kept.
    pub fn insert_operator(&mut self, crl: IssuerCrl) -> bool {
        match self.operator.get(&crl.issuer_key) {
            Some(kept) if kept.crl.number() >= crl.crl.number() => false,
            _ => {
                self.operator.insert(crl.issuer_key.clone(), crl);
                true
            }
        }
    }

    /// Forgets every operator CRL (before a reload reads the files again).
    pub fn clear_operator(&mut self) {
        self.operator.clear();
    }

    /// The revocation store of the effective CRLs.
    pub fn store(&self) -> RevocationStore {
        let mut store = RevocationStore::new();
        for crl in self.effective_all() {
            store.set(crl.issuer_key.clone(), crl.serials());
        }
        store
    }

    /// The effective CRL of each issuer of `chain` (the leaf's issuer first), for
    /// `revocation info`.
    pub fn info(&self, chain: &[ChainLink]) -> Vec<CrlInfo> {
        let mut seen = BTreeSet::new();
        chain
            .iter()
            .map(|link| &link.id.issuer_key)
            .filter(|key| seen.insert(*key))
            .filter_map(|key| self.effective(key))
            .map(|crl| CrlInfo {
                subject: crl.crl.issuer().text().to_owned(),
                issuer_key: crl.issuer_key.clone(),
                crl_number: crl.crl.number().to_string(),
                this_update: rfc3339(crl.crl.this_update()),
                next_update: crl.crl.next_update().map(rfc3339),
                origin: crl.origin.text(),
                revoked: crl.crl.revoked().iter().map(|e| e.serial.hex()).collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::pki::cert::root_ca;
    use crate::pki::crl::{create_crl, verify_crl};
    use crate::pki::{
        CaIssuer, CrlTemplate, KeyType, ParsedCrl, PrivateKey, RevokedEntry, Serial, Validity,
    };

    const NOW: i64 = 1_748_779_200;

    fn now() -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(NOW).unwrap()
    }

    fn ca(cn: &str) -> CaIssuer {
        let key = PrivateKey::generate(KeyType::Ed25519).unwrap();
        let validity = Validity {
            now: now(),
            duration: Duration::from_secs(86400),
        };
        let cert = root_ca(cn, &key, validity, Serial::from_der_content(&[1])).unwrap();
        CaIssuer::new(vec![cert], key).unwrap()
    }

    fn key_of(ca: &CaIssuer) -> String {
        hex::encode(ca.facts().spki_sha256())
    }

    fn crl(ca: &CaIssuer, number: u64, serials: &[u8], origin: CrlOrigin) -> IssuerCrl {
        let template = CrlTemplate {
            this_update: now(),
            next_update: None,
            number: CrlNumber::from_u64(number),
            revoked: serials
                .iter()
                .map(|s| RevokedEntry {
                    serial: Serial::from_der_content(&[*s]),
                    revoked_at: NOW,
                    reason: None,
                    invalidity_date: None,
                })
                .collect(),
        };
        let der = create_crl(&template, ca).unwrap();
        let parsed = ParsedCrl::parse(der.der()).unwrap();
        IssuerCrl {
            issuer_key: key_of(ca),
            crl: verify_crl(parsed, ca.facts()).unwrap(),
            origin,
        }
    }

    fn id(issuer_key: &str, serial: &str) -> CertId {
        CertId {
            issuer_key: issuer_key.to_owned(),
            serial: serial.to_owned(),
        }
    }

    fn link(cn: &str, id: CertId) -> ChainLink {
        ChainLink {
            id,
            common_name: cn.to_owned(),
            subject: format!("CN={cn}"),
            is_ca: false,
            der: Vec::new(),
        }
    }

    #[test]
    fn check_names_the_first_revoked_certificate() {
        let mut store = RevocationStore::new();
        store.set("k1".into(), ["0a".to_owned(), "0b".to_owned()].into());
        let chain = [
            link("leaf", id("k2", "01")),
            link("alice", id("k1", "0b")),
            link("root", id("k1", "0c")),
        ];
        assert_eq!(
            store.check(&chain).unwrap_err().to_string(),
            "certificate alice (serial 0b) is revoked"
        );
        assert_eq!(store.check(&chain[..1]), Ok(()));
        assert_eq!(RevocationStore::new().check(&chain), Ok(()));
    }

    #[test]
    fn newly_revoked_is_the_difference() {
        let mut old = RevocationStore::new();
        old.set("k1".into(), ["01".to_owned()].into());
        let mut new = old.clone();
        new.set("k1".into(), ["01".to_owned(), "02".to_owned()].into());
        new.set("k2".into(), ["01".to_owned()].into());
        assert_eq!(
            new.newly_revoked_since(&old),
            [id("k1", "02"), id("k2", "01")].into()
        );
        assert_eq!(old.newly_revoked_since(&new), BTreeSet::new());
        assert_eq!(new.revoked_ids().len(), 3);
    }

    #[test]
    fn shared_store_is_replaced_for_later_readers() {
        let shared = SharedRevocations::new(RevocationStore::new());
        let before = shared.current();
        let mut store = RevocationStore::new();
        store.set("k".into(), ["01".to_owned()].into());
        shared.replace(store.clone());
        assert_eq!(*before, RevocationStore::new());
        assert_eq!(*shared.current(), store);
    }

    #[test]
    fn the_highest_number_wins_whatever_its_origin() {
        let alice = ca("alice");
        let key = key_of(&alice);
        let file = CrlOrigin::Operator(PathBuf::from("/etc/alice.crl"));
        let mut book = CrlBook::new();
        assert_eq!(book.check_newer(&key, &CrlNumber::from_u64(0)), Ok(()));

        book.insert_uploaded(crl(&alice, 5, &[1], CrlOrigin::Uploaded));
        assert_eq!(
            book.check_newer(&key, &CrlNumber::from_u64(5))
                .unwrap_err()
                .to_string(),
            "CRL number 5 is not greater than the stored 5"
        );
        assert_eq!(book.check_newer(&key, &CrlNumber::from_u64(6)), Ok(()));

        // A lower operator CRL does not win; a higher one does, and then bounds uploads.
        assert!(book.insert_operator(crl(&alice, 3, &[1, 2], file.clone())));
        assert_eq!(book.effective(&key).unwrap().origin, CrlOrigin::Uploaded);
        assert_eq!(
            book.store().revoked_by(&key),
            Some(&["01".to_owned()].into())
        );
        assert!(book.insert_operator(crl(&alice, 7, &[1, 3], file.clone())));
        assert!(!book.insert_operator(crl(&alice, 6, &[4], file.clone())));
        assert_eq!(book.effective(&key).unwrap().origin, file);
        assert_eq!(
            book.store().revoked_by(&key),
            Some(&["01".to_owned(), "03".to_owned()].into())
        );
        assert_eq!(
            book.check_newer(&key, &CrlNumber::from_u64(6))
                .unwrap_err()
                .to_string(),
            "CRL number 6 is not greater than the stored 7"
        );

        // A reload without the file: the uploaded CRL is effective again.
        book.clear_operator();
        assert_eq!(book.effective(&key).unwrap().crl.number().to_string(), "5");
    }

    #[test]
    fn info_lists_the_issuers_of_the_chain_that_have_a_crl() {
        let alice = ca("alice");
        let root = ca("root");
        let mut book = CrlBook::new();
        book.insert_uploaded(crl(&alice, 2, &[0x0a, 0x0b], CrlOrigin::Uploaded));
        let chain = [
            link("leaf", id(&key_of(&alice), "01")),
            link("alice", id(&key_of(&root), "02")),
            link("root", id(&key_of(&root), "03")),
        ];
        let info = book.info(&chain);
        assert_eq!(
            serde_json::to_value(&info).unwrap(),
            serde_json::json!([{
                "subject": "CN=alice",
                "issuer_key": key_of(&alice),
                "crl_number": "2",
                "this_update": "2025-06-01T12:00:00Z",
                "next_update": null,
                "origin": "uploaded",
                "revoked": ["0a", "0b"],
            }])
        );
        book.insert_operator(crl(
            &root,
            1,
            &[9],
            CrlOrigin::Operator(PathBuf::from("r.crl")),
        ));
        let info = book.info(&chain);
        assert_eq!(info.len(), 2);
        assert_eq!(info[1].subject, "CN=root");
        assert_eq!(info[1].origin, "operator r.crl");
        assert_eq!(book.info(&chain[2..]).len(), 1);
    }
}
