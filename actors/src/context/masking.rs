//! Masking secure values in output: every form a value takes in a line of
//! output (each of its lines, the shell-quoted forms `set -x` prints), and
//! values that the long-line cut of `output::LineSplitter` split across two
//! lines.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::model::Operation;
use crate::output::may_be_cut;

use super::env_name;

/// The text secure option values are replaced with.
pub const MASK: &str = "[SECURE]";

/// Ends of `RD_OPTION_*` names whose options are secure whether or not the
/// control plane says so, as on Buildkite.
pub const SECURE_NAME_ENDINGS: [&str; 4] = ["_TOKEN", "_KEY", "_PASSWORD", "_SECRET"];

/// Whether option `name` of `op` is secure: the control plane names it so,
/// or its `RD_OPTION_*` name ends in `_TOKEN`, `_KEY`, `_PASSWORD` or
/// `_SECRET`.
pub fn is_secure_option(op: &Operation, name: &str) -> bool {
    let env = env_name(name);
    op.secure_options.iter().any(|s| s == name)
        || SECURE_NAME_ENDINGS.iter().any(|end| env.ends_with(end))
}

/// Replaces secure values in output before it is reported or written.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// The strings to mask: every form of every secure value (see
    /// `forms`), longest first.
    secrets: Vec<String>,
}

impl Masker {
    /// A masker for `values`, each masked in every form it takes in output.
    pub fn new(values: Vec<String>) -> Self {
        let mut secrets: Vec<String> = values.iter().flat_map(|v| forms(v)).collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Masker { secrets }
    }

    /// A masker for an operation's secure options: those the control plane
    /// names, and those whose `RD_OPTION_*` name ends in `_TOKEN`, `_KEY`,
    /// `_PASSWORD` or `_SECRET`.
    pub fn for_operation(op: &Operation) -> Self {
        let values = op
            .options
            .iter()
            .filter(|(name, _)| is_secure_option(op, name))
            .map(|(_, v)| v.clone())
            .collect();
        Self::new(values)
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Length in bytes of the longest string masked.
    pub fn longest(&self) -> usize {
        self.secrets.first().map_or(0, String::len)
    }

    /// `text` with each run of secret text replaced by [`MASK`].
    pub fn mask(&self, text: String) -> String {
        let covered = self.covered(&text);
        if covered.is_empty() {
            return text;
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (start, end) in covered {
            out.push_str(&text[at..start]);
            out.push_str(MASK);
            at = end;
        }
        out.push_str(&text[at..]);
        out
    }

    /// The byte ranges of `text` that hold a secret, overlapping ones
    /// merged, in order. Every occurrence counts, overlapping ones too.
    fn covered(&self, text: &str) -> Vec<(usize, usize)> {
        let mut ranges = Vec::new();
        for s in &self.secrets {
            let mut from = 0;
            while let Some(i) = text[from..].find(s.as_str()) {
                let start = from + i;
                ranges.push((start, start + s.len()));
                from = start + text[start..].chars().next().map_or(1, char::len_utf8);
            }
        }
        ranges.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                Some(last) if start < last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
    }
}

/// The strings to mask for one secure value: each non-empty line of it
/// (output arrives line by line, a trailing `\r` dropped), of it with each
/// `'` written `'\''` (how `shell_quote` and bash's `set -x` print it),
/// and of bash's `$'...'` form (how `set -x` prints a value with control
/// characters but no blanks), in a UTF-8 and in the C locale.
fn forms(value: &str) -> Vec<String> {
    let whole = [
        value.to_owned(),
        value.replace('\'', r"'\''"),
        ansi_c(value, true),
        ansi_c(value, false),
    ];
    whole
        .iter()
        .flat_map(|w| w.split('\n'))
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The inside of bash's `$'...'` quoting of `s` (its `ansic_quote`):
/// control characters escaped, printable non-ASCII characters kept in a
/// UTF-8 locale (`utf8`) or written as octal bytes in the C locale.
fn ansi_c(s: &str, utf8: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\u{1b}' => out.push_str(r"\E"),
            '\u{7}' => out.push_str(r"\a"),
            '\u{b}' => out.push_str(r"\v"),
            '\u{8}' => out.push_str(r"\b"),
            '\u{c}' => out.push_str(r"\f"),
            '\n' => out.push_str(r"\n"),
            '\r' => out.push_str(r"\r"),
            '\t' => out.push_str(r"\t"),
            '\\' => out.push_str(r"\\"),
            '\'' => out.push_str(r"\'"),
            c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
            c if !c.is_ascii() && utf8 && !c.is_control() => out.push(c),
            c => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:03o}"));
                }
            }
        }
    }
    out
}

