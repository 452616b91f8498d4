//! `serde` helpers for `petrel inspect`: octets as lower-case hex, large images as a
//! length and a SHA-256 so that the JSON stays small.

use serde::Serializer;
use serde::ser::SerializeStruct;
use sha2::{Digest, Sha256};

/// Octet strings up to this length are printed in full (as hex); longer images and block
/// contents are summarised as `{"length": N, "sha256": "…"}`. 64 octets covers digests
/// and the dummy images of tests while keeping a real image out of the output.
pub const MAX_INLINE_OCTETS: usize = 64;

/// Serializes octets as a lower-case hex string.
pub(crate) fn hex<T: AsRef<[u8]>, S: Serializer>(
    bytes: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&hex::encode(bytes.as_ref()))
}

/// Serializes an image (or other bulk content): hex up to [`MAX_INLINE_OCTETS`], else
/// its length and SHA-256.
pub(crate) fn image<T: AsRef<[u8]>, S: Serializer>(
    bytes: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let bytes = bytes.as_ref();
    if bytes.len() <= MAX_INLINE_OCTETS {
        return serializer.serialize_str(&hex::encode(bytes));
    }
    let mut s = serializer.serialize_struct("Image", 2)?;
    s.serialize_field("length", &bytes.len())?;
    s.serialize_field("sha256", &hex::encode(Sha256::digest(bytes)))?;
    s.end()
}

/// [`image`] for an optional value (`null` when absent).
pub(crate) fn image_opt<S: Serializer>(
    bytes: &Option<Vec<u8>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match bytes {
        Some(b) => image(b, serializer),
        None => serializer.serialize_none(),
    }
}
