//! Splitting a tender's console output into lines, exactly as albatross's console daemon
//! does (`spec/unikernel-and-executor.md` §13). Pure: no I/O, no clock.
//!
//! Rules:
//! - input arrives in reads of at most [`READ_SIZE`] octets (larger inputs are processed
//!   in pieces of that size, so memory stays bounded whatever the caller does);
//! - it is split at `\n`; an incomplete last piece waits for more input;
//! - an incomplete piece of [`READ_SIZE`] octets or more is cut to [`READ_SIZE`] octets
//!   and emitted with [`TRUNCATED_SUFFIX`] appended, and everything up to the next `\n`
//!   is discarded;
//! - empty lines are dropped; `\r` is kept;
//! - invalid UTF-8 is replaced with U+FFFD (lossy decoding).
//!
//! All lines returned by one [`LineSplitter::push`] belong to one read and get the same
//! timestamp from the caller.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]

/// Largest read from the console, and the longest incomplete piece kept (albatross reads
/// 512 octets at a time and cuts unterminated pieces at that size).
pub const READ_SIZE: usize = 512;

/// Appended to a line cut at [`READ_SIZE`] octets (albatross's text).
pub const TRUNCATED_SUFFIX: &str = " [truncated]";

/// Incremental line splitter for one console stream.
#[derive(Debug, Default, Clone)]
pub struct LineSplitter {
    /// The incomplete last piece (always shorter than [`READ_SIZE`] between calls).
    pending: Vec<u8>,
    /// True after a truncation until the next `\n`.
    discarding: bool,
}

impl LineSplitter {
    /// A splitter with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one read and returns the complete lines it produced, oldest first.
    pub fn push(&mut self, data: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for read in data.chunks(READ_SIZE) {
            self.push_read(read, &mut lines);
        }
        lines
    }

    /// Ends the stream: the incomplete last piece, if any (and not being discarded), is
    /// returned as a final line. petrel's choice; albatross drops it.
    pub fn finish(self) -> Option<String> {
        if self.discarding || self.pending.is_empty() {
            None
        } else {
            Some(String::from_utf8_lossy(&self.pending).into_owned())
        }
    }

    /// True if an incomplete piece is waiting for more input.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn push_read(&mut self, read: &[u8], lines: &mut Vec<String>) {
        let mut rest = read;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let (piece, after) = rest.split_at(pos);
            // `after` starts with the newline.
            rest = after.get(1..).unwrap_or_default();
            if self.discarding {
                self.discarding = false;
                continue;
            }
            self.pending.extend_from_slice(piece);
            let line = std::mem::take(&mut self.pending);
            if !line.is_empty() {
                lines.push(String::from_utf8_lossy(&line).into_owned());
            }
        }
        if self.discarding {
            return;
        }
        self.pending.extend_from_slice(rest);
        if self.pending.len() >= READ_SIZE {
            let cut = self.pending.get(..READ_SIZE).unwrap_or_default();
            let mut line = String::from_utf8_lossy(cut).into_owned();
            line.push_str(TRUNCATED_SUFFIX);
            lines.push(line);
            self.pending.clear();
            self.discarding = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(reads: &[&[u8]]) -> Vec<Vec<String>> {
        let mut s = LineSplitter::new();
        reads.iter().map(|r| s.push(r)).collect()
    }

    #[test]
    fn splits_at_newline() {
        assert_eq!(split(&[b"a\nbc\n"]), vec![vec!["a", "bc"]]);
    }

    #[test]
    fn partial_piece_waits_for_more() {
        assert_eq!(
            split(&[b"hel", b"lo\nwor", b"ld\n"]),
            vec![vec![], vec!["hello"], vec!["world"]]
        );
    }

    #[test]
    fn empty_lines_dropped() {
        assert_eq!(split(&[b"\n\na\n\n\nb\n"]), vec![vec!["a", "b"]]);
        assert_eq!(split(&[b"\n"]), vec![Vec::<String>::new()]);
    }

    #[test]
    fn carriage_return_kept() {
        assert_eq!(split(&[b"a\r\n\r\n"]), vec![vec!["a\r", "\r"]]);
    }

    #[test]
    fn invalid_utf8_is_lossy() {
        assert_eq!(split(&[b"a\xffb\n"]), vec![vec!["a\u{fffd}b"]]);
        // A multi-octet character split across reads is reassembled.
        assert_eq!(split(&[b"\xc3", b"\xa9\n"]), vec![vec![], vec!["\u{e9}"]]);
    }

    #[test]
    fn long_piece_without_newline_truncated_rest_discarded() {
        let long = vec![b'x'; READ_SIZE];
        let expected = format!("{}{}", "x".repeat(READ_SIZE), TRUNCATED_SUFFIX);
        assert_eq!(
            split(&[&long, b"yyy", b"zz\nnext\n"]),
            vec![vec![expected], vec![], vec!["next".to_owned()]]
        );
    }

    #[test]
    fn truncation_counts_pending_and_new_data() {
        let first = vec![b'a'; 300];
        let second = vec![b'b'; 300];
        let expected = format!(
            "{}{}{}",
            "a".repeat(300),
            "b".repeat(READ_SIZE - 300),
            TRUNCATED_SUFFIX
        );
        assert_eq!(
            split(&[&first, &second, b"ignored\nok\n"]),
            vec![vec![], vec![expected], vec!["ok".to_owned()]]
        );
    }

    #[test]
    fn piece_just_below_limit_waits() {
        let almost = vec![b'q'; READ_SIZE - 1];
        let mut s = LineSplitter::new();
        assert_eq!(s.push(&almost), Vec::<String>::new());
        assert!(s.has_pending());
        assert_eq!(s.push(b"\n"), vec!["q".repeat(READ_SIZE - 1)]);
        assert!(!s.has_pending());
    }

    #[test]
    fn terminated_line_longer_than_read_size_is_kept_whole() {
        // 100 pending octets plus a read of 500 with the newline at its end: the piece is
        // complete, so albatross emits it whole (only unterminated pieces are cut).
        let mut second = vec![b'b'; 499];
        second.push(b'\n');
        assert_eq!(
            split(&[&[b'a'; 100], &second]),
            vec![
                vec![],
                vec![format!("{}{}", "a".repeat(100), "b".repeat(499))]
            ]
        );
    }

    #[test]
    fn newline_right_after_truncation_ends_discarding() {
        let long = vec![b'x'; READ_SIZE];
        let mut s = LineSplitter::new();
        assert_eq!(s.push(&long).len(), 1);
        assert_eq!(s.push(b"\nafter\n"), vec!["after"]);
    }

    #[test]
    fn large_input_processed_in_read_sized_pieces() {
        let mut data = vec![b'z'; 2000];
        data.extend_from_slice(b"\nend\n");
        let mut s = LineSplitter::new();
        assert_eq!(
            s.push(&data),
            vec![
                format!("{}{}", "z".repeat(READ_SIZE), TRUNCATED_SUFFIX),
                "end".to_owned()
            ]
        );
    }

    #[test]
    fn finish_returns_partial_line() {
        let mut s = LineSplitter::new();
        assert_eq!(s.push(b"a\npartial"), vec!["a"]);
        assert_eq!(s.finish(), Some("partial".to_owned()));
        assert_eq!(LineSplitter::new().finish(), None);
        let mut s = LineSplitter::new();
        s.push(&[b'x'; READ_SIZE + 3]);
        assert_eq!(s.finish(), None);
    }
}
