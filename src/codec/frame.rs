//! The 4-octet length prefix of messages and raw chunks (spec §7). Pure: the caller does
//! the reading and writing.

use crate::codec::error::FrameError;

/// The end-of-stream marker / raw stream terminator: a zero length.
pub const END_OF_STREAM: [u8; 4] = [0; 4];

/// Largest body a length prefix can announce (a positive signed 32-bit value).
pub const MAX_FRAMEABLE: usize = 0x7FFF_FFFF;

/// What a length prefix announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameLength {
    /// A value `<= 0`: no body follows, the stream has ended.
    EndOfStream,
    /// A body of this many octets follows.
    Body(usize),
}

/// The prefix for a body of `len` octets (0 gives [`END_OF_STREAM`]).
pub fn frame_header(len: usize) -> Result<[u8; 4], FrameError> {
    if len > MAX_FRAMEABLE {
        return Err(FrameError::Unframeable(len));
    }
    u32::try_from(len)
        .map(u32::to_be_bytes)
        .map_err(|_| FrameError::Unframeable(len))
}

/// Interprets a prefix as a signed big-endian 32-bit length: `<= 0` is the end of the
/// stream, a body longer than `max` is refused.
pub fn decode_frame_header(header: [u8; 4], max: usize) -> Result<FrameLength, FrameError> {
    let value = i32::from_be_bytes(header);
    let Ok(len) = usize::try_from(value) else {
        return Ok(FrameLength::EndOfStream);
    };
    if len == 0 {
        Ok(FrameLength::EndOfStream)
    } else if len > max {
        Err(FrameError::TooLarge { len, max })
    } else {
        Ok(FrameLength::Body(len))
    }
}

/// `body` with its length prefix.
pub fn frame(body: &[u8]) -> Result<Vec<u8>, FrameError> {
    let header = frame_header(body.len())?;
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&header);
    out.extend_from_slice(body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert_eq!(frame_header(0x1A), Ok([0, 0, 0, 0x1A]));
        assert_eq!(frame_header(0), Ok(END_OF_STREAM));
        assert_eq!(frame_header(MAX_FRAMEABLE), Ok([0x7F, 0xFF, 0xFF, 0xFF]));
        assert_eq!(
            frame_header(MAX_FRAMEABLE + 1),
            Err(FrameError::Unframeable(MAX_FRAMEABLE + 1))
        );
        assert_eq!(frame(&[1, 2]), Ok(vec![0, 0, 0, 2, 1, 2]));
    }

    #[test]
    fn decoding() {
        assert_eq!(
            decode_frame_header([0, 0, 0x10, 0], 4096),
            Ok(FrameLength::Body(4096))
        );
        assert_eq!(
            decode_frame_header([0, 0, 0x10, 1], 4096),
            Err(FrameError::TooLarge {
                len: 4097,
                max: 4096
            })
        );
        assert_eq!(
            decode_frame_header([0, 0, 0x10, 1], 4096)
                .unwrap_err()
                .to_string(),
            "frame of 4097 octets exceeds the limit of 4096 octets"
        );
        assert_eq!(
            decode_frame_header(END_OF_STREAM, 1),
            Ok(FrameLength::EndOfStream)
        );
        assert_eq!(
            decode_frame_header([0xFF, 0xFF, 0xFF, 0xFF], 1),
            Ok(FrameLength::EndOfStream)
        );
        assert_eq!(
            decode_frame_header([0x80, 0, 0, 0], usize::MAX),
            Ok(FrameLength::EndOfStream)
        );
    }
}
