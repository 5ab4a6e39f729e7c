//! Substituting `${group.key}` values into a shell command according to the
//! quoting state each token stands in, so that every value reaches the
//! command as exactly its bytes: a small POSIX-shell lexer follows the
//! command up to each token, and a token it cannot prove safe is refused
//! before anything runs.
//!
//! Supported places, and what a value `v` becomes there (`q(v)` is `v` in
//! single quotes, each `'` written `'\''`):
//! - unquoted shell code, also inside `$( )`: `q(v)`, a whole word or part
//!   of one;
//! - inside `"..."`: `"` `q(v)` `"` (the double quote closed and reopened);
//! - inside `'...'`: `'` `q(v)` `'` (the single quote closed and reopened).
//!
//! Refused places: backticks, `$(( ))`/`(( ))`/`$[ ]` arithmetic, `${...}`
//! parameter expansions, here-document bodies and delimiters, `$'...'`, a
//! token right after a bare `$`, and anything after a construct that `sh`
//! (dash) and `bash` read differently or this lexer does not follow (see
//! `Lexer::unknown`). Tokens in a `#` comment are left as they are.

use super::context_token_at;

/// What the lexer is inside of. The bottom frame is the command itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// Shell code: the command (`subst: false`) or a `$( )` command
    /// substitution, with the count of unquoted `(` open inside it.
    Code {
        subst: bool,
        parens: u32,
    },
    Double,
    Single,
    /// A `${...}` parameter expansion (one that is not a context token).
    Param,
    /// `$(( ))` or bash's `(( ))`, with the count of `(` open inside it.
    Arith {
        parens: u32,
    },
    Backtick,
}

/// A here-document whose body starts at the next newline of shell code.
struct HereDoc {
    delimiter: Vec<u8>,
    /// `<<-`: leading tabs are stripped from the delimiter line.
    strip_tabs: bool,
    /// Quoted delimiter: the body is not expanded.
    quoted: bool,
    /// Offset of the `<<`.
    at: usize,
}

/// A token that was not substituted: where it stands and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    /// Byte offset of the token's `$` in the command.
    pub offset: usize,
    /// The token's key, e.g. `option.v`.
    pub key: String,
    /// Where it stands, e.g. "inside backticks".
    pub place: String,
}

/// Why lexing stopped early.
enum Stop {
    Refused(Refusal),
    /// From `at` on, the shell's quoting state is not known for sure.
    Unknown {
        at: usize,
        what: String,
    },
}

/// Expands the context tokens of `command`, quoting `value(key)` for the
/// place each token stands in.
/// `word` gives, for a token's key, one shell word that stands for the
/// value: [`single_quoted`] value, or a double-quoted reference to a
/// variable that holds it (`"${RD_OPTION_X}"`), which keeps the value itself
/// out of the command text. Each is put in the token's place as a word of
/// its own, closing and reopening the quotes around it.
pub(super) fn substitute(command: &str, word: &dyn Fn(&str) -> String) -> Result<String, Refusal> {
    let mut lx = Lexer {
        text: command,
        bytes: command.as_bytes(),
        pos: 0,
        copied: 0,
        out: String::with_capacity(command.len()),
        stack: vec![Frame::Code {
            subst: false,
            parens: 0,
        }],
        word_start: true,
        heredocs: Vec::new(),
    };
    match lx.run(word) {
        Ok(()) => {}
        Err(Stop::Refused(r)) => return Err(r),
        Err(Stop::Unknown { at, what }) => {
            let from = at.max(lx.copied);
            if let Some((offset, _, key)) = next_token(command, from) {
                return Err(Refusal {
                    offset,
                    key: key.to_owned(),
                    place: format!(
                        "after {what} (at offset {at}), from where on the shell's quoting cannot be worked out for sure"
                    ),
                });
            }
        }
    }
    lx.out.push_str(&command[lx.copied..]);
    Ok(lx.out)
}

