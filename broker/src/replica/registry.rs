//! The registry on disk: every topic's id, partition count and config overrides, and the end of
//! the reserved block of producer ids, in one
//! small TOML file under `<data-dir>/meta/`, written through the [`Storage`] trait.
//!
//! Updates never overwrite: each write is a new file `topics-<generation>.toml`, fsynced along with
//! its directory before the previous generation is removed, so a crash at any point leaves at
//! least one whole generation. Each file ends with a CRC32C trailer line over the TOML before
//! it: an empty, torn or short file (a write cut by a full disk or a crash) is not a valid
//! generation, even when what is left happens to parse as TOML. Loading takes the newest
//! generation whose trailer checks and whose TOML parses.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::storage::{Storage, StorageFile};

/// Upper bound on the registry file, so a damaged file cannot make us allocate without limit.
pub const REGISTRY_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// One topic as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    /// The topic id as a hyphenated UUID.
    pub id: String,
    pub partitions: u32,
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

/// Everything the registry persists.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryState {
    /// Producer ids below this may have been handed out; a restart continues from here.
    #[serde(default)]
    pub producer_id_block_end: i64,
    #[serde(default)]
    pub topics: BTreeMap<String, TopicRecord>,
}

/// The last line of every registry file: this prefix, then the CRC32C of every byte before the
/// line, as 8 lowercase hex digits, then a newline.
const CRC_TRAILER_PREFIX: &str = "# crc32c=";
/// The first line of every registry file this version writes, so a torn one is never mistaken
/// for an older file without a trailer.
const FORMAT_HEADER: &str = "# broker topic registry, format 2\n";

/// Splits a registry file into its TOML text after checking the trailer.
fn checked_text(bytes: &[u8]) -> io::Result<&str> {
    let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
    let text = std::str::from_utf8(bytes).map_err(|e| invalid(&e.to_string()))?;
    let body = text
        .strip_suffix('\n')
        .ok_or_else(|| invalid("no trailer line (empty or torn file)"))?;
    let (toml_text, trailer) = match body.rfind('\n') {
        Some(i) => (&text[..=i], &body[i + 1..]),
        None => ("", body),
    };
    let crc_hex = trailer
        .strip_prefix(CRC_TRAILER_PREFIX)
        .ok_or_else(|| invalid("no crc32c trailer (empty or torn file)"))?;
    let crc = u32::from_str_radix(crc_hex, 16).map_err(|_| invalid("bad crc32c trailer"))?;
    if crc32c::crc32c(toml_text.as_bytes()) != crc {
        return Err(invalid("crc32c mismatch"));
    }
    Ok(toml_text)
}

/// A file written before the CRC trailer existed: accepted when it has no trailer at all, parses,
/// and is not empty (new code never writes a file without a trailer, so an empty or short file
/// is a cut write, not a legacy one).
fn legacy(bytes: &[u8]) -> Option<RegistryState> {
    let text = std::str::from_utf8(bytes).ok()?;
    if text.starts_with(FORMAT_HEADER) || text.contains(CRC_TRAILER_PREFIX) {
        return None;
    }
    let state: RegistryState = toml::from_str(text).ok()?;
    (state != RegistryState::default()).then(|| {
        tracing::warn!("loaded a registry generation without a crc32c trailer (older format)");
        state
    })
}

/// Reads and writes registry generations in `dir`.
pub struct Registry<S: Storage> {
    storage: S,
    dir: PathBuf,
    generation: u64,
}

fn file_name(generation: u64) -> String {
    format!("topics-{generation:020}.toml")
}

fn parse_generation(name: &str) -> Option<u64> {
    name.strip_prefix("topics-")?
        .strip_suffix(".toml")?
        .parse()
        .ok()
}

impl<S: Storage> Registry<S> {
    /// Opens the registry in `dir`, returning the state of the newest readable generation.
    pub fn open(storage: S, dir: &Path) -> io::Result<(Self, RegistryState)> {
        storage.create_dir_all(dir)?;
        let mut generations: Vec<u64> = storage
            .list(dir)?
            .iter()
            .filter_map(|n| parse_generation(n))
            .collect();
        generations.sort_unstable();
        let mut registry = Registry {
            storage,
            dir: dir.to_path_buf(),
            generation: 0,
        };
        for &generation in generations.iter().rev() {
            match registry.read(generation) {
                Ok(state) => {
                    registry.generation = generation;
                    return Ok((registry, state));
                }
                Err(e) => {
                    tracing::warn!(generation, error = %e, "skipping unreadable topic registry")
                }
            }
        }
        Ok((registry, RegistryState::default()))
    }

