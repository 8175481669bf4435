//! When an API token expires, as an administrator types it on `/tokens`:
//! nothing or "never", a duration from now ("90d", "12h", "1y"), a date
//! (the token works through that day, UTC: it expires at the next midnight)
//! or an RFC 3339 time.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The expiry `text` asks for, None for none; refused when not in the future.
pub(crate) fn parse(text: &str, now: OffsetDateTime) -> Result<Option<OffsetDateTime>, String> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    let at = if let Ok(d) = humantime::parse_duration(text) {
        let d = time::Duration::try_from(d).map_err(|_| format!("{text:?} is too long"))?;
        now.checked_add(d)
            .ok_or_else(|| format!("{text:?} is too long"))?
    } else if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        t
    } else if let Ok(day) = time::Date::parse(
        text,
        time::macros::format_description!("[year]-[month]-[day]"),
    ) {
        day.next_day()
            .ok_or_else(|| format!("{text:?} is too far away"))?
            .midnight()
            .assume_utc()
    } else {
        return Err(format!(
            "{text:?} is not an expiry: leave it blank for none, or give a duration (\"90d\"), a date (\"2026-12-31\") or a time (\"2026-12-31T18:00:00Z\")"
        ));
    };
    if at <= now {
        return Err(format!("{text:?} is not in the future"));
    }
    Ok(Some(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries() {
        let now = time::macros::datetime!(2026-03-01 12:00 UTC);
        assert_eq!(parse("", now), Ok(None));
        assert_eq!(parse("never", now), Ok(None));
        assert_eq!(
            parse("90d", now),
            Ok(Some(time::macros::datetime!(2026-05-30 12:00 UTC)))
        );
        assert_eq!(
            parse("2026-12-31", now),
            Ok(Some(time::macros::datetime!(2027-01-01 00:00 UTC)))
        );
        assert_eq!(
            parse("2026-03-01T18:30:00+02:00", now),
            Ok(Some(time::macros::datetime!(2026-03-01 16:30 UTC)))
        );
        assert!(parse("2025-12-31", now).is_err_and(|e| e.contains("not in the future")));
        assert!(parse("soonish", now).is_err_and(|e| e.contains("not an expiry")));
    }
}
