//! Odd certificates for the adversarial suite, built with the `openssl` crate because
//! petrel's own `pki` only lays out well-formed profiles: duplicate or critical albatross
//! extensions, CAs without basic constraints or keyCertSign, leaves that are CAs,
//! issuers that loop.

use openssl::asn1::{Asn1Integer, Asn1Object, Asn1OctetString, Asn1Time};
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Extension, X509Name};
use petrel::pki::{ALBATROSS_OID, Certificate, PrivateKey};

use crate::common::pki::{Ca, Leaf};

/// A certificate that can sign, as OpenSSL values.
pub struct Signer {
    /// The certificate.
    pub cert: X509,
    /// Its key.
    pub key: PKey<Private>,
    /// The chain a certificate it issues is presented with (this one first, root
    /// excluded).
    pub chain: Vec<Certificate>,
}

impl Signer {
    /// The signer of a fixture CA.
    pub fn of(ca: &Ca) -> Self {
        Self {
            cert: X509::from_der(ca.cert().der()).unwrap(),
            key: PKey::private_key_from_pem(ca.issuer.key().to_pem().as_bytes()).unwrap(),
            chain: ca.presented_chain(),
        }
    }

    /// A self-signed certificate for `spec` with `key` (not trusted by anyone).
    pub fn self_signed(spec: &Spec<'_>, key: PKey<Private>) -> Self {
        let mut name = X509Name::builder().unwrap();
        name.append_entry_by_text("CN", spec.cn).unwrap();
        let name = name.build();
        let mut builder = X509::builder().unwrap();
        builder.set_subject_name(&name).unwrap();
        builder.set_issuer_name(&name).unwrap();
        builder.set_pubkey(&key).unwrap();
        builder.sign(&key, MessageDigest::null()).unwrap();
        let temporary = builder.build();
        let cert = build(spec, &key, &temporary, &key);
        Self {
            chain: vec![Certificate::from_der(cert.to_der().unwrap())],
            cert,
            key,
        }
    }

    /// Issues `spec`; the result can sign in turn.
    pub fn issue(&self, spec: &Spec<'_>) -> Signer {
        self.issue_with_key(spec, PKey::generate_ed25519().unwrap())
    }

    /// Issues `spec` for `key`.
    pub fn issue_with_key(&self, spec: &Spec<'_>, key: PKey<Private>) -> Signer {
        let cert = build(spec, &key, &self.cert, &self.key);
        let mut chain = vec![Certificate::from_der(cert.to_der().unwrap())];
        chain.extend(self.chain.iter().cloned());
        Signer { cert, key, chain }
    }

    /// Issues `spec` as the leaf of a client.
    pub fn leaf(&self, spec: &Spec<'_>) -> Leaf {
        let issued = self.issue(spec);
        issued.into_leaf()
    }

    /// This certificate as a client's leaf (its chain as presented).
    pub fn into_leaf(self) -> Leaf {
        let pem = self.key.private_key_to_pem_pkcs8().unwrap();
        Leaf {
            cert: self.chain[0].clone(),
            key: PrivateKey::from_pem(std::str::from_utf8(&pem).unwrap()).unwrap(),
            chain: self.chain,
        }
    }
}

/// Basic constraints of a [`Spec`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Basic {
    /// No basicConstraints extension.
    Absent,
    /// cA TRUE (critical).
    Ca,
    /// cA FALSE (critical).
    NotCa,
}

/// Key usage of a [`Spec`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// No keyUsage extension.
    Absent,
    /// A CA's: digitalSignature, keyCertSign, cRLSign.
    Ca,
    /// A CA's without keyCertSign: digitalSignature, cRLSign.
    CaWithoutCertSign,
    /// A leaf's: digitalSignature, keyEncipherment.
    Leaf,
}