    fn read(&self, generation: u64) -> io::Result<RegistryState> {
        let file = self.storage.open(&self.dir.join(file_name(generation)))?;
        let len = file.len();
        if len > REGISTRY_BYTES_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "registry file too large",
            ));
        }
        let mut buf = vec![0u8; len as usize];
        file.read_at(0, &mut buf)?;
        match checked_text(&buf) {
            Ok(text) => toml::from_str(text)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            Err(e) => legacy(&buf).ok_or(e),
        }
    }

    /// Durably replaces the registry with `state`.
    pub fn write(&mut self, state: &RegistryState) -> io::Result<()> {
        let mut text = FORMAT_HEADER.to_string();
        text.push_str(
            &toml::to_string(state)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?,
        );
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        let crc = crc32c::crc32c(text.as_bytes());
        text.push_str(&format!("{CRC_TRAILER_PREFIX}{crc:08x}\n"));
        let next = self.generation + 1;
        let path = self.dir.join(file_name(next));
        if self.storage.exists(&path) {
            self.storage.remove(&path)?;
        }
        let written = (|| {
            let file = self.storage.open(&path)?;
            file.append(text.as_bytes())?;
            file.sync()?;
            self.storage.sync_dir(&self.dir)
        })();
        if let Err(e) = written {
            // Best effort: a partial generation is never loaded (its trailer cannot check), but
            // there is no reason to leave it lying around.
            let _ = self.storage.remove(&path);
            return Err(e);
        }
        let previous = self.generation;
        self.generation = next;
        debug_assert_eq!(self.read(next).ok().as_ref(), Some(state));
        if previous > 0 {
            self.storage.remove(&self.dir.join(file_name(previous)))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    fn state(topic: &str, partitions: u32) -> RegistryState {
        let mut s = RegistryState {
            producer_id_block_end: 1000,
            ..RegistryState::default()
        };
        s.topics.insert(
            topic.to_string(),
            TopicRecord {
                id: "00000000-0000-0000-0000-000000000001".into(),
                partitions,
                configs: BTreeMap::new(),
            },
        );
        s
    }

    fn newer_generation_with(storage: &MemStorage, dir: &Path, bytes: &[u8]) {
        let (registry, _) = Registry::open(storage.clone(), dir).unwrap();
        let path = dir.join(file_name(registry.generation + 1));
        let file = storage.open(&path).unwrap();
        if !bytes.is_empty() {
            file.append(bytes).unwrap();
        }
        file.sync().unwrap();
        storage.sync_dir(dir).unwrap();
    }

    #[test]
    fn round_trip_and_generations() {
        let storage = MemStorage::new();
        let dir = Path::new("/data/meta");
        let (mut r, empty) = Registry::open(storage.clone(), dir).unwrap();
        assert_eq!(empty, RegistryState::default());
        r.write(&state("a", 3)).unwrap();
        r.write(&state("a", 5)).unwrap();
        let (_, loaded) = Registry::open(storage.clone(), dir).unwrap();
        assert_eq!(loaded, state("a", 5));
        assert_eq!(
            storage.list(dir).unwrap().len(),
            1,
            "older generation removed"
        );
    }

    /// Found by the whole-system simulation: a registry write cut short by a full disk left an
    /// empty newer generation, which parsed as an empty registry; the next start forgot every
    /// topic, auto-creation recreated one with a single partition, and the start after that
    /// removed the other partitions' data as orphans.
    #[test]
    fn empty_or_torn_newer_generation_is_skipped() {
        let storage = MemStorage::new();
        let dir = Path::new("/data/meta");
        let (mut r, _) = Registry::open(storage.clone(), dir).unwrap();
        r.write(&state("a", 3)).unwrap();
        let good = storage.contents(&dir.join(file_name(1))).unwrap();

        newer_generation_with(&storage, dir, b"");
        assert_eq!(
            Registry::open(storage.clone(), dir).unwrap().1,
            state("a", 3)
        );

        storage.remove(&dir.join(file_name(2))).unwrap();
        // A prefix that still parses as TOML (cut at a line end) but lost its trailer.
        let cut = FORMAT_HEADER.len()
            + good[FORMAT_HEADER.len()..]
                .iter()
                .position(|b| *b == b'\n')
                .unwrap()
            + 1;
        newer_generation_with(&storage, dir, &good[..cut]);
        assert_eq!(
            Registry::open(storage.clone(), dir).unwrap().1,
            state("a", 3)
        );

        storage.remove(&dir.join(file_name(2))).unwrap();
        let mut flipped = good.clone();
        let i = flipped.iter().position(|b| *b == b'3').unwrap();
        flipped[i] = b'4';
        newer_generation_with(&storage, dir, &flipped);
        assert_eq!(
            Registry::open(storage.clone(), dir).unwrap().1,
            state("a", 3)
        );
    }

    #[test]
    fn a_file_of_the_older_format_still_loads() {
        let storage = MemStorage::new();
        let dir = Path::new("/data/meta");
        storage.create_dir_all(dir).unwrap();
        let file = storage.open(&dir.join(file_name(1))).unwrap();
        file.append(toml::to_string(&state("old", 2)).unwrap().as_bytes())
            .unwrap();
        file.sync().unwrap();
        assert_eq!(
            Registry::open(storage.clone(), dir).unwrap().1,
            state("old", 2)
        );
    }

    #[test]
    fn a_failed_write_keeps_the_previous_generation() {
        let storage = MemStorage::new();
        let dir = Path::new("/data/meta");
        let (mut r, _) = Registry::open(storage.clone(), dir).unwrap();
        r.write(&state("a", 3)).unwrap();
        storage.set_disk_full(true);
        assert!(r.write(&state("a", 9)).is_err());
        storage.set_disk_full(false);
        assert_eq!(
            Registry::open(storage.clone(), dir).unwrap().1,
            state("a", 3)
        );
        r.write(&state("a", 4)).unwrap();
        assert_eq!(
            Registry::open(storage.clone(), dir).unwrap().1,
            state("a", 4)
        );
    }
}