/// `v` in single quotes, each `'` in it written `'\''`: one shell word that
/// stands for exactly `v`, whatever it holds.
pub(super) fn single_quoted(v: &str) -> String {
    format!("'{}'", v.replace('\'', r"'\''"))
}

/// The first context token at or after `from`: (offset, end, key).
fn next_token(text: &str, from: usize) -> Option<(usize, usize, &str)> {
    let mut at = from;
    while let Some(i) = text.get(at..).and_then(|t| t.find("${")) {
        let start = at + i;
        if let Some((key, end)) = context_token_at(text, start) {
            return Some((start, end, key));
        }
        at = start + 2;
    }
    None
}

struct Lexer<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// `text[..copied]` is in `out` (verbatim or substituted).
    copied: usize,
    out: String,
    stack: Vec<Frame>,
    /// In shell code: the next character starts a word (so `#` starts a
    /// comment). Errs towards `true`: a comment the lexer misses could let
    /// a quoted newline end it.
    word_start: bool,
    heredocs: Vec<HereDoc>,
}

impl Lexer<'_> {
    fn run(&mut self, value: &dyn Fn(&str) -> String) -> Result<(), Stop> {
        while self.pos < self.bytes.len() {
            let i = self.pos;
            if let Some((key, end)) = context_token_at(self.text, i) {
                self.token(i, end, key, value)?;
                continue;
            }
            match self.frame() {
                Frame::Code { subst, parens } => self.code(i, subst, parens)?,
                Frame::Double => self.double(i)?,
                Frame::Single => {
                    if self.bytes[i] == b'\'' {
                        self.stack.pop();
                    }
                    self.pos += 1;
                }
                Frame::Param => self.param(i)?,
                Frame::Arith { parens } => self.arith(i, parens)?,
                Frame::Backtick => match self.bytes[i] {
                    b'\\' => self.pos += 2,
                    b'`' => {
                        self.stack.pop();
                        self.pos += 1;
                    }
                    _ => self.pos += 1,
                },
            }
        }
        Ok(())
    }

    fn frame(&self) -> Frame {
        self.stack.last().copied().unwrap_or(Frame::Code {
            subst: false,
            parens: 0,
        })
    }

    fn set_frame(&mut self, f: Frame) {
        if let Some(top) = self.stack.last_mut() {
            *top = f;
        }
    }

    fn byte(&self, i: usize) -> Option<u8> {
        self.bytes.get(i).copied()
    }

    fn unknown(&self, at: usize, what: impl Into<String>) -> Stop {
        Stop::Unknown {
            at,
            what: what.into(),
        }
    }

    fn refuse(&self, offset: usize, key: &str, place: impl Into<String>) -> Stop {
        Stop::Refused(Refusal {
            offset,
            key: key.to_owned(),
            place: place.into(),
        })
    }

    /// Substitutes the token `text[start..end]` for the frame it stands in.
    fn token(
        &mut self,
        start: usize,
        end: usize,
        key: &str,
        value: &dyn Fn(&str) -> String,
    ) -> Result<(), Stop> {
        for f in self.stack.iter().rev() {
            let place = match f {
                Frame::Backtick => "inside backticks (`...`)",
                Frame::Arith { .. } => "inside arithmetic ($(( )) or (( )))",
                Frame::Param => "inside a ${...} parameter expansion",
                _ => continue,
            };
            return Err(self.refuse(start, key, place));
        }
        let quoted = value(key);
        self.out.push_str(&self.text[self.copied..start]);
        match self.frame() {
            Frame::Double => {
                self.out.push('"');
                self.out.push_str(&quoted);
                self.out.push('"');
            }
            Frame::Single => {
                self.out.push('\'');
                self.out.push_str(&quoted);
                self.out.push('\'');
            }
            _ => self.out.push_str(&quoted),
        }
        self.copied = end;
        self.pos = end;
        self.word_start = false;
        Ok(())
    }

    /// One step in shell code at `i`.
    fn code(&mut self, i: usize, subst: bool, parens: u32) -> Result<(), Stop> {
        let c = self.bytes[i];
        let mut word_start = matches!(c, b' ' | b'\t' | b';' | b'&' | b'|' | b'>' | b'<');
        match c {
            b'\\' => {
                // A line continuation leaves the word boundary as it was.
                if self.byte(i + 1) == Some(b'\n') {
                    word_start = self.word_start;
                }
                self.pos += 2;
            }
            b'\'' => {
                self.stack.push(Frame::Single);
                self.pos += 1;
            }
            b'"' => {
                self.stack.push(Frame::Double);
                self.pos += 1;
            }
            b'`' => {
                self.stack.push(Frame::Backtick);
                self.pos += 1;
            }
            b'$' => return self.dollar(i, DollarIn::Code),
            b'#' if self.word_start => {
                // A comment: tokens in it are left as they are.
                self.pos = self.text[i..]
                    .find('\n')
                    .map_or(self.bytes.len(), |n| i + n);
                word_start = true;
            }
            b'\n' => {
                self.pos += 1;
                self.word_start = true;
                if !self.heredocs.is_empty() {
                    self.heredoc_bodies()?;
                }
                return Ok(());
            }
            b'(' => {
                if self.word_start && self.byte(i + 1) == Some(b'(') {
                    // bash's arithmetic command (two subshells to dash).
                    self.stack.push(Frame::Arith { parens: 0 });
                    self.pos += 2;
                    self.word_start = false;
                    return Ok(());
                }
                if subst {
                    self.set_frame(Frame::Code {
                        subst,
                        parens: parens + 1,
                    });
                }
                self.pos += 1;
                word_start = true;
            }
            b')' => {
                self.pos += 1;
                word_start = true;
                if subst && parens == 0 {
                    if !self.heredocs.is_empty() {
                        return Err(self.unknown(i, "a $( ) that ends before its here-document"));
                    }
                    self.stack.pop();
                    word_start = false;
                } else if subst {
                    self.set_frame(Frame::Code {
                        subst,
                        parens: parens - 1,
                    });
                }
            }
            b'<' if self.text[i..].starts_with("<<<") => self.pos += 3,
            b'<' if self.text[i..].starts_with("<<") => {
                self.heredoc_operator(i)?;
                word_start = false;
            }
            _ => {
                if subst && self.word_start && starts_word(&self.text[i..], "case") {
                    // `case` patterns end in an unmatched `)`.
                    return Err(self.unknown(i, "a case statement inside $( )"));
                }
                self.pos += 1;
            }
        }
        self.word_start = word_start;
        Ok(())
    }

    fn double(&mut self, i: usize) -> Result<(), Stop> {
        match self.bytes[i] {
            b'\\' => self.pos += 2,
            b'"' => {
                self.stack.pop();
                self.pos += 1;
            }
            b'`' => {
                self.stack.push(Frame::Backtick);
                self.pos += 1;
            }
            b'$' => self.dollar(i, DollarIn::Double)?,
            _ => self.pos += 1,
        }
        Ok(())
    }

    fn param(&mut self, i: usize) -> Result<(), Stop> {
        match self.bytes[i] {
            b'\\' => self.pos += 2,
            b'}' => {
                self.stack.pop();
                self.pos += 1;
            }
            b'\'' => {
                let in_double = self.stack.contains(&Frame::Double);
                if in_double {
                    // Literal to dash, a quote in some bash expansions.
                    return Err(self.unknown(i, "a ' inside a \"${...}\" parameter expansion"));
                }
                self.stack.push(Frame::Single);
                self.pos += 1;
            }
            b'"' => {
                self.stack.push(Frame::Double);
                self.pos += 1;
            }
            b'`' => {
                self.stack.push(Frame::Backtick);
                self.pos += 1;
            }
            b'$' => self.dollar(i, DollarIn::Expansion)?,
            _ => self.pos += 1,
        }
        Ok(())
    }

    fn arith(&mut self, i: usize, parens: u32) -> Result<(), Stop> {
        match self.bytes[i] {
            b'\\' => self.pos += 2,
            b'(' => {
                self.set_frame(Frame::Arith { parens: parens + 1 });
                self.pos += 1;
            }
            b')' if parens > 0 => {
                self.set_frame(Frame::Arith { parens: parens - 1 });
                self.pos += 1;
            }
            b')' if self.byte(i + 1) == Some(b')') => {
                self.stack.pop();
                self.pos += 2;
            }
            b')' => {
                return Err(self.unknown(
                    i,
                    "a ) that may end either arithmetic or a command substitution",
                ))
            }
            b'"' => {
                self.stack.push(Frame::Double);
                self.pos += 1;
            }
            b'\'' => return Err(self.unknown(i, "a ' inside arithmetic")),
            b'`' => {
                self.stack.push(Frame::Backtick);
                self.pos += 1;
            }
            b'$' => self.dollar(i, DollarIn::Expansion)?,
            _ => self.pos += 1,
        }
        Ok(())
    }

    /// A `$` at `i`: an expansion starts, or a literal `$`.
    fn dollar(&mut self, i: usize, place: DollarIn) -> Result<(), Stop> {
        if let Some((key, _)) = context_token_at(self.text, i + 1) {
            return Err(self.refuse(
                i + 1,
                key,
                "right after a $ (bash would read $'...'; write \\$ for a literal dollar sign)",
            ));
        }
        match (self.byte(i + 1), self.byte(i + 2)) {
            (Some(b'('), Some(b'(')) => {
                self.stack.push(Frame::Arith { parens: 0 });
                self.pos += 3;
            }
            (Some(b'('), _) => {
                self.stack.push(Frame::Code {
                    subst: true,
                    parens: 0,
                });
                self.pos += 2;
                self.word_start = true;
                return Ok(());
            }
            (Some(b'{'), _) => {
                self.stack.push(Frame::Param);
                self.pos += 2;
            }
            (Some(b'['), _) => return Err(self.unknown(i, "$[ (bash arithmetic, text to dash)")),
            (Some(b'\''), _) if place == DollarIn::Code => self.ansi_c(i)?,
            (Some(b'\''), _) if place == DollarIn::Expansion => {
                return Err(self.unknown(i, "$' inside an expansion"))
            }
            (Some(c), _) if b"$#?!@*-0123456789".contains(&c) => self.pos += 2,
            _ => self.pos += 1,
        }
        self.word_start = false;
        Ok(())
    }

    /// `$'...'` at `i`: bash's ANSI-C quoting, `$` and a single-quoted
    /// string to dash. Followed only when both end at the same quote.
    fn ansi_c(&mut self, i: usize) -> Result<(), Stop> {
        let start = i + 2;
        let dash_end = self.text[start..].find('\'').map(|n| start + n);
        let mut j = start;
        let mut bash_end = None;
        while j < self.bytes.len() {
            match self.bytes[j] {
                b'\\' => j += 2,
                b'\'' => {
                    bash_end = Some(j);
                    break;
                }
                _ => j += 1,
            }
        }
        match (dash_end, bash_end) {
            (Some(d), Some(b)) if d == b => {
                if let Some((offset, _, key)) = next_token(self.text, start).filter(|t| t.0 < d) {
                    return Err(self.refuse(
                        offset,
                        key,
                        "inside $'...', which sh and bash read differently",
                    ));
                }
                self.pos = d + 1;
                Ok(())
            }
            _ => Err(self.unknown(
                i,
                "$'...' with a backslash, which sh and bash end at different quotes",
            )),
        }
    }

    /// `<<` or `<<-` at `i`: reads the delimiter word; the body comes after
    /// the next newline of shell code.
    fn heredoc_operator(&mut self, i: usize) -> Result<(), Stop> {
        let mut j = i + 2;
        let strip_tabs = self.byte(j) == Some(b'-');
        if strip_tabs {
            j += 1;
        }
        while matches!(self.byte(j), Some(b' ' | b'\t')) {
            j += 1;
        }
        let mut delimiter = Vec::new();
        let mut quoted = false;
        while let Some(c) = self.byte(j) {
            if let Some((key, _)) = context_token_at(self.text, j) {
                return Err(self.refuse(j, key, "in a here-document's delimiter"));
            }
            match c {
                b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'<' | b'>' | b'(' | b')' => break,
                b'\'' | b'"' => {
                    let close = self.text[j + 1..].find(c as char).map(|n| j + 1 + n);
                    let Some(close) = close else {
                        return Err(self.unknown(i, "an unterminated here-document delimiter"));
                    };
                    let inner = &self.bytes[j + 1..close];
                    if c == b'"' && inner.iter().any(|b| matches!(b, b'\\' | b'$' | b'`')) {
                        return Err(self.unknown(i, "a here-document delimiter with expansions"));
                    }
                    delimiter.extend_from_slice(inner);
                    quoted = true;
                    j = close + 1;
                }
                b'\\' => match self.byte(j + 1) {
                    Some(n) if n != b'\n' => {
                        delimiter.push(n);
                        quoted = true;
                        j += 2;
                    }
                    _ => return Err(self.unknown(i, "a here-document delimiter with a line break")),
                },
                b'$' | b'`' => {
                    return Err(self.unknown(i, "a here-document delimiter with expansions"))
                }
                _ => {
                    delimiter.push(c);
                    j += 1;
                }
            }
        }
        if delimiter.is_empty() {
            return Err(self.unknown(i, "a here-document without a delimiter"));
        }
        self.heredocs.push(HereDoc {
            delimiter,
            strip_tabs,
            quoted,
            at: i,
        });
        self.pos = j;
        Ok(())
    }

    /// Skips the bodies of the pending here-documents, which start at
    /// `self.pos`; no token may stand in one.
    fn heredoc_bodies(&mut self) -> Result<(), Stop> {
        for doc in std::mem::take(&mut self.heredocs) {
            loop {
                let start = self.pos;
                let end = self.text[start..]
                    .find('\n')
                    .map_or(self.bytes.len(), |n| start + n);
                if let Some((offset, _, key)) = next_token(self.text, start).filter(|t| t.0 < end) {
                    return Err(self.refuse(
                        offset,
                        key,
                        format!("in the body of the here-document at offset {}", doc.at),
                    ));
                }
                let mut line = &self.bytes[start..end];
                if doc.strip_tabs {
                    while let [b'\t', rest @ ..] = line {
                        line = rest;
                    }
                }
                if line == doc.delimiter.as_slice() {
                    self.pos = (end + 1).min(self.bytes.len());
                    break;
                }
                if !doc.quoted && line.last() == Some(&b'\\') {
                    return Err(self.unknown(start, "a here-document line that ends in \\"));
                }
                if end >= self.bytes.len() {
                    self.pos = end;
                    return Ok(());
                }
                self.pos = end + 1;
            }
        }
        Ok(())
    }
}

