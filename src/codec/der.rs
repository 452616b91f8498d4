//! A DER reader and writer with albatross's rules (spec §10).
//!
//! The reader is strict where albatross is strict — definite, minimal lengths; primitive
//! strings; minimal, non-empty INTEGERs in the 63-bit range; empty NULLs; exact tags; no
//! extra elements — and lenient where albatross is lenient: any non-zero BOOLEAN octet is
//! TRUE, `SET OF` order is not checked, UTF8String content is not validated (it is
//! converted lossily). Every constructed value increases a depth counter capped by
//! [`MAX_DEPTH`], every `SEQUENCE OF` / `SET OF` is capped by [`MAX_ELEMENTS`].
//!
//! The writer always produces canonical DER: minimal lengths and INTEGERs, `FF`/`00`
//! BOOLEANs, `SET OF` elements sorted by their encodings.

use crate::codec::error::{DecodeError, Expected};
use crate::codec::time::Timestamp;
use crate::codec::types::MacAddr;
use crate::name::Name;

/// Deepest nesting of constructed values accepted. The deepest path in the grammar
/// (wire → success `[13]` → list → entry → info → `[1]` → SET OF → NetInfo → field) is
/// eleven levels, so 16 leaves room without letting input drive recursion.
pub const MAX_DEPTH: usize = 16;

/// Most elements accepted in one `SEQUENCE OF` or `SET OF`. Far above anything real
/// (albatross hosts run hundreds of unikernels; a CPU set has at most a few hundred ids),
/// while bounding the work a hostile list can cause per decode.
pub const MAX_ELEMENTS: usize = 1 << 16;

/// Result of the codec's decoders.
pub(crate) type Result<T> = std::result::Result<T, DecodeError>;

/// Universal tag: BOOLEAN.
pub(crate) const BOOLEAN: u8 = 0x01;
/// Universal tag: INTEGER.
pub(crate) const INTEGER: u8 = 0x02;
/// Universal tag: OCTET STRING.
pub(crate) const OCTET_STRING: u8 = 0x04;
/// Universal tag: NULL.
pub(crate) const NULL: u8 = 0x05;
/// Universal tag: UTF8String.
pub(crate) const UTF8_STRING: u8 = 0x0C;
/// Universal tag: GeneralizedTime.
pub(crate) const GENERALIZED_TIME: u8 = 0x18;
/// Universal tag: SEQUENCE (constructed).
pub(crate) const SEQUENCE: u8 = 0x30;
/// Universal tag: SET (constructed).
pub(crate) const SET: u8 = 0x31;

/// The constructed bit of an identifier octet.
const CONSTRUCTED: u8 = 0x20;
/// Low five bits of an identifier octet: the tag number, 31 = multi-octet form.
const TAG_NUMBER: u8 = 0x1F;
/// Smallest value albatross's 63-bit `int` holds.
const INT_MIN: i64 = -(1 << 62);
/// Largest value albatross's 63-bit `int` holds.
const INT_MAX: i64 = (1 << 62) - 1;

/// Identifier octet of the context-specific constructed tag `[n]` (EXPLICIT tagging).
pub(crate) const fn context(n: u8) -> u8 {
    0xA0 | n
}

/// Decodes all of `data` with `f`; anything left over is "trailing bytes".
pub(crate) fn decode_all<'a, T>(
    data: &'a [u8],
    f: impl FnOnce(&mut Reader<'a>) -> Result<T>,
) -> Result<T> {
    let mut reader = Reader::new(data);
    let value = f(&mut reader)?;
    if reader.is_empty() {
        Ok(value)
    } else {
        Err(DecodeError::TrailingBytes)
    }
}

/// Encodes one value with `f` into a fresh buffer.
pub(crate) fn encode_with(f: impl FnOnce(&mut Writer)) -> Vec<u8> {
    let mut writer = Writer::new();
    f(&mut writer);
    writer.into_bytes()
}

