//! Certificate fixtures: root CA → intermediate CAs with policies → leaves with commands.

use std::time::Duration;

use petrel::codec::{self, Command};
use petrel::pki::{
    self, CaIssuer, Certificate, CertificateTemplate, Criticality, KeyType, PrivateKey, Profile,
    Serial, Subject, Validity,
};
use petrel::policy::Policy;
use rand::SeedableRng;
use time::OffsetDateTime;

/// The fixed clock of tests that do not talk to a running endpoint: 2025-06-01 12:00 UTC.
pub const FIXED_NOW: i64 = 1_748_779_200;

/// The fixed clock as an `OffsetDateTime`.
pub fn fixed_now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(FIXED_NOW).unwrap()
}

/// A CA that can issue: its issuer (certificate chain + key).
pub struct Ca {
    /// The issuer: certificate first, then the rest of its chain (root excluded).
    pub issuer: CaIssuer,
    /// The clock this PKI issues at.
    pub now: OffsetDateTime,
    rng: std::cell::RefCell<rand::rngs::StdRng>,
}

/// A leaf (or any end-entity certificate) with its key and the chain to present.
pub struct Leaf {
    /// The leaf certificate.
    pub cert: Certificate,
    /// Its private key.
    pub key: PrivateKey,
    /// What a client presents: leaf, then the issuing CA's chain (root excluded).
    pub chain: Vec<Certificate>,
}

impl Leaf {
    /// The chain as PEM (leaf first).
    pub fn chain_pem(&self) -> String {
        self.chain.iter().map(Certificate::pem).collect()
    }

    /// The private key as PEM.
    pub fn key_pem(&self) -> String {
        self.key.to_pem()
    }
}

/// Options for one certificate beyond the defaults.
#[derive(Clone, Copy)]
pub struct Opts {
    /// Key type of the new certificate.
    pub key_type: KeyType,
    /// Criticality of the albatross extension.
    pub criticality: Criticality,
    /// Validity start relative to the PKI clock, in seconds (negative = in the past).
    pub start_offset: i64,
    /// Validity duration.
    pub duration: Duration,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            key_type: KeyType::Ed25519,
            criticality: Criticality::NonCritical,
            start_offset: 0,
            duration: Duration::from_secs(3600),
        }
    }
}

impl Ca {
    /// A self-signed root CA with common name `cn`, issuing at `now`.
    pub fn root_at(cn: &str, now: OffsetDateTime) -> Self {
        let key = PrivateKey::generate(KeyType::Ed25519).unwrap();
        let mut rng =
            rand::rngs::StdRng::seed_from_u64(cn.len() as u64 ^ now.unix_timestamp() as u64);
        let validity = Validity {
            now,
            duration: Duration::from_secs(10 * 365 * 86400),
        };
        let cert = pki::cert::root_ca(cn, &key, validity, Serial::random(&mut rng)).unwrap();
        Self {
            issuer: CaIssuer::new(vec![cert], key).unwrap(),
            now,
            rng: std::cell::RefCell::new(rng),
        }
    }

    /// A CA from an existing issuer (e.g. one read from files), issuing at `now`.
    pub fn from_issuer(issuer: CaIssuer, now: OffsetDateTime) -> Self {
        Self {
            issuer,
            now,
            rng: std::cell::RefCell::new(rand::rngs::StdRng::from_entropy()),
        }
    }

    /// A root CA at the fixed clock.
    pub fn root(cn: &str) -> Self {
        Self::root_at(cn, fixed_now())
    }

    /// A root CA at the real clock (for tests against a running endpoint).
    pub fn root_now(cn: &str) -> Self {
        Self::root_at(cn, OffsetDateTime::now_utc())
    }

    /// The CA's own certificate.
    pub fn cert(&self) -> &Certificate {
        self.issuer.certificate()
    }

    /// The CA certificate as PEM.
    pub fn cert_pem(&self) -> String {
        self.cert().pem()
    }