/// Masks one stream of a node step's output lines, also where a secret
/// straddles a cut of `output::LineSplitter`: a line that may be the first
/// piece of a cut line is held back until enough of what follows it has
/// arrived to see every secret that starts in it (or the stream ends).
///
/// The masker holds lines back rather than the splitter holding bytes:
/// executors split lines without knowing the secrets, and a held piece
/// keeps the lines' boundaries as they were. Whether a line was cut cannot
/// be told from the line, so every line as long as a cut piece is held
/// (`output::may_be_cut`): at most one line of `max_line_bytes` when no
/// secret is longer than a line, at the cost of reporting such a line when
/// the next one arrives. A secret across the cut is masked in the piece it
/// starts in; the rest of it is dropped from the next piece.
#[derive(Debug)]
pub struct MaskedLines {
    masker: Arc<Masker>,
    max_line_bytes: usize,
    held: VecDeque<String>,
    /// Bytes at the start of `held[0]` that a [`MASK`] already reported
    /// (at the end of the line before) stands for.
    covered: usize,
}

impl MaskedLines {
    /// Masks lines cut at `max_line_bytes` (as `LineSplitter::new` was
    /// given).
    pub fn new(masker: Arc<Masker>, max_line_bytes: usize) -> Self {
        MaskedLines {
            masker,
            max_line_bytes,
            held: VecDeque::new(),
            covered: 0,
        }
    }

    /// Takes the next line of the stream; calls `emit` for each line ready.
    pub fn line(&mut self, text: String, emit: &mut dyn FnMut(String)) {
        if self.masker.is_empty() {
            emit(text);
            return;
        }
        let cut = may_be_cut(&text, self.max_line_bytes);
        self.held.push_back(text);
        if !cut {
            self.finish(emit);
            return;
        }
        // Every secret that starts in held[0] ends within what follows it.
        let need = self.masker.longest().saturating_sub(1);
        while self.held.len() > 1
            && self.held.iter().skip(1).map(String::len).sum::<usize>() >= need
        {
            self.release(emit);
        }
    }

    /// Whether nothing is held back, nor owed to a mask already reported:
    /// the next line is masked as if it were the stream's first.
    pub fn is_idle(&self) -> bool {
        self.held.is_empty() && self.covered == 0
    }

    /// Reports the lines held back (the stream ended).
    pub fn finish(&mut self, emit: &mut dyn FnMut(String)) {
        while !self.held.is_empty() {
            self.release(emit);
        }
    }

