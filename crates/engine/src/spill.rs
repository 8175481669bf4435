//! Creates kept in a temporary file instead of memory: a cycle that creates
//! many users while others are stored (a new item of 100,000 users) cannot
//! write them while it reads, so past `SPILL_AFTER` they wait on disk and
//! are written at commit, a chunk at a time, in the cycle's one transaction;
//! `sync --plan` lists them from there.

use crate::error::{EngineError, Result};
use mfasync_core::plan::{Action, Change, RawMark};
use mfasync_core::MfaUser;
use serde::{Deserialize, Serialize};
use std::io::{BufReader, BufWriter, Read, Seek, Write};

/// Creates a cycle holds in memory before it keeps further ones on disk.
const SPILL_AFTER: usize = 10_000;

/// [`SPILL_AFTER`], or `MFASYNC_TEST_SPILL_AFTER` (tests: a small directory
/// then goes through the file).
pub(crate) fn spill_after() -> usize {
    static AFTER: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *AFTER.get_or_init(|| {
        std::env::var("MFASYNC_TEST_SPILL_AFTER")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(SPILL_AFTER)
    })
}

/// One change as written to the file.
#[derive(Serialize, Deserialize)]
struct Record {
    action: Action,
    user: MfaUser,
    before: Option<MfaUser>,
    fields: Vec<String>,
    reason: Option<String>,
    raw: Option<(u128, u128)>,
}

/// The file being filled (an unnamed temporary file: gone with the process).
pub(crate) struct Spill {
    file: BufWriter<std::fs::File>,
    len: usize,
    /// The first failed write: the file cannot be read back then.
    broken: Option<String>,
}

impl Spill {
    pub(crate) fn new() -> Result<Spill> {
        let file = tempfile::tempfile().map_err(|e| {
            EngineError::Other(format!(
                "cannot create a temporary file for the cycle's creates (TMPDIR): {e}"
            ))
        })?;
        Ok(Spill {
            file: BufWriter::new(file),
            len: 0,
            broken: None,
        })
    }

    /// Append `c` (a length-prefixed postcard record).
    pub(crate) fn push(&mut self, c: &Change) {
        if self.broken.is_some() {
            return;
        }
        let record = Record {
            action: c.action,
            user: c.user.clone(),
            before: c.before.clone(),
            fields: c.fields.iter().map(|f| f.to_string()).collect(),
            reason: c.reason.clone(),
            raw: c.raw.map(|m| (m.raw, m.digest)),
        };
        let written = postcard::to_allocvec(&record)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                let len = u32::try_from(bytes.len()).map_err(|e| e.to_string())?;
                self.file
                    .write_all(&len.to_le_bytes())
                    .and_then(|()| self.file.write_all(&bytes))
                    .map_err(|e| e.to_string())
            });
        match written {
            Ok(()) => self.len += 1,
            Err(e) => self.broken = Some(e),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Done writing: the changes to read back.
    pub(crate) fn finish(self) -> Result<Spilled> {
        let fail = |e: String| {
            EngineError::Other(format!(
                "cannot keep the cycle's creates in a temporary file (TMPDIR): {e}; nothing changed"
            ))
        };
        if let Some(e) = self.broken {
            return Err(fail(e));
        }
        let file = self.file.into_inner().map_err(|e| fail(e.to_string()))?;
        Ok(Spilled {
            file,
            len: self.len,
        })
    }
}

/// The changes of a finished spill, in the order they were pushed: written
/// at commit, or listed by `sync --plan`.
pub struct Spilled {
    file: std::fs::File,
    len: usize,
}

impl Spilled {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every change from the first (one reading at a time).
    pub fn changes(&self) -> Result<SpilledChanges> {
        let mut file = self.file.try_clone().map_err(read_error)?;
        file.rewind().map_err(read_error)?;
        Ok(SpilledChanges {
            file: BufReader::new(file),
            left: self.len,
            bytes: Vec::new(),
        })
    }
}

/// Reading a [`Spilled`] back, change by change.
pub struct SpilledChanges {
    file: BufReader<std::fs::File>,
    left: usize,
    bytes: Vec<u8>,
}

impl SpilledChanges {
    fn read_one(&mut self) -> Result<Change> {
        let mut len = [0u8; 4];
        self.file.read_exact(&mut len).map_err(read_error)?;
        self.bytes.resize(u32::from_le_bytes(len) as usize, 0);
        self.file.read_exact(&mut self.bytes).map_err(read_error)?;
        let r: Record = postcard::from_bytes(&self.bytes).map_err(read_error)?;
        Ok(Change {
            action: r.action,
            user: r.user,
            before: r.before,
            fields: r
                .fields
                .iter()
                .filter_map(|f| MfaUser::field_name(f))
                .collect(),
            reason: r.reason,
            raw: r.raw.map(|(raw, digest)| RawMark { raw, digest }),
        })
    }

    /// The next up to `n` changes (empty: all read).
    pub(crate) fn next_chunk(&mut self, n: usize) -> Result<Vec<Change>> {
        self.by_ref().take(n).collect()
    }
}

impl Iterator for SpilledChanges {
    type Item = Result<Change>;

    fn next(&mut self) -> Option<Result<Change>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let one = self.read_one();
        if one.is_err() {
            self.left = 0;
        }
        Some(one)
    }
}

fn read_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::Other(format!(
        "cannot read back the cycle's creates from their temporary file: {e}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(name: &str, phone: Option<&str>) -> Change {
        Change {
            action: Action::Create,
            user: MfaUser {
                username: name.into(),
                directory_id: Some(format!("id-{name}")),
                business_phone: phone.map(str::to_string),
                enabled: true,
                ..MfaUser::default()
            },
            before: None,
            fields: vec![],
            reason: None,
            raw: Some(RawMark {
                raw: u128::MAX - 7,
                digest: 42,
            }),
        }
    }

    #[test]
    fn changes_come_back_as_written_in_chunks() {
        let mut s = Spill::new().unwrap();
        let mut all: Vec<Change> = (0..2500)
            .map(|i| create(&format!("user{i}"), (i % 2 == 0).then_some("+14255550100")))
            .collect();
        let mut update = create("renamed", None);
        update.action = Action::Update;
        update.before = Some(create("old", None).user);
        update.fields = vec!["username", "business_phone", "enabled", "source"];
        update.reason = Some("why".into());
        update.raw = None;
        all.push(update);
        for c in &all {
            s.push(c);
        }
        assert_eq!(s.len(), 2501);
        let back = s.finish().unwrap();
        assert_eq!(back.len(), 2501);
        let mut chunks = back.changes().unwrap();
        let mut got = Vec::new();
        loop {
            let chunk = chunks.next_chunk(1000).unwrap();
            if chunk.is_empty() {
                break;
            }
            got.extend(chunk);
        }
        assert_eq!(got, all);
        // read again from the first (sync --plan lists them, JSON and text)
        let again: Vec<Change> = back.changes().unwrap().map(Result::unwrap).collect();
        assert_eq!(again, all);
    }
}
