//! A cluster node's data directory identity, `DIR/meta.properties` (Kafka's file name and
//! keys): the node id the directory belongs to, and a directory id drawn the first time a
//! cluster node used it.
//!
//! - A node refuses a directory another node id wrote: swapped volumes would otherwise hand
//!   one node's logs to another node's replicas.
//! - A node registers with its directory id, so the controller tells a restart from a restart
//!   on a replaced, empty disk (see `MetadataRecord::RegisterBroker`): only the first keeps
//!   its places in ISRs and ELRs.
//!
//! The file is written once and made durable with its directory entry before anything
//! registers with it. A file that does not parse (a crash while it was first written, or a
//! damaged disk) is written anew with a new directory id: the controller then treats this
//! node's copies as lost and they are copied again from the others, which is the safe side.
//! A directory from before directory ids has none and gets one; the controller accepts the
//! first id a broker registers with.

use std::io;
use std::path::Path;

use super::{Storage, StorageFile};

pub const META_PROPERTIES_FILE: &str = "meta.properties";
/// The largest file read back (ours is under 200 bytes).
const META_PROPERTIES_BYTES_MAX: u64 = 4_096;
const VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetaProperties {
    pub node_id: i32,
    pub directory_id: [u8; 16],
}

impl MetaProperties {
    pub fn encode(&self) -> String {
        let hex: String = self
            .directory_id
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!(
            "# Written by the broker when this directory was first used; do not edit or copy.\n\
             version={VERSION}\nnode.id={}\ndirectory.id={hex}\n",
            self.node_id
        )
    }

    /// The properties in `text`, or None unless it holds version 1, a node id and a 32-digit
    /// hex directory id, each once.
    pub fn parse(text: &str) -> Option<MetaProperties> {
        let (mut version, mut node_id, mut directory_id) = (None, None, None);
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line.split_once('=')?;
            let slot_taken = match key.trim() {
                "version" => version.replace(value.trim().parse::<u32>().ok()?).is_some(),
                "node.id" => node_id.replace(value.trim().parse::<i32>().ok()?).is_some(),
                "directory.id" => directory_id.replace(parse_id(value.trim())?).is_some(),
                _ => false,
            };
            if slot_taken {
                return None;
            }
        }
        (version? == VERSION).then_some(())?;
        Some(MetaProperties {
            node_id: node_id.filter(|&n| n >= 0)?,
            directory_id: directory_id?,
        })
    }
}

fn parse_id(hex: &str) -> Option<[u8; 16]> {
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(id)
}

/// A directory id from `seed` (the process's random seed; the simulator's is its run's).
pub fn draw_directory_id(seed: u64) -> [u8; 16] {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&next().to_be_bytes());
    id[8..].copy_from_slice(&next().to_be_bytes());
    id
}

/// What [`load_or_create`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loaded {
    /// The directory's file, naming this node.
    Found(MetaProperties),
    /// None was there (a new or wiped directory, or one from before directory ids), or it did
    /// not parse: a new one is written and durable.
    Created(MetaProperties),
}

impl Loaded {
    pub fn properties(&self) -> MetaProperties {
        match self {
            Loaded::Found(p) | Loaded::Created(p) => *p,
        }
    }
}

