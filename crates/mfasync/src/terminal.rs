//! Text for a terminal: directory values (usernames, DNs, reasons) are shown
//! with their control characters escaped, so an ANSI sequence or a newline in
//! a directory entry cannot erase, recolour or forge the lines an
//! administrator reads (`approvals list`, `audit`, `history`, ...).

use std::borrow::Cow;

/// `text` with every control character (C0, DEL, C1) and every bidirectional
/// override written as a Rust escape (`\u{1b}`, `\n`, `\u{202e}`).
pub fn safe(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Control characters, and the bidi embeddings/overrides/isolates that
/// reorder what follows them on screen.
fn unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `println!` for lines that hold directory data: the line is passed
/// through [`safe`].
macro_rules! say {
    ($($arg:tt)*) => {
        println!("{}", $crate::terminal::safe(&format!($($arg)*)))
    };
}
pub(crate) use say;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(safe("alice"), "alice");
        assert_eq!(safe("CN=Smith\\, John"), "CN=Smith\\, John");
        assert_eq!(safe("Jos\u{e9}"), "Jos\u{e9}");
        assert_eq!(safe("\u{1b}[2Jeve"), "\\u{1b}[2Jeve");
        assert_eq!(safe("a\nb\r\t"), "a\\nb\\r\\t");
        assert_eq!(safe("x\u{9b}y\u{7f}"), "x\\u{9b}y\\u{7f}");
        assert_eq!(safe("\u{202e}txt"), "\\u{202e}txt");
    }
}