    /// Masks and reports `held[0]`, seeing secrets across its end.
    fn release(&mut self, emit: &mut dyn FnMut(String)) {
        let Some(first_len) = self.held.front().map(String::len) else {
            return;
        };
        let joined: String = self.held.iter().map(String::as_str).collect();
        let mut out = String::with_capacity(first_len);
        let mut at = self.covered.min(first_len);
        let mut covered_to = self.covered;
        for (start, end) in self.masker.covered(&joined) {
            if start >= first_len {
                break;
            }
            if start < covered_to {
                // Part of the mask already reported.
                covered_to = covered_to.max(end);
                at = at.max(covered_to.min(first_len));
                continue;
            }
            out.push_str(&joined[at..start]);
            out.push_str(MASK);
            covered_to = end;
            at = end.min(first_len);
        }
        out.push_str(&joined[at..first_len]);
        let whole_line_was_masked = self.covered > 0 && out.is_empty();
        self.covered = covered_to.saturating_sub(first_len);
        self.held.pop_front();
        if !whole_line_was_masked {
            emit(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::LineSplitter;

    #[test]
    fn masks_every_occurrence_longest_first() {
        let m = Masker::new(vec!["s3cret".into()]);
        assert_eq!(
            m.mask("pw=s3cret and s3cret".into()),
            "pw=[SECURE] and [SECURE]"
        );
        assert_eq!(m.mask("nginx".into()), "nginx");
        let m = Masker::new(vec!["ab".into(), "abcd".into(), String::new()]);
        assert_eq!(m.mask("xabcdx ab".into()), "x[SECURE]x [SECURE]");
        // Overlapping occurrences are one run of secret text.
        let m = Masker::new(vec!["abc".into(), "cde".into()]);
        assert_eq!(m.mask("abcde abcabc".into()), "[SECURE] [SECURE][SECURE]");
        assert!(Masker::new(vec![String::new()]).is_empty());
    }

    #[test]
    fn masks_each_line_of_a_multi_line_secret() {
        let m = Masker::new(vec!["-----BEGIN KEY-----\r\nAAAA\n\nBBBB\n".into()]);
        for line in ["-----BEGIN KEY-----", "AAAA", "x BBBB y"] {
            assert!(!m.mask(line.into()).contains("AAAA"), "{line}");
            assert!(m.mask(line.into()).contains(MASK), "{line}");
        }
        assert_eq!(m.mask("".into()), "");
    }

    #[test]
    fn masks_the_shell_quoted_forms() {
        let m = Masker::new(vec!["it's-secret".into(), "a\u{1}é\u{1b}".into()]);
        // What `shell_quote` makes of it, and bash's `set -x` in both forms.
        let quoted = crate::context::shell_quote("it's-secret");
        assert_eq!(quoted, r"'it'\''s-secret'");
        assert_eq!(m.mask(format!("+ echo {quoted}")), "+ echo '[SECURE]'");
        assert_eq!(m.mask(r"+ : $'a\001é\E'".into()), "+ : $'[SECURE]'");
        assert_eq!(m.mask(r"+ : $'a\001\303\251\E'".into()), "+ : $'[SECURE]'");
        assert_eq!(m.mask(r"+ : $'it\'s-secret'".into()), "+ : $'[SECURE]'");
    }

    /// Feeds `text` through a splitter cutting at `max` and the masking.
    fn through(masker: Masker, max: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut splitter = LineSplitter::new(max);
        let mut lines = Vec::new();
        for c in chunks {
            splitter.push(c, &mut |l| lines.push(l));
        }
        splitter.finish(&mut |l| lines.push(l));
        let mut masked = MaskedLines::new(Arc::new(masker), max);
        let mut out = Vec::new();
        for l in lines {
            masked.line(l, &mut |l| out.push(l));
        }
        masked.finish(&mut |l| out.push(l));
        out
    }

    #[test]
    fn masks_a_secret_across_the_long_line_cut() {
        let secret = "0123456789";
        for offset in 0..40 {
            let text = format!("{}{secret}{}\nnext\n", "x".repeat(offset), "y".repeat(7));
            let out = through(Masker::new(vec![secret.into()]), 16, &[text.as_bytes()]);
            let joined = out.join("");
            assert!(
                !joined.contains("0123") || !joined.contains("789"),
                "{offset}: {out:?}"
            );
            for l in &out {
                assert!(
                    !l.contains("45"),
                    "{offset}: a piece of the secret in {out:?}"
                );
            }
            assert_eq!(
                joined,
                format!("{}{MASK}{}next", "x".repeat(offset), "y".repeat(7)),
                "{offset}: {out:?}"
            );
        }
    }

    #[test]
    fn masks_a_secret_longer_than_a_line_piece() {
        let secret = "S".repeat(50);
        let text = format!("ab{secret}cd\n{secret}");
        let out = through(Masker::new(vec![secret.clone()]), 16, &[text.as_bytes()]);
        assert_eq!(out.join("|"), format!("ab{MASK}|cd|{MASK}"));
    }

    #[test]
    fn lines_keep_their_boundaries_and_short_lines_pass_at_once() {
        let masker = Arc::new(Masker::new(vec!["pw".into()]));
        let mut masked = MaskedLines::new(masker, 16);
        let mut out = Vec::new();
        masked.line("a pw line".into(), &mut |l| out.push(l));
        assert_eq!(out, ["a [SECURE] line"]);
        // A line as long as a cut piece waits for the next one.
        masked.line("0123456789abcdep".into(), &mut |l| out.push(l));
        assert_eq!(out.len(), 1);
        masked.line("w".into(), &mut |l| out.push(l));
        assert_eq!(out, ["a [SECURE] line", "0123456789abcde[SECURE]"]);
        masked.line("".into(), &mut |l| out.push(l));
        masked.finish(&mut |l| out.push(l));
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(out[2], "");
        // Nothing to mask: nothing is held.
        let mut plain = MaskedLines::new(Arc::new(Masker::default()), 16);
        let mut out = Vec::new();
        plain.line("0123456789abcdef".into(), &mut |l| out.push(l));
        assert_eq!(out.len(), 1);
    }
}
