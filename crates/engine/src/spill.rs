//! A cycle's records kept in temporary files instead of memory: past
//! `SPILL_AFTER`, creates that cannot be written while reading (others are
//! stored), updates that keep their username, users to compare with their
//! rows and raw stamps wait on disk; the changes are written at commit, a
//! chunk at a time, in the cycle's one transaction (`sync --plan` lists
//! them from there).

use crate::error::{EngineError, Result};
use mfasync_core::plan::{Action, Change, RawMark};
use mfasync_core::MfaUser;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::marker::PhantomData;

/// Records of each kind a cycle holds in memory before it keeps further ones on disk.
const SPILL_AFTER: usize = 1_000;

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
pub struct ChangeRecord {
    action: Action,
    user: MfaUser,
    before: Option<MfaUser>,
    fields: Vec<String>,
    reason: Option<String>,
    raw: Option<RawMark>,
}

impl From<Change> for ChangeRecord {
    fn from(c: Change) -> Self {
        ChangeRecord {
            action: c.action,
            user: c.user,
            before: c.before,
            fields: c.fields.iter().map(|f| f.to_string()).collect(),
            reason: c.reason,
            raw: c.raw,
        }
    }
}

impl From<ChangeRecord> for Change {
    fn from(r: ChangeRecord) -> Self {
        Change {
            action: r.action,
            user: r.user,
            before: r.before,
            fields: r
                .fields
                .iter()
                .filter_map(|f| MfaUser::field_name(f))
                .collect(),
            reason: r.reason,
            raw: r.raw,
        }
    }
}

/// A user whose digest differs, to compare with its stored row after the
/// read: the mapped user and its raw mark.
pub(crate) type CandidateRecord = (MfaUser, Option<RawMark>);

/// A raw stamp to write after the commit: directory id and raw mark.
pub(crate) type StampRecord = (String, RawMark);

/// The file being filled with `R` records (an unnamed temporary file: gone
/// with the process).
pub(crate) struct Spill<R> {
    file: BufWriter<std::fs::File>,
    len: usize,
    /// The first failed write: the file cannot be read back then.
    broken: Option<String>,
    record: PhantomData<R>,
}

impl<R: Serialize> Spill<R> {
    pub(crate) fn new() -> Result<Self> {
        let file = tempfile::tempfile().map_err(|e| {
            EngineError::Other(format!(
                "cannot create a temporary file for the cycle's changes (TMPDIR): {e}"
            ))
        })?;
        Ok(Spill {
            file: BufWriter::new(file),
            len: 0,
            broken: None,
            record: PhantomData,
        })
    }

    /// Append `r` (a length-prefixed postcard record).
    pub(crate) fn push(&mut self, r: &R) {
        if self.broken.is_some() {
            return;
        }
        let written = postcard::to_allocvec(r)
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

    /// Done writing: the records to read back.
    pub(crate) fn finish(self) -> Result<Spilled<R>> {
        let fail = |e: String| {
            EngineError::Other(format!(
                "cannot keep the cycle's changes in a temporary file (TMPDIR): {e}; nothing changed"
            ))
        };
        if let Some(e) = self.broken {
            return Err(fail(e));
        }
        let file = self.file.into_inner().map_err(|e| fail(e.to_string()))?;
        Ok(Spilled {
            file,
            len: self.len,
            record: PhantomData,
        })
    }
}

/// A spill made on first use: records past the caller's limit go there; when
/// no temporary file can be made they come back (held in memory; warned once).
pub(crate) struct Spiller<R> {
    spill: Option<Spill<R>>,
    unavailable: bool,
}

impl<R> Default for Spiller<R> {
    fn default() -> Self {
        Spiller {
            spill: None,
            unavailable: false,
        }
    }
}

impl<R: Serialize> Spiller<R> {
    /// Keep `r` on disk, or give it back.
    pub(crate) fn keep(&mut self, r: R) -> std::result::Result<(), R> {
        if self.unavailable {
            return Err(r);
        }
        let spill = match &mut self.spill {
            Some(s) => s,
            None => match Spill::new() {
                Ok(s) => self.spill.insert(s),
                Err(e) => {
                    tracing::warn!(target: "mfasync::sync", "{e:#}; they are held in memory");
                    self.unavailable = true;
                    return Err(r);
                }
            },
        };
        spill.push(&r);
        Ok(())
    }

    /// Records kept so far.
    pub(crate) fn len(&self) -> usize {
        self.spill.as_ref().map_or(0, Spill::len)
    }

    /// The records kept (None: none).
    pub(crate) fn finish(self) -> Result<Option<Spilled<R>>> {
        self.spill.map(Spill::finish).transpose()
    }
}

/// The records of a finished spill, in the order they were pushed.
pub struct Spilled<R> {
    file: std::fs::File,
    len: usize,
    record: PhantomData<R>,
}

/// A plan's changes kept on disk: written at commit, or listed by `sync --plan`.
pub type SpilledChanges = Spilled<ChangeRecord>;

impl<R: DeserializeOwned> Spilled<R> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every record from the first (one reading at a time).
    pub fn records(&self) -> Result<Records<R>> {
        let mut file = self.file.try_clone().map_err(read_error)?;
        file.rewind().map_err(read_error)?;
        Ok(Records {
            file: BufReader::new(file),
            left: self.len,
            bytes: Vec::new(),
            record: PhantomData,
        })
    }
}

impl Spilled<ChangeRecord> {
    /// Every change from the first (one reading at a time).
    pub fn changes(&self) -> Result<impl Iterator<Item = Result<Change>>> {
        Ok(self.records()?.map(|r| r.map(Change::from)))
    }
}

/// Reading a [`Spilled`] back, record by record.
pub struct Records<R> {
    file: BufReader<std::fs::File>,
    left: usize,
    bytes: Vec<u8>,
    record: PhantomData<R>,
}

impl<R: DeserializeOwned> Records<R> {
    fn read_one(&mut self) -> Result<R> {
        let mut len = [0u8; 4];
        self.file.read_exact(&mut len).map_err(read_error)?;
        self.bytes.resize(u32::from_le_bytes(len) as usize, 0);
        self.file.read_exact(&mut self.bytes).map_err(read_error)?;
        postcard::from_bytes(&self.bytes).map_err(read_error)
    }
}

impl<R: DeserializeOwned> Iterator for Records<R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
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

/// The next up to `n` items of `it` (empty: all read).
pub(crate) fn next_chunk<T>(it: &mut impl Iterator<Item = Result<T>>, n: usize) -> Result<Vec<T>> {
    it.by_ref().take(n).collect()
}

fn read_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::Other(format!(
        "cannot read back the cycle's changes from their temporary file: {e}"
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
        let mut s: Spill<ChangeRecord> = Spill::new().unwrap();
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
            s.push(&ChangeRecord::from(c.clone()));
        }
        assert_eq!(s.len(), 2501);
        let back = s.finish().unwrap();
        assert_eq!(back.len(), 2501);
        let mut chunks = back.changes().unwrap();
        let mut got = Vec::new();
        loop {
            let chunk = next_chunk(&mut chunks, 1000).unwrap();
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
