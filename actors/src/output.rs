//! Turning a byte stream from a process into lines of output: split on `\n`,
//! a trailing `\r` dropped, invalid UTF-8 replaced, very long lines split.
//! Shared by every executor so that all nodes report lines the same way;
//! `may_be_cut` tells the masking which lines may continue in the next.

/// Lines longer than this many bytes are split into several lines.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Accumulates bytes and yields complete lines.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
}

impl Default for LineSplitter {
    fn default() -> Self {
        Self::new(MAX_LINE_BYTES)
    }
}

impl LineSplitter {
    /// A splitter that cuts lines at `max` bytes (at least 4, so that one
    /// UTF-8 character always fits).
    pub fn new(max: usize) -> Self {
        LineSplitter {
            buf: Vec::new(),
            max: max.max(4),
        }
    }

    /// Feeds `bytes`, calling `emit` for every complete line.
    pub fn push(&mut self, mut bytes: &[u8], emit: &mut dyn FnMut(String)) {
        while !bytes.is_empty() {
            match bytes.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    self.buf.extend_from_slice(&bytes[..i]);
                    bytes = &bytes[i + 1..];
                    if self.buf.last() == Some(&b'\r') {
                        self.buf.pop();
                    }
                    self.drain_long(emit);
                    emit(decode(&self.buf));
                    self.buf.clear();
                }
                None => {
                    self.buf.extend_from_slice(bytes);
                    bytes = &[];
                    self.drain_long(emit);
                }
            }
        }
    }

    /// Bytes held back: the start of a line not ended yet. The stream's
    /// offset minus this is where a fresh splitter would go on with the
    /// same lines.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Emits what is left as a last line (output that did not end in `\n`).
    pub fn finish(&mut self, emit: &mut dyn FnMut(String)) {
        if !self.buf.is_empty() {
            self.drain_long(emit);
            emit(decode(&self.buf));
            self.buf.clear();
        }
    }

    /// Emits `max`-byte pieces while the buffer is longer than `max`, cutting
    /// on a UTF-8 character boundary when the bytes are valid UTF-8.
    fn drain_long(&mut self, emit: &mut dyn FnMut(String)) {
        while self.buf.len() > self.max {
            let mut cut = self.max;
            while cut > self.max - 4 && (self.buf[cut] & 0b1100_0000) == 0b1000_0000 {
                cut -= 1;
            }
            if (self.buf[cut] & 0b1100_0000) == 0b1000_0000 {
                cut = self.max;
            }
            emit(decode(&self.buf[..cut]));
            self.buf.drain(..cut);
        }
    }
}

/// Whether `line`, from a `LineSplitter::new(max)`, may be a piece of a
/// longer line that continues in the next one. A cut piece holds at least
/// `max - 4` bytes (the cut moves back at most to the start of a 4-byte
/// character) and decoding never shortens it; a whole line that long is
/// taken for a piece too.
pub fn may_be_cut(line: &str, max: usize) -> bool {
    line.len() >= max.max(4) - 4
}

fn decode(bytes: &[u8]) -> String {
    // Valid UTF-8 (nearly every line) is checked by the validator's ASCII
    // fast path; only a line that is not goes through the lossy decoder,
    // which looks at every byte.
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(max: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut |l| out.push(l));
        }
        s.finish(&mut |l| out.push(l));
        out
    }

    #[test]
    fn splits_across_chunks_and_strips_cr() {
        assert_eq!(
            lines(100, &[b"he", b"llo\r\nwor", b"ld\n\nlast"]),
            vec!["hello", "world", "", "last"]
        );
    }

    #[test]
    fn every_cut_piece_is_taken_for_one() {
        // Multi-byte characters at every offset around the cut, and invalid
        // bytes: each line but the last of a cut line may be a cut piece.
        let text = "aé€😀".repeat(40);
        for max in [4, 5, 7, 16, 33] {
            for skip in 0..4 {
                let mut bytes = b"xyz"[..skip].to_vec();
                bytes.extend_from_slice(text.as_bytes());
                bytes.push(0xff);
                bytes.extend_from_slice(text.as_bytes());
                let out = lines(max, &[&bytes]);
                assert!(out.len() > 2, "{max}: {out:?}");
                for piece in &out[..out.len() - 1] {
                    assert!(may_be_cut(piece, max), "{max}, {skip}: {piece:?}");
                }
            }
        }
        assert!(!may_be_cut("short", MAX_LINE_BYTES));
    }

    #[test]
    fn replaces_invalid_utf8() {
        assert_eq!(lines(100, &[b"a\xffb\n"]), vec!["a\u{fffd}b"]);
    }

    #[test]
    fn splits_long_lines_on_char_boundaries() {
        let out = lines(4, &[b"abcdefghij\n"]);
        assert_eq!(out, vec!["abcd", "efgh", "ij"]);
        let s = "ééééé\n"; // 2 bytes each
        let out = lines(5, &[s.as_bytes()]);
        assert_eq!(out, vec!["éé", "éé", "é"]);
    }
}