/// Where a `$` stands, for the constructs that differ by place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DollarIn {
    Code,
    Double,
    /// Inside `${...}` or arithmetic.
    Expansion,
}

/// `text` starts with the word `word` followed by a blank, newline or `;`.
fn starts_word(text: &str, word: &str) -> bool {
    text.strip_prefix(word)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\n', ';']))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// splitmix64: a seeded generator, so that a failing case replays from
    /// its seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    /// Pieces of hostile values: quotes, expansions, escapes, newlines,
    /// glob and control characters, unicode, injections that would create
    /// the canary file.
    const PIECES: &[&str] = &[
        "'",
        "\"",
        "$",
        "`",
        "\\",
        "\n",
        "\r",
        "\t",
        " ",
        "*",
        "?",
        "[a]",
        "{a,b}",
        "~",
        "#",
        ";",
        "&",
        "&&",
        "|",
        "<",
        ">",
        "(",
        ")",
        "!",
        "=",
        "%s",
        "-n",
        "a",
        "Z9",
        "é",
        "日本",
        "😀",
        "$HOME",
        "${HOME}",
        "$(touch CANARY)",
        "`touch CANARY`",
        "'; touch CANARY; '",
        "\"; touch CANARY; echo \"",
        "'\\''",
        "\\'",
        "$'\\n'",
        "\nEOF\n",
        "$((1+1))",
    ];

    fn value(rng: &mut Rng) -> String {
        (0..rng.below(7)).map(|_| rng.pick(PIECES)).collect()
    }

    /// Command templates with `@v` and `@w` for the two tokens, and what they
    /// print given the values `v` and `w`.
    #[allow(clippy::type_complexity)]
    const CONTEXTS: &[(&str, fn(&str, &str) -> String)] = &[
        ("printf %s @v", |v, _| v.into()),
        ("printf %s a@v-b", |v, _| format!("a{v}-b")),
        ("printf %s \"pre @v post\"", |v, _| format!("pre {v} post")),
        ("printf %s 'pre @v post'", |v, _| format!("pre {v} post")),
        ("printf %s @v@w", |v, w| format!("{v}{w}")),
        ("printf '%s' \"@v\"'@w'@v", |v, w| format!("{v}{w}{v}")),
        ("printf '%s|' @v @w", |v, w| format!("{v}|{w}|")),
        ("printf %s \"a\\\"@v\\$\"", |v, _| format!("a\"{v}$")),
        ("printf %s \"$(printf %s \"@v\")\"", |v, _| {
            strip_newlines(v)
        }),
        ("printf %s \"[$(printf %s '@v' @w)]\"", |v, w| {
            format!("[{}]", strip_newlines(&format!("{v}{w}")))
        }),
        ("x=@v; printf %s \"$x\"", |v, _| v.into()),
        ("for x in @v; do printf %s \"$x\"; done", |v, _| v.into()),
        ("case @v in *) printf %s @w;; esac", |_, w| w.into()),
        ("printf %s @v # @w", |v, _| v.into()),
        ("printf %s ${X:-x}@v\"${X:-y}\"", |v, _| format!("x{v}y")),
        ("cat <<'EOF'\nbody\nEOF\nprintf %s \"@w\"", |_, w| {
            format!("body\n{w}")
        }),
        ("printf %s @w`printf %s x`$((1+1))", |_, w| format!("{w}x2")),
        ("printf %s \\\"@v\\\" \\'", |v, _| format!("\"{v}\"'")),
    ];

    fn strip_newlines(s: &str) -> String {
        s.trim_end_matches('\n').to_owned()
    }

    fn run(shell: &str, command: &str, dir: &Path, w: &str) -> (Vec<u8>, String) {
        let out = Command::new(shell)
            .arg("-c")
            .arg(command)
            .current_dir(dir)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", "/home/nobody")
            .env("RD_OPTION_W", w)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {shell} (is it installed?): {e}"));
        (
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn scratch(seed: u64) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("rdrunner-quoting-{}-{seed}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Random values in random quoting contexts, through the real `sh`
    /// (dash) and `bash`: each prints exactly the value's bytes, and no
    /// injected command runs. Replay a failure with
    /// `RDRUNNER_QUOTING_SEED=<seed> cargo test --workspace --lib quoting`.
    #[test]
    fn quoting_keeps_random_values_intact_in_sh_and_bash() {
        let seed = match std::env::var("RDRUNNER_QUOTING_SEED") {
            Ok(s) => s.parse().expect("RDRUNNER_QUOTING_SEED is a number"),
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64),
        };
        let mut rng = Rng(seed);
        let dir = scratch(seed);
        let canary = dir.join("CANARY");
        for case in 0..300 {
            let (v, w) = (value(&mut rng), value(&mut rng));
            let (template, expected) = CONTEXTS[rng.below(CONTEXTS.len())];
            let template = template
                .replace("@v", "${option.v}")
                .replace("@w", "${option.w}");
            // `w` is, in half the cases, a reference to a variable that
            // holds it, as secure values are.
            let by_reference = rng.below(2) == 0;
            let lookup = |key: &str| match key {
                "option.v" => single_quoted(&v),
                "option.w" if by_reference => "\"${RD_OPTION_W}\"".to_owned(),
                "option.w" => single_quoted(&w),
                _ => single_quoted(""),
            };
            let command = substitute(&template, &lookup).unwrap_or_else(|r| {
                panic!("seed {seed}, case {case}: {template:?} refused: {r:?}")
            });
            let want = expected(&v, &w);
            for shell in ["sh", "bash"] {
                let (out, err) = run(shell, &command, &dir, &w);
                assert!(
                    out == want.as_bytes() && !canary.exists(),
                    "seed {seed}, case {case}, {shell}: {template:?} with v={v:?} w={w:?} \
                     ran {command:?}\nprinted {:?}\nwanted  {want:?}\nstderr {err}\ncanary: {}",
                    String::from_utf8_lossy(&out),
                    canary.exists()
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn refusal(command: &str) -> Refusal {
        substitute(command, &|_| single_quoted("x")).expect_err(command)
    }

    #[test]
    fn quoting_follows_nested_substitutions_and_quotes() {
        let q = |c: &str| substitute(c, &|_| single_quoted("v")).unwrap();
        assert_eq!(
            q("\"$(echo \")\")${option.a}\""),
            "\"$(echo \")\")\"'v'\"\""
        );
        assert_eq!(q("$(echo ')' ${option.a})"), "$(echo ')' 'v')");
        assert_eq!(q("$( (echo) ${option.a} )"), "$( (echo) 'v' )");
        assert_eq!(q("echo \\'${option.a}"), "echo \\''v'");
        assert_eq!(q("echo $$${option.a}"), "echo $$'v'");
        assert_eq!(q("echo \\\n# ${option.a}"), "echo \\\n# ${option.a}");
        assert_eq!(q("echo a#${option.a}"), "echo a#'v'");
        assert_eq!(q("echo $'a'${option.a}"), "echo $'a''v'");
        assert_eq!(
            q("cat <<-\"E\"\n\tE\necho ${option.a}"),
            "cat <<-\"E\"\n\tE\necho 'v'"
        );
        assert_eq!(q("cat <<<${option.a}"), "cat <<<'v'");
    }

    #[test]
    fn uncertain_constructs_refuse_the_tokens_after_them() {
        for (command, place) in [
            ("echo $[1] ${option.a}", "$["),
            ("cat <<E\\\nx\nE\necho ${option.a}", "line break"),
            ("cat <<E\na\\\nE\nE\necho ${option.a}", "ends in \\"),
            ("echo \"${X#'}\" ${option.a}", "parameter expansion"),
            (
                "echo $((echo a) ) ${option.a}",
                "arithmetic or a command substitution",
            ),
            ("echo $(cat <<E) ${option.a}", "before its here-document"),
            ("cat <<$X\n${option.a}", "delimiter with expansions"),
        ] {
            let r = refusal(command);
            assert_eq!(r.key, "option.a");
            assert_eq!(r.offset, command.rfind("${option.a}").unwrap(), "{command}");
            assert!(r.place.contains(place), "{command}: {}", r.place);
        }
        assert!(refusal("cat <<${option.a}").place.contains("delimiter"));
    }
}