    /// The chain a certificate issued by this CA is presented with (this CA's chain,
    /// without the self-signed root).
    pub fn presented_chain(&self) -> Vec<Certificate> {
        if self.issuer.is_self_signed() {
            Vec::new()
        } else {
            self.issuer.chain().to_vec()
        }
    }

    fn serial(&self) -> Serial {
        Serial::random(&mut *self.rng.borrow_mut())
    }

    fn issue(
        &self,
        profile: Profile,
        subject: Subject<'_>,
        ext: Option<Vec<u8>>,
        opts: Opts,
    ) -> (Certificate, PrivateKey) {
        let key = PrivateKey::generate(opts.key_type).unwrap();
        let start = self.now + time::Duration::seconds(opts.start_offset);
        let template = CertificateTemplate {
            profile,
            subject,
            public_key: key.public_key(),
            albatross: ext.as_deref(),
            albatross_criticality: opts.criticality,
            alt_names: &[],
            validity: Validity {
                now: start,
                duration: opts.duration,
            },
            serial: self.serial(),
        };
        (pki::cert::issue(&template, &self.issuer).unwrap(), key)
    }

    /// An intermediate CA named `cn` carrying `policy`.
    pub fn intermediate(&self, cn: &str, policy: &Policy) -> Ca {
        self.intermediate_with(
            cn,
            Some(codec::encode_extension(&Command::Policy(
                codec::PolicyCmd::Add(policy.clone()),
            ))),
            Opts::default(),
        )
    }

    /// An intermediate CA named `cn` with an arbitrary extension value (or none).
    pub fn intermediate_with(&self, cn: &str, ext: Option<Vec<u8>>, opts: Opts) -> Ca {
        self.intermediate_subject(Subject::CommonName(cn), ext, opts)
    }

    /// An intermediate CA without common name carrying `policy`.
    pub fn intermediate_without_cn(&self, policy: &Policy) -> Ca {
        let ext = codec::encode_extension(&Command::Policy(codec::PolicyCmd::Add(policy.clone())));
        self.intermediate_subject(Subject::Der(&[0x30, 0x00]), Some(ext), Opts::default())
    }

    fn intermediate_subject(&self, subject: Subject<'_>, ext: Option<Vec<u8>>, opts: Opts) -> Ca {
        let (cert, key) = self.issue(
            Profile::IntermediateCa,
            subject,
            ext,
            Opts {
                duration: Duration::from_secs(365 * 86400),
                ..opts
            },
        );
        let mut chain = vec![cert];
        chain.extend(self.presented_chain());
        Ca {
            issuer: CaIssuer::new(chain, key).unwrap(),
            now: self.now,
            rng: std::cell::RefCell::new(rand::rngs::StdRng::seed_from_u64(
                self.serial().as_bytes()[1] as u64,
            )),
        }
    }

    /// A leaf with common name `cn` (`None`: no CN) carrying `command`.
    pub fn leaf(&self, cn: Option<&str>, command: &Command) -> Leaf {
        self.leaf_with(cn, Some(codec::encode_extension(command)), Opts::default())
    }

    /// A leaf with an arbitrary extension value (or none) and options.
    pub fn leaf_with(&self, cn: Option<&str>, ext: Option<Vec<u8>>, opts: Opts) -> Leaf {
        let empty = [0x30, 0x00];
        let subject = match cn {
            Some(cn) => Subject::CommonName(cn),
            None => Subject::Der(&empty),
        };
        let (cert, key) = self.issue(Profile::Leaf, subject, ext, opts);
        let mut chain = vec![cert.clone()];
        chain.extend(self.presented_chain());
        Leaf { cert, key, chain }
    }
}

/// A policy with the given limits.
pub fn policy(
    unikernels: i64,
    cpuids: &[i64],
    memory: i64,
    block: Option<i64>,
    bridges: &[&str],
) -> Policy {
    Policy {
        unikernels,
        cpuids: cpuids.iter().copied().collect(),
        memory,
        block,
        bridges: bridges.iter().map(|s| s.to_string()).collect(),
    }
}