/// Reads `dir/meta.properties`, or writes one for `node_id` with a directory id drawn from
/// `seed`. Err when the file names another node, or on an IO error.
pub fn load_or_create<S: Storage>(
    storage: &S,
    dir: &Path,
    node_id: i32,
    seed: u64,
) -> anyhow::Result<Loaded> {
    assert!(node_id >= 0, "cluster nodes have non-negative ids");
    let path = dir.join(META_PROPERTIES_FILE);
    if storage.exists(&path) {
        let file = storage.open(&path)?;
        let len = file.len().min(META_PROPERTIES_BYTES_MAX);
        let mut buf = vec![0u8; len as usize];
        file.read_at(0, &mut buf)?;
        match std::str::from_utf8(&buf)
            .ok()
            .and_then(MetaProperties::parse)
        {
            Some(found) if found.node_id == node_id => return Ok(Loaded::Found(found)),
            Some(found) => anyhow::bail!(
                "{} belongs to node {} (its {META_PROPERTIES_FILE}), and this is node \
                 {node_id}: start node {} on it, or give node {node_id} its own --data-dir",
                dir.display(),
                found.node_id,
                found.node_id
            ),
            None => tracing::warn!(
                path = %path.display(),
                "unreadable {META_PROPERTIES_FILE}: writing a new one; this node's replicas \
                 will be copied again from the others"
            ),
        }
    }
    let created = MetaProperties {
        node_id,
        directory_id: draw_directory_id(seed),
    };
    write(storage, dir, &created)?;
    Ok(Loaded::Created(created))
}

fn write<S: Storage>(storage: &S, dir: &Path, props: &MetaProperties) -> io::Result<()> {
    let path = dir.join(META_PROPERTIES_FILE);
    let file = storage.open(&path)?;
    file.truncate(0)?;
    file.append(props.encode().as_bytes())?;
    file.sync()?;
    storage.sync_dir(dir)?;
    // Paired with the parse on the next start: what is on disk reads back as written.
    debug_assert_eq!(
        {
            let mut buf = vec![0u8; file.len() as usize];
            file.read_at(0, &mut buf).ok();
            std::str::from_utf8(&buf)
                .ok()
                .and_then(MetaProperties::parse)
        },
        Some(*props)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;
    use std::path::PathBuf;

    #[test]
    fn meta_properties_roundtrip_and_refuse_malformed() {
        let p = MetaProperties {
            node_id: 3,
            directory_id: draw_directory_id(42),
        };
        assert_eq!(MetaProperties::parse(&p.encode()), Some(p));
        assert_ne!(draw_directory_id(42), draw_directory_id(43));
        let id = "00112233445566778899aabbccddeeff";
        let ok = format!("version=1\nnode.id=2\ndirectory.id={id}\n");
        assert_eq!(MetaProperties::parse(&ok).map(|p| p.node_id), Some(2));
        for bad in [
            String::new(),
            format!("version=2\nnode.id=2\ndirectory.id={id}\n"),
            format!("node.id=2\ndirectory.id={id}\n"),
            format!("version=1\nnode.id=-1\ndirectory.id={id}\n"),
            format!("version=1\nnode.id=2\nnode.id=3\ndirectory.id={id}\n"),
            "version=1\nnode.id=2\ndirectory.id=0011\n".to_string(),
            format!("version=1\nnode.id=2\ndirectory.id={id}\ngarbage\n"),
            format!("version=1\nnode.id=2\ndirectory.id={}zz\n", &id[..30]),
        ] {
            assert_eq!(MetaProperties::parse(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn meta_properties_created_once_then_found_and_other_nodes_refused() {
        let s = MemStorage::new();
        let dir = PathBuf::from("/data");
        s.create_dir_all(&dir).unwrap();
        let Loaded::Created(first) = load_or_create(&s, &dir, 2, 7).unwrap() else {
            panic!("a new directory gets a new file");
        };
        // A restart (another seed) finds the same id.
        assert_eq!(
            load_or_create(&s, &dir, 2, 8).unwrap(),
            Loaded::Found(first)
        );
        let err = load_or_create(&s, &dir, 3, 9).unwrap_err().to_string();
        assert!(
            err.contains("belongs to node 2") && err.contains("node 3"),
            "{err}"
        );
        // A torn first write: a new file and a new id.
        let f = s.open(&dir.join(META_PROPERTIES_FILE)).unwrap();
        f.truncate(20).unwrap();
        let again = load_or_create(&s, &dir, 2, 10).unwrap();
        assert!(matches!(again, Loaded::Created(p) if p.directory_id != first.directory_id));
        assert_eq!(
            load_or_create(&s, &dir, 2, 11).unwrap(),
            Loaded::Found(again.properties())
        );
    }
}
