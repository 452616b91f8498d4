//! `petrel inspect`: recognise and decode anything petrel or albatross reads or writes —
//! a certificate (PEM or DER) with its albatross extension decoded, a CSR, a CRL, a
//! `Wire` message (unframed, or one or more framed with the 4-octet length), a bare
//! albatross extension value, or a state file (`[0]`–`[6]`) — and show it as JSON (the
//! keys of `spec/wire.md`, from the codec's `Serialize`) or as indented text.
//!
//! Input is bounded by [`MAX_INSPECT_SIZE`]; every parser it calls is total, so broken
//! input gives an [`InspectError`], never a panic.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]

use std::io::Read;
use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::codec::{
    self, DecodeError, FrameLength, MAX_FRAMEABLE, decode_frame_header, decode_state, decode_wire,
};
use crate::pki::describe::{describe_certificate, describe_crl, describe_csr};
use crate::pki::facts::AlbatrossExtension;
use crate::pki::{CertificateFacts, CrlError, FactsError, ParsedCrl, ParsedCsr, PkiError};

/// Largest input inspected. A state file carries every unikernel's (compressed) image,
/// so this is generous; certificates and CSRs are at most 16 MiB of DER (32 MiB as PEM).
pub const MAX_INSPECT_SIZE: u64 = 256 * 1024 * 1024;

/// Albatross extension values up to this many octets are shown in full as hex; longer
/// ones (a create with an embedded image, up to 16 MiB) as their length and SHA-256.
pub const MAX_HEX_VALUE: usize = 1024;

/// PEM labels of requests.
const CSR_LABELS: [&str; 2] = ["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"];

/// How the result is printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Format {
    /// One JSON document per item, one per line.
    #[default]
    Json,
    /// Indented `key: value` text, items separated by a blank line.
    Text,
}

