//! Phone numbers: the seed's extension rule ("555-123-4567 x890" gives the
//! number "555-123-4567" and extension "890") and E.164 normalisation with a
//! sync item's country code. Numbers that cannot be parsed are kept as written.

use phonenumber::Mode;

/// Split a trailing extension written with `x`, `ext`, `ext.` or `extension`
/// (any case), e.g. "+1 425 555 0100 x123" -> ("+1 425 555 0100", Some("123")).
pub fn split_extension(raw: &str) -> (String, Option<String>) {
    let s = raw.trim();
    let lower = s.to_ascii_lowercase();
    let digits_start = lower
        .rfind(|c: char| !c.is_ascii_digit())
        .map(|i| i + 1)
        .unwrap_or(0);
    if digits_start == 0 || digits_start == lower.len() {
        return (s.to_string(), None);
    }
    let head = lower[..digits_start].trim_end();
    for marker in ["extension", "ext.", "ext", "x"] {
        if let Some(before) = head.strip_suffix(marker) {
            // the marker must stand apart from the number ("555-0100x12" is fine, "box12" is not)
            let ok = before.is_empty()
                || before.ends_with(|c: char| {
                    c.is_whitespace() || c.is_ascii_digit() || c == ',' || c == ';'
                });
            if ok && !before.trim().is_empty() {
                let number = s[..before.len()]
                    .trim_end()
                    .trim_end_matches([',', ';'])
                    .trim_end();
                return (number.to_string(), Some(s[digits_start..].to_string()));
            }
        }
    }
    (s.to_string(), None)
}

/// E.164 form of `number` ("+14255550100"), reading numbers written without a
/// country code as numbers of `country_code` (a calling code such as "1" or
/// "44"). Returns the text as written when it cannot be parsed.
pub fn to_e164(number: &str, country_code: &str) -> String {
    let number = number.trim();
    if number.is_empty() {
        return String::new();
    }
    let region = country_code
        .trim_start_matches('+')
        .parse::<u16>()
        .ok()
        .and_then(|code| phonenumber::metadata::DATABASE.region(&code))
        .and_then(|ids| {
            ids.first()
                .and_then(|id| id.parse::<phonenumber::country::Id>().ok())
        });
    let parsed = if number.starts_with('+') {
        phonenumber::parse(None, number)
    } else if let Some(rest) = number.strip_prefix("00") {
        phonenumber::parse(None, format!("+{rest}"))
    } else {
        match region {
            Some(id) => phonenumber::parse(Some(id), number),
            None => return number.to_string(),
        }
    };
    match parsed {
        Ok(p) => p.format().mode(Mode::E164).to_string(),
        Err(_) => number.to_string(),
    }
}

/// Remembers E.164 results by (number as written, country code) for one
/// synchronization cycle: parsing is the costliest step of mapping a user
/// (~15 µs), and numbers repeat (a site's main line, shared fax numbers).
/// Bounded: past `MAX` distinct numbers it only answers what it already holds.
#[derive(Debug, Default)]
pub struct E164Cache {
    /// country code -> number as written -> E.164 form (foldhash: every
    /// phone of every mapped user is looked up, most of them only once)
    map: std::collections::HashMap<
        String,
        std::collections::HashMap<String, String, foldhash::fast::RandomState>,
        foldhash::fast::RandomState,
    >,
    len: usize,
}

impl E164Cache {
    const MAX: usize = 50_000;

    /// `to_e164(number, country_code)`, from the cache when seen before.
    pub fn to_e164(&mut self, number: &str, country_code: &str) -> String {
        if let Some(v) = self.map.get(country_code).and_then(|m| m.get(number)) {
            return v.clone();
        }
        let v = to_e164(number, country_code);
        if self.len < Self::MAX {
            self.len += 1;
            self.map
                .entry(country_code.to_string())
                .or_default()
                .insert(number.to_string(), v.clone());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions() {
        for (raw, num, ext) in [
            ("555-123-4567 x890", "555-123-4567", Some("890")),
            ("+1 425 555 0100 x123", "+1 425 555 0100", Some("123")),
            ("+1 425 555 0100 X123", "+1 425 555 0100", Some("123")),
            ("+1 425 555 0100 ext. 7", "+1 425 555 0100", Some("7")),
            (
                "+1 425 555 0100 extension 77",
                "+1 425 555 0100",
                Some("77"),
            ),
            ("555-0100x12", "555-0100", Some("12")),
            ("+1 425 555 0100", "+1 425 555 0100", None),
            ("box12", "box12", None),
            ("x123", "x123", None),
            ("", "", None),
        ] {
            let (n, e) = split_extension(raw);
            assert_eq!((n.as_str(), e.as_deref()), (num, ext), "{raw}");
        }
    }

    #[test]
    fn e164() {
        for (raw, cc, want) in [
            ("+1 425 555 0100", "1", "+14255550100"),
            ("(425) 555-0101", "1", "+14255550101"),
            ("425.555.0101", "1", "+14255550101"),
            ("+44 20 7946 0958", "1", "+442079460958"),
            ("020 7946 0958", "44", "+442079460958"),
            ("0044 20 7946 0958", "1", "+442079460958"),
            ("030 1234567", "49", "+49301234567"),
            ("call me maybe", "1", "call me maybe"),
            ("12", "1", "12"),
        ] {
            assert_eq!(to_e164(raw, cc), want, "{raw} with +{cc}");
        }
        // the cache answers the same, keyed by number AND country code
        let mut c = E164Cache::default();
        assert_eq!(c.to_e164("020 7946 0958", "44"), "+442079460958");
        assert_eq!(c.to_e164("020 7946 0958", "44"), "+442079460958");
        assert_eq!(c.to_e164("030 1234567", "49"), "+49301234567");
        assert_eq!(c.to_e164("030 1234567", "1"), to_e164("030 1234567", "1"));
    }
}
