//! The registry on disk: every topic's id, partition count and config overrides, and the end of
//! the reserved block of producer ids, in one
//! small TOML file under `<data-dir>/meta/`, written through the [`Storage`] trait.
//!
//! Updates never overwrite: each write is a new file `topics-<generation>.toml`, fsynced along with
//! its directory before the previous generation is removed, so a crash at any point leaves at
//! least one whole generation. Loading takes the newest generation that parses.

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
        let text = String::from_utf8(buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        toml::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
    }

    /// Durably replaces the registry with `state`.
    pub fn write(&mut self, state: &RegistryState) -> io::Result<()> {
        let text = toml::to_string(state)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let next = self.generation + 1;
        let path = self.dir.join(file_name(next));
        if self.storage.exists(&path) {
            self.storage.remove(&path)?;
        }
        let file = self.storage.open(&path)?;
        file.append(text.as_bytes())?;
        file.sync()?;
        self.storage.sync_dir(&self.dir)?;
        let previous = self.generation;
        self.generation = next;
        debug_assert_eq!(self.read(next).ok().as_ref(), Some(state));
        if previous > 0 {
            self.storage.remove(&self.dir.join(file_name(previous)))?;
        }
        Ok(())
    }
}
