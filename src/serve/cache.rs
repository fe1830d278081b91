//! The documents' visual tokens, kept so that further questions about a document skip the vision encoder:
//! least-recently-used first out, bounded by the bytes of the tokens held.

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};

use crate::engine::model::Encoded;

/// A document's identity: the model variant that encoded it (an adapter may change the vision encoder) and the
/// SHA-256 of its content (text or image file bytes, each with its own prefix).
pub type Key = (usize, [u8; 32]);

/// The content hash of a text document or of an image file's bytes.
pub fn content_hash(kind: &str, bytes: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(kind.as_bytes());
    hasher.update([0]);
    hasher.update(bytes);
    hasher.finalize().into()
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Stats {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
    pub bytes: usize,
    pub capacity_bytes: usize,
}

pub struct Cache {
    capacity: usize,
    entries: HashMap<Key, (Encoded, u64)>,
    /// Last-use tick -> key: the first entry is the least recently used.
    order: BTreeMap<u64, Key>,
    tick: u64,
    bytes: usize,
    hits: u64,
    misses: u64,
}

fn size_of(encoded: &Encoded) -> usize {
    encoded.tokens.elem_count() * encoded.tokens.dtype().size_in_bytes()
}

impl Cache {
    pub fn new(capacity: usize) -> Self {
        Self { capacity, entries: HashMap::new(), order: BTreeMap::new(), tick: 0, bytes: 0, hits: 0, misses: 0 }
    }

    /// The entry for `key`, now the most recently used; counts a hit or a miss.
    pub fn get(&mut self, key: &Key) -> Option<Encoded> {
        self.tick += 1;
        match self.entries.get_mut(key) {
            Some((encoded, used)) => {
                self.order.remove(used);
                *used = self.tick;
                self.order.insert(self.tick, *key);
                self.hits += 1;
                Some(encoded.clone())
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    /// Keeps `encoded`, dropping the least recently used entries to stay within the capacity. An entry larger
    /// than the whole capacity is not kept.
    pub fn insert(&mut self, key: Key, encoded: Encoded) {
        let size = size_of(&encoded);
        if size > self.capacity {
            return;
        }
        self.remove(&key);
        while self.bytes + size > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            if let Some((old, _)) = self.entries.remove(&oldest) {
                self.bytes -= size_of(&old);
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, key);
        self.entries.insert(key, (encoded, self.tick));
        self.bytes += size;
    }

    fn remove(&mut self, key: &Key) {
        if let Some((old, used)) = self.entries.remove(key) {
            self.order.remove(&used);
            self.bytes -= size_of(&old);
        }
    }

    /// Empties the cache (the hit and miss counts stay); returns how many entries there were.
    pub fn clear(&mut self) -> usize {
        let n = self.entries.len();
        self.entries.clear();
        self.order.clear();
        self.bytes = 0;
        n
    }

    pub fn stats(&self) -> Stats {
        Stats {
            hits: self.hits,
            misses: self.misses,
            entries: self.entries.len(),
            bytes: self.bytes,
            capacity_bytes: self.capacity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn encoded(rows: usize) -> Encoded {
        // rows x 4 f32 = 16 bytes a row
        Encoded {
            tokens: Tensor::zeros((rows, 4), candle_core::DType::F32, &Device::Cpu).unwrap(),
            pages: 1,
            time: Default::default(),
        }
    }

    fn key(n: u8) -> Key {
        (0, content_hash("text", &[n]))
    }

    #[test]
    fn evicts_the_least_recently_used_within_the_byte_bound() {
        let mut cache = Cache::new(64);
        cache.insert(key(1), encoded(2)); // 32 bytes
        cache.insert(key(2), encoded(1)); // 16
        assert!(cache.get(&key(1)).is_some()); // 1 is now the most recent
        cache.insert(key(3), encoded(2)); // needs 32: 2 goes (least recent), 1 stays
        assert!(cache.get(&key(2)).is_none());
        assert!(cache.get(&key(1)).is_some());
        assert!(cache.get(&key(3)).is_some());
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.bytes, stats.hits, stats.misses), (2, 64, 3, 1));
        cache.insert(key(4), encoded(5)); // larger than the whole cache: not kept, nothing evicted
        assert_eq!(cache.stats().entries, 2);
        assert_eq!(cache.clear(), 2);
        assert_eq!((cache.stats().entries, cache.stats().bytes), (0, 0));
    }

    #[test]
    fn text_and_image_with_the_same_bytes_differ() {
        assert_ne!(content_hash("text", b"abc"), content_hash("image", b"abc"));
        assert_eq!(content_hash("text", b"abc"), content_hash("text", b"abc"));
    }
}
