//! RFC 4515 escaping of values put into search filters: every user-supplied
//! value goes through here, so `*`, `(`, `)`, `\` and NUL are matched literally.

/// Escape a value for use in an equality assertion.
pub fn filter_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// Escape raw bytes (e.g. an objectGUID) as `\XX` for every byte.
pub fn filter_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("\\{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn escapes_specials() {
        assert_eq!(filter_value("a*)(uid=*"), "a\\2a\\29\\28uid=\\2a");
        assert_eq!(filter_value("x\\y\0"), "x\\5cy\\00");
        assert_eq!(filter_bytes(&[0, 0xab]), "\\00\\ab");
        assert!(
            crate::filter::validate_filter(&format!("(uid={})", filter_value("admin)(|(a=*")))
                .is_ok()
        );
    }
}