/// Why the input could not be inspected. Every text is one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    /// Larger than [`MAX_INSPECT_SIZE`].
    #[error("input too large (more than {MAX_INSPECT_SIZE} octets)")]
    TooLarge,
    /// The input could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Nothing to inspect.
    #[error("empty input")]
    Empty,
    /// PEM that does not parse.
    #[error("invalid PEM: {0}")]
    Pem(String),
    /// A PEM block of a kind petrel does not inspect (keys, for instance).
    #[error("unsupported PEM block {0:?}")]
    PemLabel(String),
    /// A certificate that does not parse.
    #[error("certificate: {0}")]
    Certificate(#[from] FactsError),
    /// A CSR that does not parse.
    #[error("CSR: {0}")]
    Csr(#[from] PkiError),
    /// A CRL that does not parse.
    #[error("CRL: {0}")]
    Crl(#[from] CrlError),
    /// A state file that does not decode.
    #[error("state file: {0}")]
    State(DecodeError),
    /// A framed message that does not decode.
    #[error("frame {index}: {reason}")]
    Frame {
        /// Position of the frame, from 1.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// DER that none of the decoders accepts.
    #[error(
        "unrecognised DER: not an albatross extension ({extension}), a wire message ({wire}) or a certificate ({certificate})"
    )]
    UnrecognisedDer {
        /// The extension decoder's error.
        extension: DecodeError,
        /// The wire decoder's error.
        wire: DecodeError,
        /// The certificate parser's error.
        certificate: FactsError,
    },
    /// Neither PEM nor DER nor framed messages.
    #[error("not a certificate, CSR, CRL, albatross extension, wire message or state file")]
    Unrecognised,
    /// The JSON serializer failed (does not happen for petrel's types).
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Reads `path` (`-` for stdin), at most [`MAX_INSPECT_SIZE`] octets.
pub fn read_input(path: &Path) -> Result<Vec<u8>, InspectError> {
    let limit = MAX_INSPECT_SIZE.saturating_add(1);
    let mut input = Vec::new();
    if path == Path::new("-") {
        std::io::stdin().take(limit).read_to_end(&mut input)?;
    } else {
        std::fs::File::open(path)?
            .take(limit)
            .read_to_end(&mut input)?;
    }
    if u64::try_from(input.len()).unwrap_or(u64::MAX) > MAX_INSPECT_SIZE {
        return Err(InspectError::TooLarge);
    }
    Ok(input)
}

/// Recognises and decodes `input`; one JSON object (with a `kind`) per item found.
pub fn inspect(input: &[u8]) -> Result<Vec<Value>, InspectError> {
    let start = input
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .ok_or(InspectError::Empty)?;
    let text = input.get(start..).unwrap_or_default();
    if text.starts_with(b"-----BEGIN ") {
        return inspect_pem(input);
    }
    match input.first() {
        Some(0x30) => inspect_der(input).map(|item| vec![item]),
        Some(0xA0..=0xA7) => {
            let state = decode_state(input).map_err(InspectError::State)?;
            Ok(vec![item("state", &state)?])
        }
        Some(0x00..=0x7F) => inspect_frames(input),
        _ => Err(InspectError::Unrecognised),
    }
}

/// Renders items in `format`, ending with a newline.
pub fn render(items: &[Value], format: Format) -> String {
    match format {
        Format::Json => items.iter().map(|v| format!("{v}\n")).collect(),
        Format::Text => {
            let blocks: Vec<String> = items
                .iter()
                .map(|v| {
                    let mut out = String::new();
                    text(v, 0, &mut out);
                    out
                })
                .collect();
            blocks.join("\n")
        }
    }
}

/// Every block of a PEM file: certificates, CSRs and CRLs.
fn inspect_pem(input: &[u8]) -> Result<Vec<Value>, InspectError> {
    let blocks = pem::parse_many(input).map_err(|e| InspectError::Pem(e.to_string()))?;
    if blocks.is_empty() {
        return Err(InspectError::Pem("no PEM block".to_owned()));
    }
    blocks
        .iter()
        .map(|block| match block.tag() {
            "CERTIFICATE" => certificate(&CertificateFacts::from_der(block.contents())?),
            tag if CSR_LABELS.contains(&tag) => csr(&ParsedCsr::parse(block.contents())?),
            "X509 CRL" => crl(&ParsedCrl::parse(block.contents())?),
            other => Err(InspectError::PemLabel(other.to_owned())),
        })
        .collect()
}

/// One DER value starting with a SEQUENCE.
fn inspect_der(input: &[u8]) -> Result<Value, InspectError> {
    let extension = match codec::decode_extension(input) {
        Ok(ext) => return extension_item(&ext),
        Err(e) => e,
    };
    let wire = match decode_wire(input) {
        Ok(wire) => return item("wire", &wire),
        Err(e) => e,
    };
    let certificate_error = match CertificateFacts::from_der(input) {
        Ok(facts) => return certificate(&facts),
        Err(e) => e,
    };
    if let Ok(parsed) = ParsedCsr::parse(input) {
        return csr(&parsed);
    }
    if let Ok(parsed) = ParsedCrl::parse(input) {
        return crl(&parsed);
    }
    Err(InspectError::UnrecognisedDer {
        extension,
        wire,
        certificate: certificate_error,
    })
}

/// Framed `Wire` messages; a zero (or negative) length is the end-of-stream marker.
fn inspect_frames(input: &[u8]) -> Result<Vec<Value>, InspectError> {
    let mut items = Vec::new();
    let mut rest = input;
    let mut index = 0usize;
    while !rest.is_empty() {
        index += 1;
        let frame_error = |reason: String| InspectError::Frame { index, reason };
        let (header, body) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| frame_error("truncated length prefix".to_owned()))?;
        match decode_frame_header(*header, MAX_FRAMEABLE) {
            Ok(FrameLength::EndOfStream) => {
                items.push(kind_only("end-of-stream"));
                rest = body;
            }
            Ok(FrameLength::Body(len)) => {
                let Some((message, after)) = body.split_at_checked(len) else {
                    if index == 1 {
                        // Not framed data at all (text, for instance).
                        return Err(InspectError::Unrecognised);
                    }
                    return Err(frame_error(format!(
                        "length {len} exceeds the {} remaining octets",
                        body.len()
                    )));
                };
                let wire = decode_wire(message).map_err(|e| frame_error(e.to_string()))?;
                items.push(item("wire", &wire)?);
                rest = after;
            }
            Err(e) => return Err(frame_error(e.to_string())),
        }
    }
    Ok(items)
}

/// `value` serialized, with `"kind": kind` added.
fn item<T: Serialize>(kind: &str, value: &T) -> Result<Value, InspectError> {
    let mut value = serde_json::to_value(value)?;
    if let Some(object) = value.as_object_mut() {
        object.insert("kind".to_owned(), Value::String(kind.to_owned()));
    }
    Ok(value)
}

fn kind_only(kind: &str) -> Value {
    let mut object = Map::new();
    object.insert("kind".to_owned(), Value::String(kind.to_owned()));
    Value::Object(object)
}

fn extension_item(ext: &codec::Extension) -> Result<Value, InspectError> {
    let mut value = item("extension", ext)?;
    if let Some(object) = value.as_object_mut() {
        object.insert("summary".to_owned(), Value::String(ext.command.to_string()));
    }
    Ok(value)
}

/// An albatross extension as found in a certificate or CSR: its critical flag and hex
/// value (or length and digest, see [`MAX_HEX_VALUE`]), then either the decoded
/// `version`, `command` and `summary`, or the `error`.
fn albatross(ext: &AlbatrossExtension) -> Value {
    let mut object = Map::new();
    object.insert("critical".to_owned(), Value::Bool(ext.critical));
    if ext.value.len() <= MAX_HEX_VALUE {
        object.insert(
            "value_hex".to_owned(),
            Value::String(hex::encode(&ext.value)),
        );
    } else {
        object.insert("value_length".to_owned(), Value::from(ext.value.len()));
        let digest = Sha256::digest(&ext.value);
        object.insert(
            "value_sha256".to_owned(),
            Value::String(hex::encode(digest)),
        );
    }
    match codec::decode_extension(&ext.value) {
        Ok(decoded) => {
            object.insert("version".to_owned(), Value::from(codec::VERSION));
            let command = serde_json::to_value(&decoded.command).unwrap_or(Value::Null);
            object.insert("command".to_owned(), command);
            object.insert(
                "summary".to_owned(),
                Value::String(decoded.command.to_string()),
            );
        }
        Err(e) => {
            object.insert("error".to_owned(), Value::String(e.to_string()));
        }
    }
    Value::Object(object)
}

fn certificate(facts: &CertificateFacts) -> Result<Value, InspectError> {
    let mut value = serde_json::to_value(describe_certificate(facts))?;
    if let Some(object) = value.as_object_mut() {
        let extensions = facts.albatross.iter().map(albatross).collect();
        object.insert("albatross".to_owned(), Value::Array(extensions));
    }
    Ok(value)
}

fn csr(parsed: &ParsedCsr) -> Result<Value, InspectError> {
    let mut value = serde_json::to_value(describe_csr(parsed))?;
    if let Some(object) = value.as_object_mut() {
        let extension = parsed.albatross().map_or(Value::Null, albatross);
        object.insert("albatross".to_owned(), extension);
    }
    Ok(value)
}

fn crl(parsed: &ParsedCrl) -> Result<Value, InspectError> {
    Ok(serde_json::to_value(describe_crl(parsed))?)
}

/// Indented text: `key: value` for scalars, nested values below their key, list
/// elements after `- `; an object's `kind` comes first.
fn text(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(object) => {
            let kind = object.get("kind").into_iter().map(|v| ("kind", v));
            let rest = object
                .iter()
                .filter(|(k, _)| k.as_str() != "kind")
                .map(|(k, v)| (k.as_str(), v));
            for (key, v) in kind.chain(rest) {
                match scalar(v) {
                    Some(s) => out.push_str(&format!("{pad}{key}: {s}\n")),
                    None => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        text(v, indent + 2, out);
                    }
                }
            }
        }
        Value::Array(items) => {
            for v in items {
                match scalar(v) {
                    Some(s) => out.push_str(&format!("{pad}- {s}\n")),
                    None => {
                        out.push_str(&format!("{pad}-\n"));
                        text(v, indent + 2, out);
                    }
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other).unwrap_or_default())),
    }
}