/// Reads a sequence of TLVs from a slice.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
    depth: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `data` at depth 0.
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self {
            rest: data,
            depth: 0,
        }
    }

    /// True when everything has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next identifier octet, without consuming anything.
    pub(crate) fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// Fails if anything is left (an extra element inside a SEQUENCE or EXPLICIT tag).
    pub(crate) fn finish(&self) -> Result<()> {
        match self.peek() {
            None => Ok(()),
            Some(tag) => Err(DecodeError::ExtraElement(tag)),
        }
    }

    /// Reads one TLV and returns its identifier octet and content.
    pub(crate) fn tlv(&mut self) -> Result<(u8, &'a [u8])> {
        let (&tag, rest) = self.rest.split_first().ok_or(DecodeError::Truncated)?;
        if tag & TAG_NUMBER == TAG_NUMBER {
            return Err(DecodeError::HighTagNumber);
        }
        let (&first, mut rest) = rest.split_first().ok_or(DecodeError::Truncated)?;
        let len = if first < 0x80 {
            usize::from(first)
        } else if first == 0x80 {
            return Err(DecodeError::IndefiniteLength);
        } else {
            let count = usize::from(first & 0x7F);
            if count > 4 {
                return Err(DecodeError::LengthTooLarge);
            }
            let (octets, after) = rest.split_at_checked(count).ok_or(DecodeError::Truncated)?;
            rest = after;
            if octets.first() == Some(&0) {
                return Err(DecodeError::NonMinimalLength);
            }
            let len = octets
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            if len < 0x80 {
                return Err(DecodeError::NonMinimalLength);
            }
            len
        };
        let (content, rest) = rest.split_at_checked(len).ok_or(DecodeError::Truncated)?;
        self.rest = rest;
        Ok((tag, content))
    }

    /// A reader for the content of a constructed value found in this one.
    fn child(&self, content: &'a [u8]) -> Result<Reader<'a>> {
        let depth = self.depth + 1;
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        Ok(Reader {
            rest: content,
            depth,
        })
    }

    /// Checks that the next value has identifier `tag`.
    fn check_tag(&self, tag: u8) -> Result<()> {
        match self.peek() {
            None => Err(DecodeError::Missing(Expected::Tag(tag))),
            Some(found) if found == tag => Ok(()),
            Some(found) if found & TAG_NUMBER == TAG_NUMBER => Err(DecodeError::HighTagNumber),
            Some(found) if tag & CONSTRUCTED == 0 && found == tag | CONSTRUCTED => match tag {
                OCTET_STRING | UTF8_STRING | GENERALIZED_TIME => {
                    Err(DecodeError::ConstructedString)
                }
                _ => Err(DecodeError::UnexpectedTag {
                    expected: Expected::Tag(tag),
                    found,
                }),
            },
            Some(found) => Err(DecodeError::UnexpectedTag {
                expected: Expected::Tag(tag),
                found,
            }),
        }
    }

    /// The content of a primitive value with identifier `tag`.
    pub(crate) fn primitive(&mut self, tag: u8) -> Result<&'a [u8]> {
        self.check_tag(tag)?;
        self.tlv().map(|(_, content)| content)
    }

    /// Decodes the content of a constructed value with identifier `tag` with `f`, which
    /// must consume all of it.
    pub(crate) fn constructed<T>(
        &mut self,
        tag: u8,
        f: impl FnOnce(&mut Reader<'a>) -> Result<T>,
    ) -> Result<T> {
        self.check_tag(tag)?;
        let (_, content) = self.tlv()?;
        let mut child = self.child(content)?;
        let value = f(&mut child)?;
        child.finish()?;
        Ok(value)
    }

    /// A SEQUENCE decoded with `f`.
    pub(crate) fn sequence<T>(
        &mut self,
        f: impl FnOnce(&mut Reader<'a>) -> Result<T>,
    ) -> Result<T> {
        self.constructed(SEQUENCE, f)
    }

    /// `[n] EXPLICIT` around a value decoded with `f`.
    pub(crate) fn explicit<T>(
        &mut self,
        n: u8,
        f: impl FnOnce(&mut Reader<'a>) -> Result<T>,
    ) -> Result<T> {
        self.constructed(context(n), f)
    }

    /// An OPTIONAL `[n] EXPLICIT` value: absent unless the next tag is `[n]`.
    pub(crate) fn optional_explicit<T>(
        &mut self,
        n: u8,
        f: impl FnOnce(&mut Reader<'a>) -> Result<T>,
    ) -> Result<Option<T>> {
        if self.peek() == Some(context(n)) {
            self.explicit(n, f).map(Some)
        } else {
            Ok(None)
        }
    }

    /// An OPTIONAL untagged value: absent unless the next tag is `tag`.
    pub(crate) fn optional<T>(
        &mut self,
        tag: u8,
        f: impl FnOnce(&mut Reader<'a>) -> Result<T>,
    ) -> Result<Option<T>> {
        if self.peek() == Some(tag) {
            f(self).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A CHOICE of EXPLICIT context tags: returns the tag number and a reader for the
    /// alternative's content. The caller rejects unknown numbers with
    /// [`Reader::unknown`] and must call [`Reader::finish`] on the returned reader.
    pub(crate) fn choice(&mut self, choice: &'static str) -> Result<(u8, Reader<'a>)> {
        let found = self
            .peek()
            .ok_or(DecodeError::Missing(Expected::Choice(choice)))?;
        if found & 0xE0 != 0xA0 || found & TAG_NUMBER == TAG_NUMBER {
            return Err(DecodeError::UnknownAlternative { choice, found });
        }
        let (_, content) = self.tlv()?;
        Ok((found & TAG_NUMBER, self.child(content)?))
    }

    /// The error for an unknown alternative `[n]` of `choice`.
    pub(crate) fn unknown(choice: &'static str, n: u8) -> DecodeError {
        DecodeError::UnknownAlternative {
            choice,
            found: context(n),
        }
    }

    /// The elements of a `SEQUENCE OF` (`tag` = [`SEQUENCE`]) or `SET OF` (`tag` = [`SET`]),
    /// each decoded with `f`, in wire order.
    pub(crate) fn list<T>(
        &mut self,
        tag: u8,
        mut f: impl FnMut(&mut Reader<'a>) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.constructed(tag, |r| {
            let mut items = Vec::new();
            while !r.is_empty() {
                if items.len() == MAX_ELEMENTS {
                    return Err(DecodeError::TooManyElements);
                }
                items.push(f(r)?);
            }
            Ok(items)
        })
    }

    /// `Int`: a minimal INTEGER in the 63-bit range.
    pub(crate) fn int(&mut self) -> Result<i64> {
        parse_int(self.primitive(INTEGER)?)
    }

    /// `Int32`: an `Int` truncated to 32 bits (two's complement).
    pub(crate) fn int32(&mut self) -> Result<i32> {
        let [_, _, _, _, a, b, c, d] = self.int()?.to_be_bytes();
        Ok(i32::from_be_bytes([a, b, c, d]))
    }

    /// `Int64`: an OCTET STRING of exactly 8 octets, big-endian (spec Note W1).
    pub(crate) fn int64(&mut self) -> Result<i64> {
        let content = self.octets()?;
        let octets: [u8; 8] = content
            .try_into()
            .map_err(|_| DecodeError::Int64Length(content.len()))?;
        Ok(i64::from_be_bytes(octets))
    }

    /// BOOLEAN: one octet, any non-zero value is TRUE.
    pub(crate) fn boolean(&mut self) -> Result<bool> {
        match self.primitive(BOOLEAN)? {
            [b] => Ok(*b != 0),
            other => Err(DecodeError::BadBoolean(other.len())),
        }
    }

    /// NULL: no content.
    pub(crate) fn null(&mut self) -> Result<()> {
        if self.primitive(NULL)?.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::BadNull)
        }
    }

    /// OCTET STRING content (primitive form only).
    pub(crate) fn octets(&mut self) -> Result<&'a [u8]> {
        self.primitive(OCTET_STRING)
    }

    /// UTF8String content; invalid UTF-8 is replaced (albatross does not validate).
    pub(crate) fn utf8(&mut self) -> Result<String> {
        Ok(String::from_utf8_lossy(self.primitive(UTF8_STRING)?).into_owned())
    }

    /// `NameStr`: a UTF8String parsed as an albatross name.
    pub(crate) fn name(&mut self) -> Result<Name> {
        Ok(Name::parse(&self.utf8()?)?)
    }

    /// `MacAddr`: an OCTET STRING of exactly 6 octets.
    pub(crate) fn mac(&mut self) -> Result<MacAddr> {
        let octets: [u8; 6] = self.octets()?.try_into().map_err(|_| DecodeError::BadMac)?;
        Ok(MacAddr::new(octets))
    }

    /// GeneralizedTime, parsed leniently (spec §10.4).
    pub(crate) fn time(&mut self) -> Result<Timestamp> {
        Timestamp::parse_generalized(self.primitive(GENERALIZED_TIME)?)
    }

    /// A `SEQUENCE OF UTF8String`.
    pub(crate) fn strings(&mut self) -> Result<Vec<String>> {
        self.list(SEQUENCE, Reader::utf8)
    }
}

/// Decodes INTEGER content as albatross's 63-bit `int`.
pub(crate) fn parse_int(content: &[u8]) -> Result<i64> {
    let (&first, rest) = content.split_first().ok_or(DecodeError::EmptyInteger)?;
    if let Some(&second) = rest.first() {
        if (first == 0x00 && second & 0x80 == 0) || (first == 0xFF && second & 0x80 != 0) {
            return Err(DecodeError::NonMinimalInteger);
        }
    }
    if content.len() > 8 {
        return Err(DecodeError::IntegerOutOfRange);
    }
    let init: i64 = if first & 0x80 == 0 { 0 } else { -1 };
    let value = content
        .iter()
        .fold(init, |acc, &b| (acc << 8) | i64::from(b));
    if (INT_MIN..=INT_MAX).contains(&value) {
        Ok(value)
    } else {
        Err(DecodeError::IntegerOutOfRange)
    }
}

/// Builds DER into a growing buffer.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The encoded octets.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// A primitive TLV.
    pub(crate) fn primitive(&mut self, tag: u8, content: &[u8]) {
        self.buf.push(tag);
        push_length(&mut self.buf, content.len());
        self.buf.extend_from_slice(content);
    }

    /// A constructed TLV whose content `f` writes.
    pub(crate) fn constructed(&mut self, tag: u8, f: impl FnOnce(&mut Writer)) {
        let start = self.buf.len();
        f(self);
        let len = self.buf.len() - start;
        let mut header = Vec::with_capacity(6);
        header.push(tag);
        push_length(&mut header, len);
        self.buf.splice(start..start, header);
    }

    /// A SEQUENCE whose content `f` writes.
    pub(crate) fn sequence(&mut self, f: impl FnOnce(&mut Writer)) {
        self.constructed(SEQUENCE, f);
    }

    /// `[n] EXPLICIT` around what `f` writes.
    pub(crate) fn explicit(&mut self, n: u8, f: impl FnOnce(&mut Writer)) {
        self.constructed(context(n), f);
    }

    /// A `SEQUENCE OF`, elements in the given order.
    pub(crate) fn sequence_of<I: IntoIterator>(
        &mut self,
        items: I,
        mut f: impl FnMut(&mut Writer, I::Item),
    ) {
        self.sequence(|w| {
            for item in items {
                f(w, item);
            }
        });
    }

    /// A `SET OF`: each element encoded on its own, then sorted by encoding (octet-wise,
    /// a prefix first), as DER requires (spec §10.2).
    pub(crate) fn set_of<I: IntoIterator>(
        &mut self,
        items: I,
        mut f: impl FnMut(&mut Writer, I::Item),
    ) {
        let mut encoded: Vec<Vec<u8>> = items
            .into_iter()
            .map(|item| encode_with(|w| f(w, item)))
            .collect();
        encoded.sort_unstable();
        self.constructed(SET, |w| {
            for e in encoded {
                w.buf.extend_from_slice(&e);
            }
        });
    }

    /// `Int`: a minimal two's-complement INTEGER.
    pub(crate) fn int(&mut self, value: i64) {
        let bytes = value.to_be_bytes();
        let mut start = 0;
        while let (Some(&b), Some(&next)) = (bytes.get(start), bytes.get(start + 1)) {
            let redundant = (b == 0x00 && next & 0x80 == 0) || (b == 0xFF && next & 0x80 != 0);
            if !redundant {
                break;
            }
            start += 1;
        }
        self.primitive(INTEGER, bytes.get(start..).unwrap_or(&bytes));
    }

    /// `Int32`: encoded as the (sign-extended) INTEGER.
    pub(crate) fn int32(&mut self, value: i32) {
        self.int(i64::from(value));
    }

    /// `Int64`: an 8-octet OCTET STRING, big-endian.
    pub(crate) fn int64(&mut self, value: i64) {
        self.octets(&value.to_be_bytes());
    }

    /// BOOLEAN as `FF` / `00`.
    pub(crate) fn boolean(&mut self, value: bool) {
        self.primitive(BOOLEAN, &[if value { 0xFF } else { 0x00 }]);
    }

    /// NULL.
    pub(crate) fn null(&mut self) {
        self.primitive(NULL, &[]);
    }

    /// OCTET STRING.
    pub(crate) fn octets(&mut self, value: &[u8]) {
        self.primitive(OCTET_STRING, value);
    }

    /// UTF8String.
    pub(crate) fn utf8(&mut self, value: &str) {
        self.primitive(UTF8_STRING, value.as_bytes());
    }

    /// `NameStr`.
    pub(crate) fn name(&mut self, name: &Name) {
        self.utf8(&name.text());
    }

    /// `MacAddr`.
    pub(crate) fn mac(&mut self, mac: &MacAddr) {
        self.octets(&mac.octets());
    }

    /// GeneralizedTime (spec §10.4 encoder rules).
    pub(crate) fn time(&mut self, time: Timestamp) {
        self.primitive(GENERALIZED_TIME, time.generalized().as_bytes());
    }

    /// `SEQUENCE OF UTF8String`.
    pub(crate) fn strings(&mut self, values: &[String]) {
        self.sequence_of(values, |w, s| w.utf8(s));
    }
}

/// Appends a definite, minimal DER length.
fn push_length(buf: &mut Vec<u8>, len: usize) {
    match u8::try_from(len) {
        Ok(short) if short < 0x80 => buf.push(short),
        _ => {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|&&b| b == 0).count();
            let significant = bytes.get(skip..).unwrap_or(&[]);
            // At most 8 octets, so the count always fits the low seven bits.
            let count = u8::try_from(significant.len()).unwrap_or(0x7F);
            buf.push(0x80 | count);
            buf.extend_from_slice(significant);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int_der(v: i64) -> Vec<u8> {
        encode_with(|w| w.int(v))
    }

    #[test]
    fn integers_are_minimal() {
        assert_eq!(int_der(0), [0x02, 0x01, 0x00]);
        assert_eq!(int_der(127), [0x02, 0x01, 0x7F]);
        assert_eq!(int_der(128), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(int_der(-1), [0x02, 0x01, 0xFF]);
        assert_eq!(int_der(-128), [0x02, 0x01, 0x80]);
        assert_eq!(int_der(-129), [0x02, 0x02, 0xFF, 0x7F]);
        assert_eq!(
            int_der(INT_MAX),
            [0x02, 0x08, 0x3F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
        );
        for v in [0, 1, -1, 127, 128, -128, -129, 256, 65535, INT_MIN, INT_MAX] {
            assert_eq!(decode_all(&int_der(v), Reader::int), Ok(v), "{v}");
        }
    }

    #[test]
    fn integer_errors() {
        let dec = |b: &[u8]| decode_all(b, Reader::int);
        assert_eq!(dec(&[0x02, 0x00]), Err(DecodeError::EmptyInteger));
        assert_eq!(
            dec(&[0x02, 0x02, 0x00, 0x05]),
            Err(DecodeError::NonMinimalInteger)
        );
        assert_eq!(
            dec(&[0x02, 0x02, 0xFF, 0x80]),
            Err(DecodeError::NonMinimalInteger)
        );
        assert_eq!(
            dec(&[0x02, 0x08, 0x40, 0, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::IntegerOutOfRange)
        );
        assert_eq!(
            dec(&[0x02, 0x09, 0x01, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::IntegerOutOfRange)
        );
    }

    #[test]
    fn lengths() {
        let long = vec![0u8; 200];
        let der = encode_with(|w| w.octets(&long));
        assert_eq!(der.get(..3), Some(&[0x04, 0x81, 0xC8][..]));
        assert_eq!(decode_all(&der, Reader::octets).map(<[u8]>::len), Ok(200));
        let big = vec![0u8; 0x1_0000];
        let der = encode_with(|w| w.octets(&big));
        assert_eq!(der.get(..5), Some(&[0x04, 0x83, 0x01, 0x00, 0x00][..]));

        let dec = |b: &[u8]| decode_all(b, Reader::octets).map(<[u8]>::to_vec);
        assert_eq!(
            dec(&[0x04, 0x80, 0x00, 0x00]),
            Err(DecodeError::IndefiniteLength)
        );
        assert_eq!(
            dec(&[0x04, 0x81, 0x01, 0xAA]),
            Err(DecodeError::NonMinimalLength)
        );
        assert_eq!(
            dec(&[0x04, 0x82, 0x00, 0x01, 0xAA]),
            Err(DecodeError::NonMinimalLength)
        );
        assert_eq!(
            dec(&[0x04, 0x85, 1, 0, 0, 0, 0]),
            Err(DecodeError::LengthTooLarge)
        );
        assert_eq!(dec(&[0x04, 0x02, 0xAA]), Err(DecodeError::Truncated));
        assert_eq!(dec(&[0x04]), Err(DecodeError::Truncated));
        assert_eq!(dec(&[0x04, 0x00, 0x00]), Err(DecodeError::TrailingBytes));
        assert_eq!(dec(&[0x24, 0x00]), Err(DecodeError::ConstructedString));
        assert_eq!(dec(&[0x1F, 0x00]), Err(DecodeError::HighTagNumber));
    }

    #[test]
    fn booleans_nulls_and_int64() {
        assert_eq!(decode_all(&[0x01, 0x01, 0x01], Reader::boolean), Ok(true));
        assert_eq!(decode_all(&[0x01, 0x01, 0x00], Reader::boolean), Ok(false));
        assert_eq!(
            decode_all(&[0x01, 0x02, 0xFF, 0xFF], Reader::boolean),
            Err(DecodeError::BadBoolean(2))
        );
        assert_eq!(encode_with(|w| w.boolean(true)), [0x01, 0x01, 0xFF]);
        assert_eq!(
            decode_all(&[0x05, 0x01, 0x00], Reader::null),
            Err(DecodeError::BadNull)
        );
        assert_eq!(
            decode_all(&[0x04, 0x04, 0, 0, 0, 1], Reader::int64),
            Err(DecodeError::Int64Length(4))
        );
        assert_eq!(
            decode_all(
                &[0x04, 0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE],
                Reader::int64
            ),
            Ok(-2)
        );
        assert_eq!(
            decode_all(&[0x02, 0x05, 0x01, 0x80, 0x00, 0x00, 0x01], Reader::int32),
            Ok(i32::MIN + 1)
        );
    }

    #[test]
    fn set_of_sorts_by_encoding() {
        let der = encode_with(|w| w.set_of([256i64, -1, 5], |w, v| w.int(v)));
        assert_eq!(
            der,
            [
                0x31, 0x0A, 0x02, 0x01, 0x05, 0x02, 0x01, 0xFF, 0x02, 0x02, 0x01, 0x00
            ]
        );
    }

    #[test]
    fn depth_is_capped() {
        let mut der = vec![0x05, 0x00];
        for _ in 0..=MAX_DEPTH {
            let mut outer = vec![0x30, u8::try_from(der.len()).unwrap()];
            outer.extend_from_slice(&der);
            der = outer;
        }
        fn nest(r: &mut Reader<'_>) -> Result<()> {
            if r.peek() == Some(SEQUENCE) {
                r.sequence(nest)
            } else {
                r.null()
            }
        }
        assert_eq!(decode_all(&der, nest), Err(DecodeError::TooDeep));
        assert_eq!(decode_all(der.get(2..).unwrap(), nest), Ok(()));
    }
}
