//! Control characters in names and other one-line text: the one definition
//! the control plane refuses them by and the runner escapes them in its
//! logs by, so that a name can neither forge a line nor turn text around.

use std::fmt::Write as _;

/// Whether `c` may not stand in one line of text shown to people: the C0
/// controls (newline, carriage return, tab, NUL, escape...), DEL, the C1
/// controls (U+0080 to U+009F, NEL among them), the line and paragraph
/// separators U+2028 and U+2029, and the bidirectional controls (U+061C,
/// U+200E, U+200F, U+202A to U+202E, U+2066 to U+2069) that make a
/// terminal or an editor show text in another order than it is stored.
pub fn is_control(c: char) -> bool {
    matches!(
        c,
        '\u{0}'..='\u{1f}'
            | '\u{7f}'..='\u{9f}'
            | '\u{61c}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
    )
}

/// The first control character in `text` (see [`is_control`]), written
/// as an escape for a message, e.g. `\n` or `\u{202e}`.
pub fn first_control(text: &str) -> Option<String> {
    text.chars().find(|c| is_control(*c)).map(|c| {
        let mut out = String::new();
        push_escaped(&mut out, c);
        out
    })
}

/// `text` with every control character escaped (`\n`, `\r`, `\t`, `\x1b`,
/// `\u{202e}`...) and every other character as it is. A backslash is not
/// doubled: the escaped text is for people, and what matters is that it
/// stays one line that reads in the order it is stored.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_control(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if (c as u32) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_everything_else_is_kept() {
        assert_eq!(
            escape_controls("web1\nFORGED\r\x1b[31m\u{202e}txt.exe\u{85}\u{2028}\0"),
            "web1\\nFORGED\\r\\x1b[31m\\u{202e}txt.exe\\u{85}\\u{2028}\\x00"
        );
        assert!(matches!(
            escape_controls("plain ünïcödé, tabs\\n as text, 日本"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(first_control("a\u{2066}b\nc").as_deref(), Some("\\u{2066}"));
        assert_eq!(first_control("no controls"), None);
        for c in [
            '\u{7f}', '\u{9f}', '\u{61c}', '\u{200f}', '\u{202a}', '\u{2069}',
        ] {
            assert!(is_control(c), "{c:?}");
        }
        for c in [' ', '~', '\u{a0}', 'é', '\u{200d}', '\u{2070}'] {
            assert!(!is_control(c), "{c:?}");
        }
    }
}