/// The one-line form of scalars and empty containers; `None` for the rest.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::Null => Some("none".to_owned()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        Value::Array(a) if a.is_empty() => Some("[]".to_owned()),
        Value::Object(o) if o.is_empty() => Some("{}".to_owned()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    #[test]
    fn bare_extension() {
        let items = inspect(&hex("30 0C 02 01 05 A0 07 A2 05 A1 03 02 01 14")).unwrap();
        assert_eq!(
            render(&items, Format::Json),
            "{\"command\":{\"console\":{\"subscribe\":{\"count\":20}}},\"kind\":\"extension\",\"summary\":\"console subscribe\",\"version\":5}\n"
        );
        assert_eq!(
            render(&items, Format::Text),
            "kind: extension\ncommand:\n  console:\n    subscribe:\n      count: 20\nsummary: console subscribe\nversion: 5\n"
        );
    }

    #[test]
    fn framed_and_unframed_wire() {
        let wire =
            hex("30 18 30 10 02 01 05 04 08 00 00 00 00 00 00 00 00 0C 01 3A A1 04 A0 02 05 00");
        let one = inspect(&wire).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(
            one[0],
            serde_json::json!({
                "kind": "wire",
                "header": {"version": 5, "sequence": 0, "name": ":"},
                "payload": {"success": "empty"}
            })
        );
        let mut framed = Vec::new();
        for _ in 0..2 {
            framed.extend(codec::frame(&wire).unwrap());
        }
        framed.extend([0, 0, 0, 0]);
        let items = inspect(&framed).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[1], one[0]);
        assert_eq!(items[2], serde_json::json!({"kind": "end-of-stream"}));

        framed.extend([0, 0, 0, 9, 0x30]);
        assert_eq!(
            inspect(&framed).unwrap_err().to_string(),
            "frame 4: length 9 exceeds the 1 remaining octets"
        );
    }

    #[test]
    fn garbage() {
        let cases: [(&[u8], &str); 6] = [
            (b"", "empty input"),
            (b"  \n", "empty input"),
            (
                b"hello world",
                "not a certificate, CSR, CRL, albatross extension, wire message or state file",
            ),
            (
                &[0xFF, 1, 2],
                "not a certificate, CSR, CRL, albatross extension, wire message or state file",
            ),
            (&[0xA7, 0x02, 0x05, 0x00], "state file: not yet implemented"),
            (
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "unsupported PEM block \"PRIVATE KEY\"",
            ),
        ];
        for (input, expected) in cases {
            let error = inspect(input).unwrap_err().to_string();
            assert!(
                error.starts_with(expected),
                "{input:?}: {error:?} does not start with {expected:?}"
            );
            assert!(!error.contains('\n'));
        }
        let error = inspect(&[0x30, 0x03, 0x02, 0x01, 0x05]).unwrap_err();
        assert!(
            matches!(error, InspectError::UnrecognisedDer { .. }),
            "{error}"
        );
    }

    #[test]
    fn long_extension_values_are_summarised() {
        let short = AlbatrossExtension {
            critical: false,
            value: hex("30 0C 02 01 05 A0 07 A2 05 A1 03 02 01 14"),
        };
        assert_eq!(
            albatross(&short)["value_hex"],
            "300c020105a007a205a103020114"
        );
        let long = AlbatrossExtension {
            critical: true,
            value: vec![0; MAX_HEX_VALUE + 1],
        };
        let value = albatross(&long);
        assert_eq!(value["value_length"], MAX_HEX_VALUE + 1);
        assert_eq!(
            value["value_sha256"],
            hex::encode(Sha256::digest(vec![0; MAX_HEX_VALUE + 1]))
        );
        assert_eq!(value.get("value_hex"), None);
        assert_eq!(value["critical"], true);
        assert!(!value["error"].as_str().unwrap().is_empty());
    }

    #[test]
    fn text_rendering_of_lists_and_empties() {
        let value = serde_json::json!({"a": [1, {"b": []}], "c": null, "kind": "x"});
        assert_eq!(
            render(&[value.clone(), value], Format::Text),
            "kind: x\na:\n  - 1\n  -\n    b: []\nc: none\n\nkind: x\na:\n  - 1\n  -\n    b: []\nc: none\n"
        );
    }
}
