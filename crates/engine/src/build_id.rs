//! The running executable's GNU build ID (`.note.gnu.build-id`, written by
//! the linker as a hash of the linked output): what identifies this build
//! for the full sync's raw stamps (`core::plan::RawSeed`). Any change of
//! code or embedded data (such as the phone-number metadata) changes it,
//! whatever the version number, file size or modification time say.

use std::os::unix::fs::FileExt;

/// `PT_NOTE` (elf.h).
const PT_NOTE: u32 = 4;
/// `NT_GNU_BUILD_ID` (elf.h).
const NT_GNU_BUILD_ID: u32 = 3;

/// The build ID of the running executable, as hex; None when it has none or
/// it cannot be read (then nothing is trusted to be the same build).
pub fn current() -> Option<String> {
    // (/proc/self/exe: even after the file was replaced by an upgrade)
    let id = of_file(std::path::Path::new("/proc/self/exe"))?;
    Some(id.iter().map(|b| format!("{b:02x}")).collect())
}

/// The GNU build ID of the 64-bit little-endian ELF file at `path`.
pub fn of_file(path: &std::path::Path) -> Option<Vec<u8>> {
    let f = std::fs::File::open(path).ok()?;
    let read = |offset: u64, len: usize| -> Option<Vec<u8>> {
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, offset).ok()?;
        Some(buf)
    };
    let header = read(0, 64)?;
    // ELF magic, ELFCLASS64, ELFDATA2LSB
    if header.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |b: &[u8], i: usize| Some(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?));
    let u32_at = |b: &[u8], i: usize| Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?));
    let u64_at = |b: &[u8], i: usize| Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?));
    let phoff = u64_at(&header, 0x20)?;
    let phentsize = usize::from(u16_at(&header, 0x36)?);
    let phnum = usize::from(u16_at(&header, 0x38)?);
    if phentsize < 56 || phnum > 256 {
        return None;
    }
    let headers = read(phoff, phentsize * phnum)?;
    for h in headers.chunks_exact(phentsize) {
        if u32_at(h, 0)? != PT_NOTE {
            continue;
        }
        let (offset, size) = (u64_at(h, 0x08)?, u64_at(h, 0x20)?);
        if size > 1 << 20 {
            continue;
        }
        let notes = read(offset, usize::try_from(size).ok()?)?;
        let mut i = 0usize;
        while i + 12 <= notes.len() {
            let namesz = usize::try_from(u32_at(&notes, i)?).ok()?;
            let descsz = usize::try_from(u32_at(&notes, i + 4)?).ok()?;
            let kind = u32_at(&notes, i + 8)?;
            let name_at = i + 12;
            let desc_at = name_at.checked_add(namesz.checked_add(3)? & !3)?;
            let end = desc_at.checked_add(descsz.checked_add(3)? & !3)?;
            if kind == NT_GNU_BUILD_ID && notes.get(name_at..name_at + namesz)? == b"GNU\0" {
                let desc = notes.get(desc_at..desc_at + descsz)?;
                return (!desc.is_empty()).then(|| desc.to_vec());
            }
            i = end;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_binary_has_a_build_id_and_other_files_none() {
        // linked by the same toolchain as the binary
        let id = current().expect("a build ID");
        assert!(id.len() >= 16, "{id}");
        assert_eq!(current(), Some(id));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = dir.path().join("not-elf");
        std::fs::write(&p, b"#!/bin/sh\necho hello\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(of_file(&p), None);
        // an ELF header whose program headers lie past the end
        let mut fake = b"\x7fELF\x02\x01".to_vec();
        fake.resize(64, 0);
        fake[0x20] = 0xff;
        fake[0x36] = 56;
        fake[0x38] = 1;
        std::fs::write(&p, &fake).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(of_file(&p), None);
        assert_eq!(of_file(&dir.path().join("missing")), None);
    }
}
