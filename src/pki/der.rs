//! The little DER that rcgen and x509-parser do not give us: splitting a signed structure
//! into its elements, re-assembling it, and reading an INTEGER's content octets.
//!
//! Only definite, minimal lengths and low tag numbers (one identifier octet) are read;
//! every structure petrel handles here (certificates, CRLs, their TBS parts, INTEGERs)
//! uses nothing else.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]

/// Universal tag of an INTEGER.
pub(crate) const TAG_INTEGER: u8 = 0x02;
/// Universal tag of a BIT STRING.
pub(crate) const TAG_BIT_STRING: u8 = 0x03;
/// Universal tag of a (constructed) SEQUENCE.
pub(crate) const TAG_SEQUENCE: u8 = 0x30;

/// Longest length field read: 4 octets (lengths up to 4 GiB; every input is capped far
/// below that by its own limit).
const MAX_LENGTH_OCTETS: usize = 4;

/// Malformed DER (truncated, indefinite or non-minimal length, high tag number, trailing
/// octets, or an unexpected tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed DER")]
pub(crate) struct Malformed;

/// One element: its identifier octet, its content octets and its whole encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tlv<'a> {
    pub(crate) tag: u8,
    pub(crate) content: &'a [u8],
    pub(crate) raw: &'a [u8],
}

/// Reads one element from the front of `input`, returning it and the rest.
pub(crate) fn read(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), Malformed> {
    let (&tag, rest) = input.split_first().ok_or(Malformed)?;
    if tag & 0x1f == 0x1f {
        return Err(Malformed);
    }
    let (&first, mut rest) = rest.split_first().ok_or(Malformed)?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > MAX_LENGTH_OCTETS {
            return Err(Malformed);
        }
        let (octets, after) = rest.split_at_checked(count).ok_or(Malformed)?;
        rest = after;
        let mut length = 0usize;
        for &octet in octets {
            length = length
                .checked_mul(256)
                .and_then(|l| l.checked_add(usize::from(octet)))
                .ok_or(Malformed)?;
        }
        // Minimal: long form only from 128 on, and no leading zero octet.
        if length < 0x80 || octets.first() == Some(&0) {
            return Err(Malformed);
        }
        length
    };
    let (content, after) = rest.split_at_checked(length).ok_or(Malformed)?;
    let raw_len = input.len() - after.len();
    let raw = input.get(..raw_len).ok_or(Malformed)?;
    Ok((Tlv { tag, content, raw }, after))
}

/// Reads exactly one element with tag `tag` spanning all of `input`.
pub(crate) fn read_one(input: &[u8], tag: u8) -> Result<Tlv<'_>, Malformed> {
    let (tlv, rest) = read(input)?;
    if tlv.tag != tag || !rest.is_empty() {
        return Err(Malformed);
    }
    Ok(tlv)
}

/// Splits `content` into its consecutive elements.
pub(crate) fn elements(mut content: &[u8]) -> Result<Vec<Tlv<'_>>, Malformed> {
    let mut out = Vec::new();
    while !content.is_empty() {
        let (tlv, rest) = read(content)?;
        out.push(tlv);
        content = rest;
    }
    Ok(out)
}

/// Encodes one element with the given identifier octet and content.
pub(crate) fn write(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.extend(u8::try_from(len));
    } else {
        let octets = len.to_be_bytes();
        let skip = octets.iter().take_while(|&&b| b == 0).count();
        let significant = octets.get(skip..).unwrap_or_default();
        out.extend(u8::try_from(significant.len()).map(|n| 0x80 | n));
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

/// The content octets of a DER INTEGER that must be non-negative, without the sign octet
/// (so `02 02 00 80` gives `[0x80]` and `02 01 00` gives `[0]`).
pub(crate) fn unsigned_integer(input: &[u8]) -> Result<&[u8], Malformed> {
    let tlv = read_one(input, TAG_INTEGER)?;
    integer_magnitude(tlv.content)
}

/// The magnitude of a non-negative INTEGER's content octets (sign octet removed),
/// refusing empty, negative and non-minimal encodings.
pub(crate) fn integer_magnitude(content: &[u8]) -> Result<&[u8], Malformed> {
    match content {
        [] => Err(Malformed),
        [first, ..] if first & 0x80 != 0 => Err(Malformed),
        [0, second, ..] if second & 0x80 == 0 => Err(Malformed),
        [0, magnitude @ ..] if !magnitude.is_empty() => Ok(magnitude),
        _ => Ok(content),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_short_and_long_lengths() {
        let (tlv, rest) = read(&[0x04, 0x02, 0xaa, 0xbb, 0x05]).unwrap();
        assert_eq!(tlv.tag, 0x04);
        assert_eq!(tlv.content, &[0xaa, 0xbb]);
        assert_eq!(tlv.raw, &[0x04, 0x02, 0xaa, 0xbb]);
        assert_eq!(rest, &[0x05]);

        let mut long = vec![0x04, 0x81, 0x80];
        long.extend(std::iter::repeat_n(7, 0x80));
        let (tlv, rest) = read(&long).unwrap();
        assert_eq!(tlv.content.len(), 0x80);
        assert!(rest.is_empty());
        assert_eq!(write(0x04, tlv.content), long);
    }

    #[test]
    fn refuses_malformed_lengths() {
        for bad in [
            &[][..],
            &[0x04],
            &[0x04, 0x80],             // indefinite
            &[0x04, 0x81, 0x05, 0, 0], // long form below 128
            &[0x04, 0x82, 0x00, 0x80], // leading zero length octet
            &[0x04, 0x85, 1, 1, 1, 1, 1],
            &[0x04, 0x03, 0x01], // truncated content
            &[0x1f, 0x01, 0x00], // high tag number
        ] {
            assert_eq!(read(bad), Err(Malformed), "{bad:02x?}");
        }
    }

    #[test]
    fn writes_minimal_lengths() {
        assert_eq!(write(0x30, &[]), vec![0x30, 0x00]);
        assert_eq!(write(0x04, &[0; 0x7f])[..2], [0x04, 0x7f]);
        assert_eq!(write(0x04, &[0; 0x100])[..4], [0x04, 0x82, 0x01, 0x00]);
    }

    #[test]
    fn integers() {
        assert_eq!(unsigned_integer(&[0x02, 0x01, 0x00]), Ok(&[0u8][..]));
        assert_eq!(
            unsigned_integer(&[0x02, 0x02, 0x00, 0x80]),
            Ok(&[0x80u8][..])
        );
        assert_eq!(unsigned_integer(&[0x02, 0x01, 0x7f]), Ok(&[0x7fu8][..]));
        assert_eq!(unsigned_integer(&[0x02, 0x01, 0x80]), Err(Malformed));
        assert_eq!(unsigned_integer(&[0x02, 0x02, 0x00, 0x01]), Err(Malformed));
        assert_eq!(unsigned_integer(&[0x02, 0x00]), Err(Malformed));
        assert_eq!(unsigned_integer(&[0x02, 0x01, 0x01, 0x00]), Err(Malformed));
    }
}