/// What to put in a certificate.
pub struct Spec<'a> {
    /// Subject common name.
    pub cn: &'a str,
    /// basicConstraints.
    pub basic: Basic,
    /// keyUsage.
    pub usage: Usage,
    /// extendedKeyUsage clientAuth.
    pub client_auth: bool,
    /// Albatross extensions: (critical, DER value), in this order.
    pub albatross: Vec<(bool, Vec<u8>)>,
    /// notBefore relative to now, in seconds.
    pub start: i64,
    /// Validity in seconds.
    pub duration: i64,
}

impl<'a> Spec<'a> {
    /// An intermediate CA `cn` with one albatross extension `value` (e.g. a policy).
    pub fn ca(cn: &'a str, value: Option<Vec<u8>>) -> Self {
        Self {
            cn,
            basic: Basic::Ca,
            usage: Usage::Ca,
            client_auth: false,
            albatross: value.into_iter().map(|v| (false, v)).collect(),
            start: -60,
            duration: 86400,
        }
    }

    /// A leaf `cn` with one albatross extension `value` (a command).
    pub fn leaf(cn: &'a str, value: Option<Vec<u8>>) -> Self {
        Self {
            cn,
            basic: Basic::NotCa,
            usage: Usage::Leaf,
            client_auth: true,
            albatross: value.into_iter().map(|v| (false, v)).collect(),
            start: -60,
            duration: 3600,
        }
    }
}

fn build(spec: &Spec<'_>, key: &PKey<Private>, issuer: &X509, issuer_key: &PKey<Private>) -> X509 {
    let mut builder = X509::builder().unwrap();
    builder.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial
        .rand(80, openssl::bn::MsbOption::MAYBE_ZERO, false)
        .unwrap();
    let serial: Asn1Integer = serial.to_asn1_integer().unwrap();
    builder.set_serial_number(&serial).unwrap();
    let mut name = X509Name::builder().unwrap();
    name.append_entry_by_text("CN", spec.cn).unwrap();
    let name = name.build();
    builder.set_subject_name(&name).unwrap();
    builder.set_issuer_name(issuer.subject_name()).unwrap();
    builder.set_pubkey(key).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    builder
        .set_not_before(&Asn1Time::from_unix(now + spec.start).unwrap())
        .unwrap();
    builder
        .set_not_after(&Asn1Time::from_unix(now + spec.start + spec.duration).unwrap())
        .unwrap();
    let oid = Asn1Object::from_str(ALBATROSS_OID).unwrap();
    for (critical, value) in &spec.albatross {
        let value = Asn1OctetString::new_from_bytes(value).unwrap();
        builder
            .append_extension(X509Extension::new_from_der(&oid, *critical, &value).unwrap())
            .unwrap();
    }
    let ski = SubjectKeyIdentifier::new()
        .build(&builder.x509v3_context(Some(issuer), None))
        .unwrap();
    builder.append_extension(ski).unwrap();
    let aki = AuthorityKeyIdentifier::new()
        .keyid(false)
        .build(&builder.x509v3_context(Some(issuer), None))
        .unwrap();
    builder.append_extension(aki).unwrap();
    match spec.basic {
        Basic::Absent => {}
        Basic::Ca => builder
            .append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap(),
        Basic::NotCa => builder
            .append_extension(BasicConstraints::new().critical().build().unwrap())
            .unwrap(),
    }
    let usage = match spec.usage {
        Usage::Absent => None,
        Usage::Ca => Some(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_cert_sign()
                .crl_sign()
                .build(),
        ),
        Usage::CaWithoutCertSign => Some(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .crl_sign()
                .build(),
        ),
        Usage::Leaf => Some(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_encipherment()
                .build(),
        ),
    };
    if let Some(usage) = usage {
        builder.append_extension(usage.unwrap()).unwrap();
    }
    if spec.client_auth {
        builder
            .append_extension(ExtendedKeyUsage::new().client_auth().build().unwrap())
            .unwrap();
    }
    builder.sign(issuer_key, MessageDigest::null()).unwrap();
    builder.build()
}
