//! Shapes of single values that the configuration checks: environment
//! variable names and language tags.

/// Whether `name` can be an environment variable a shell can set:
/// `[A-Za-z_][A-Za-z0-9_]*`.
pub(super) fn env_name_ok(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether `tag` is shaped like a BCP 47 language tag of the kind MFA
/// servers use for their prompts: a 2-3 letter language ("en", "haw"), then
/// optionally a 4-letter script ("Hant"), a region (2 letters or 3 digits:
/// "MX", "419") and variants (5-8 letters/digits, or a digit and 3 more),
/// separated by '-' (or '_', as some directories write them). Case is free.
pub(super) fn language_tag_ok(tag: &str) -> bool {
    let mut parts = tag.split(['-', '_']).peekable();
    let alpha = |s: &str, n: std::ops::RangeInclusive<usize>| {
        n.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphabetic())
    };
    if !parts.next().is_some_and(|l| alpha(l, 2..=3)) {
        return false;
    }
    if parts.peek().is_some_and(|s| alpha(s, 4..=4)) {
        parts.next();
    }
    if parts
        .peek()
        .is_some_and(|s| alpha(s, 2..=2) || (s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit())))
    {
        parts.next();
    }
    parts.all(|v| {
        let alnum = v.bytes().all(|b| b.is_ascii_alphanumeric());
        alnum && ((5..=8).contains(&v.len()) || (v.len() == 4 && v.as_bytes()[0].is_ascii_digit()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names() {
        for ok in ["A", "_", "MFA_BIND_PW", "x1", "_9"] {
            assert!(env_name_ok(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "A=B", "Ä", "$A"] {
            assert!(!env_name_ok(bad), "{bad}");
        }
    }

    #[test]
    fn language_tags() {
        for ok in [
            "en",
            "de",
            "fr",
            "es-MX",
            "pt-BR",
            "zh-Hant-TW",
            "es-419",
            "EN_us",
            "haw",
            "sl-rozaj",
            "de-CH-1996",
        ] {
            assert!(language_tag_ok(ok), "{ok}");
        }
        for bad in [
            "",
            "e",
            "english",
            "en-",
            "-en",
            "en US",
            "en-U",
            "12",
            "en-Latn-US-x",
            "fr!",
        ] {
            assert!(!language_tag_ok(bad), "{bad}");
        }
    }
}
