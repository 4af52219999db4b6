//! The semantic cache's index: for a chat request whose exact key missed, the
//! answer of the nearest earlier prompt in the same context, when its last
//! user turn is close enough (cosine similarity at or above a threshold).
//!
//! An entry is the embedding of a prompt's last user turn, the *context* (a
//! digest of everything else that must match exactly: alias, namespace, the
//! rest of the conversation, sampling parameters) and the exact-cache key of
//! its answer. Vectors are normalised on insert and lookup, so the inner
//! product is the cosine similarity.
//!
//! The nearest-neighbour graphs are `usearch` (HNSW in C++ behind `cxx`,
//! default features off): built cold on 2 cores it takes 19 s and 21 crates
//! (`cxx` and its build tools), where the pure-Rust `hnsw_rs` takes 26 s and
//! 73 crates (rayon, env_logger, mmap-rs, none of them optional) and cannot
//! delete. `usearch` adds incrementally, removes (reusing the slot), filters
//! during the search, and compiles its C++ with `-O3` even in debug builds.
//!
//! The index is partitioned by context and vector length: a lookup only
//! ever matches within its own context, and filtering one shared graph by
//! context would let the same question asked under many other contexts crowd
//! the candidates out (the filtered-HNSW problem). A partition of at most
//! [`FLAT_LIMIT`] entries is scanned exactly (most contexts are small: a
//! multi-turn conversation is a context of its own); a larger one gets its own
//! HNSW graph, searched with expired entries filtered out during the search,
//! and dropped again when the partition shrinks to [`FLAT_AGAIN`].
//!
//! [`SemanticStore`] keeps entries in Redis, so a new node of a cluster warms
//! its index up with [`SemanticStore::load_all`].

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{PoisonError, RwLock};

use crate::keys::hex;
use crate::state::redis::{RedisConnection, Scan, glob_escape};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

/// A SHA-256-sized digest: a context, or an exact-cache key.
pub type Digest = [u8; 32];

/// A partition of at most this many entries is scanned exactly; above it, it
/// gets an HNSW graph.
pub const FLAT_LIMIT: usize = 64;
/// A partition with a graph drops it when it shrinks to this many entries
/// (below [`FLAT_LIMIT`], so one entry in and out does not rebuild it).
pub const FLAT_AGAIN: usize = 32;
/// Candidates asked of a graph per lookup; the best by exact similarity wins.
const CANDIDATES: usize = 16;

/// One cached prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticEntry {
    /// The model alias, for per-alias clear and stats.
    pub alias: String,
    /// Must match exactly for a hit.
    pub context: Digest,
    /// The embedding of the last user turn. Entries of one alias share a
    /// length; a vector of another length is never matched with them.
    pub vector: Vec<f32>,
    /// The exact-cache key of the answer.
    pub answer_key: Digest,
    /// Unix milliseconds; an entry is returned only before this instant.
    pub expires_at_ms: u64,
}

/// The in-memory index of cached prompts, shared by all requests of a node.
///
/// Lookups take a read lock, so they run in parallel; inserts and removals a
/// write lock. Over capacity, the entry expiring soonest is evicted (an
/// expired one first of all).
pub struct SemanticIndex {
    max_entries: usize,
    inner: RwLock<Inner>,
}

/// A context and a vector length.
type PartitionKey = (Digest, usize);

#[derive(Default)]
struct Inner {
    /// Where each answer key's entry is.
    locations: HashMap<Digest, Location>,
    partitions: HashMap<PartitionKey, Partition>,
    /// `(expires_at_ms, answer_key)` of every entry: the first is evicted.
    by_expiry: BTreeSet<(u64, Digest)>,
    /// Graph keys are never reused, so a graph never confuses a removed
    /// entry with its successor.
    next_id: u64,
}

#[derive(Clone, Copy)]
struct Location {
    partition: PartitionKey,
    id: u64,
}

struct Partition {
    /// By graph key; vectors normalised.
    entries: HashMap<u64, SemanticEntry>,
    graph: Option<Index>,
}

impl fmt::Debug for SemanticIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.read();
        let graphs = inner.partitions.values().filter(|p| p.graph.is_some()).count();
        f.debug_struct("SemanticIndex")
            .field("max_entries", &self.max_entries)
            .field("len", &inner.locations.len())
            .field("partitions", &inner.partitions.len())
            .field("graphs", &graphs)
            .finish()
    }
}

impl SemanticIndex {
    /// An empty index holding at most `max_entries`.
    pub fn new(max_entries: usize) -> Self {
        SemanticIndex { max_entries, inner: RwLock::new(Inner::default()) }
    }

    /// Adds `entry`, replacing the entry with the same `answer_key`. An
    /// entry whose vector is empty, zero or not finite cannot be matched, so
    /// it is not kept (an older entry of its answer key is still removed).
    pub fn insert(&self, mut entry: SemanticEntry) {
        let usable = normalise(&mut entry.vector);
        let mut inner = self.write();
        inner.remove(&entry.answer_key);
        if self.max_entries == 0 || !usable {
            return;
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let key = (entry.context, entry.vector.len());
        let answer_key = entry.answer_key;
        inner.by_expiry.insert((entry.expires_at_ms, answer_key));
        inner.locations.insert(answer_key, Location { partition: key, id });
        inner
            .partitions
            .entry(key)
            .or_insert_with(|| Partition { entries: HashMap::new(), graph: None })
            .add(id, entry);
        while inner.locations.len() > self.max_entries {
            let Some(&(_, soonest)) = inner.by_expiry.first() else { break };
            inner.remove(&soonest);
        }
    }

    /// The best match with similarity >= threshold: (answer_key, cosine
    /// similarity). Only unexpired entries of `context` whose vector has the
    /// length of `vector` are candidates.
    pub fn nearest(
        &self,
        context: &Digest,
        vector: &[f32],
        threshold: f32,
        now_ms: u64,
    ) -> Option<(Digest, f32)> {
        let mut query = vector.to_vec();
        if !normalise(&mut query) {
            return None;
        }
        let inner = self.read();
        let partition = inner.partitions.get(&(*context, query.len()))?;
        let (entry, similarity) = partition.nearest(&query, now_ms)?;
        (similarity >= threshold).then_some((entry.answer_key, similarity))
    }

    /// Forgets the entry of `answer_key`, if there is one.
    pub fn remove(&self, answer_key: &Digest) {
        self.write().remove(answer_key);
    }

    /// Removes every entry of `alias`, or every entry; returns how many.
    pub fn clear(&self, alias: Option<&str>) -> usize {
        let mut inner = self.write();
        let Some(alias) = alias else {
            let removed = inner.locations.len();
            *inner = Inner { next_id: inner.next_id, ..Inner::default() };
            return removed;
        };
        let doomed: Vec<Digest> = inner
            .partitions
            .values()
            .flat_map(|p| p.entries.values())
            .filter(|e| e.alias == alias)
            .map(|e| e.answer_key)
            .collect();
        for answer_key in &doomed {
            inner.remove(answer_key);
        }
        doomed.len()
    }

    /// Entries held, expired ones included until they are evicted.
    pub fn len(&self) -> usize {
        self.read().locations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries held per alias, sorted by alias.
    pub fn len_by_alias(&self) -> Vec<(String, usize)> {
        let inner = self.read();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for entry in inner.partitions.values().flat_map(|p| p.entries.values()) {
            *counts.entry(entry.alias.as_str()).or_default() += 1;
        }
        let mut counts: Vec<(String, usize)> =
            counts.into_iter().map(|(alias, n)| (alias.to_string(), n)).collect();
        counts.sort_unstable();
        counts
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn remove(&mut self, answer_key: &Digest) {
        let Some(location) = self.locations.remove(answer_key) else { return };
        let Some(partition) = self.partitions.get_mut(&location.partition) else { return };
        if let Some(entry) = partition.remove(location.id) {
            self.by_expiry.remove(&(entry.expires_at_ms, *answer_key));
        }
        if partition.entries.is_empty() {
            self.partitions.remove(&location.partition);
        }
    }
}

impl Partition {
    fn add(&mut self, id: u64, entry: SemanticEntry) {
        if let Some(graph) = &self.graph
            && graph_add(graph, id, &entry.vector).is_none()
        {
            // Out of memory, in practice: answer exactly until the next build.
            self.graph = None;
        }
        self.entries.insert(id, entry);
        if self.graph.is_none() && self.entries.len() > FLAT_LIMIT {
            self.graph = self.build_graph();
        }
    }

    fn remove(&mut self, id: u64) -> Option<SemanticEntry> {
        let entry = self.entries.remove(&id)?;
        let len = self.entries.len();
        if len <= FLAT_AGAIN {
            self.graph = None;
        } else if let Some(graph) = &self.graph {
            // A removed slot is reused by the next add; a graph far larger
            // than its partition is rebuilt to give the memory back.
            if graph.remove(id).is_err() || graph.capacity() > 4 * len.max(FLAT_LIMIT) {
                self.graph = self.build_graph();
            }
        }
        Some(entry)
    }

    /// A graph of every entry, or `None` if usearch fails (the partition is
    /// then scanned exactly).
    fn build_graph(&self) -> Option<Index> {
        let dimensions = self.entries.values().next()?.vector.len();
        let options = IndexOptions {
            dimensions,
            metric: MetricKind::IP,
            quantization: ScalarKind::F32,
            // 0: usearch's defaults (connectivity 16, expansion 128 on add, 64 on search).
            connectivity: 0,
            expansion_add: 0,
            expansion_search: 0,
            multi: false,
        };
        let graph = Index::new(&options).ok()?;
        reserve(&graph, self.entries.len().next_power_of_two())?;
        for (id, entry) in &self.entries {
            graph_add(&graph, *id, &entry.vector)?;
        }
        Some(graph)
    }

    /// The unexpired entry most similar to `query` (normalised).
    fn nearest(&self, query: &[f32], now_ms: u64) -> Option<(&SemanticEntry, f32)> {
        let live = |entry: &&SemanticEntry| entry.expires_at_ms > now_ms;
        if let Some(graph) = &self.graph {
            let unexpired =
                |id: u64| self.entries.get(&id).is_some_and(|e| e.expires_at_ms > now_ms);
            // An error (more concurrent searches than the graph has thread
            // slots) or nothing found falls back to the exact scan.
            if let Ok(matches) = graph.filtered_search(query, CANDIDATES, unexpired)
                && let Some(found) = most_similar(
                    query,
                    matches.keys.iter().filter_map(|id| self.entries.get(id)).filter(live),
                )
            {
                return Some(found);
            }
        }
        most_similar(query, self.entries.values().filter(live))
    }
}

fn most_similar<'e>(
    query: &[f32],
    candidates: impl Iterator<Item = &'e SemanticEntry>,
) -> Option<(&'e SemanticEntry, f32)> {
    candidates.map(|entry| (entry, dot(query, &entry.vector))).max_by(|a, b| a.1.total_cmp(&b.1))
}

/// Adds to `graph`, growing it when full; `None` if usearch fails.
fn graph_add(graph: &Index, id: u64, vector: &[f32]) -> Option<()> {
    if graph.size() >= graph.capacity() {
        reserve(graph, (graph.capacity() * 2).max(2 * FLAT_LIMIT))?;
    }
    graph.add(id, vector).ok()
}

/// Capacity for `members`, and a search slot for each thread that may search
/// at once (a search beyond those fails, and is answered by the exact scan).
fn reserve(graph: &Index, members: usize) -> Option<()> {
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get()).max(4);
    graph.reserve_capacity_and_threads(members, threads).ok()
}

/// Scales `vector` to length 1; false if it cannot be (empty, zero, or not
/// finite). Scaled by its largest component first, so that huge or tiny
/// components neither overflow nor underflow.
fn normalise(vector: &mut [f32]) -> bool {
    if !vector.iter().all(|v| v.is_finite()) {
        return false;
    }
    let largest = vector.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if largest == 0.0 {
        return false;
    }
    for value in vector.iter_mut() {
        *value /= largest;
    }
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    for value in vector.iter_mut() {
        *value /= norm;
    }
    true
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>().clamp(-1.0, 1.0)
}

/// The semantic entries in Redis, so that a node joining a cluster warms its
/// index up.
///
/// Each entry is one key, `{prefix}semantic:{alias}:{hex(answer_key)}`,
/// expiring with the entry (`PXAT`). Its value is binary: a version byte
/// (1), the context (32 bytes), the answer key (32), the expiry (u64 ms,
/// little-endian), then the vector as little-endian `f32`s to the end.
#[derive(Debug, Clone)]
pub struct SemanticStore {
    connection: RedisConnection,
    prefix: String,
}

const VERSION: u8 = 1;
/// Version, context, answer key, expiry.
const HEADER: usize = 1 + 32 + 32 + 8;
const SCAN_COUNT: usize = 1000;
/// A hex digest in a key: 64 hex digits.
const DIGEST_HEX: usize = 64;

impl SemanticStore {
    pub fn new(conn: impl Into<RedisConnection>, prefix: &str) -> Self {
        SemanticStore { connection: conn.into(), prefix: prefix.to_string() }
    }

    /// Writes `entry`, expiring at its `expires_at_ms` (an entry already
    /// expired is gone at once).
    pub async fn save(&self, entry: &SemanticEntry) -> redis::RedisResult<()> {
        // Redis refuses a PXAT of 0 or one past i64.
        let at = i64::try_from(entry.expires_at_ms).unwrap_or(i64::MAX).max(1);
        redis::cmd("SET")
            .arg(self.key(&entry.alias, &entry.answer_key))
            .arg(encode(entry))
            .arg("PXAT")
            .arg(at)
            .query_async::<()>(&mut self.connection.clone())
            .await
    }

    /// Every entry under the prefix; a key or value that does not read as an
    /// entry is skipped.
    pub async fn load_all(&self) -> redis::RedisResult<Vec<SemanticEntry>> {
        let mut connection = self.connection.clone();
        let pattern = format!("{}semantic:*", glob_escape(&self.prefix));
        let mut entries = Vec::new();
        let mut scan = Scan::start(&mut connection, &pattern, SCAN_COUNT).await?;
        while let Some(keys) = scan.next::<Vec<u8>>(&mut connection).await? {
            if !keys.is_empty() {
                let values: Vec<Option<Vec<u8>>> =
                    redis::cmd("MGET").arg(&keys).query_async(&mut connection).await?;
                for (key, value) in keys.iter().zip(values) {
                    let Some(value) = value else { continue };
                    if let Some((alias, answer_key)) = self.parse_key(key)
                        && let Some(entry) = decode(alias, &value)
                        && entry.answer_key == answer_key
                    {
                        entries.push(entry);
                    }
                }
            }
        }
        Ok(entries)
    }

    pub async fn remove(&self, alias: &str, answer_key: &Digest) -> redis::RedisResult<()> {
        redis::cmd("UNLINK")
            .arg(self.key(alias, answer_key))
            .query_async::<()>(&mut self.connection.clone())
            .await
    }

    /// Removes every entry of `alias`, or every entry; returns how many keys
    /// went.
    pub async fn clear(&self, alias: Option<&str>) -> redis::RedisResult<u64> {
        let mut connection = self.connection.clone();
        let prefix = glob_escape(&self.prefix);
        // Exactly 64 characters after the alias, so alias `a` leaves `a:b`'s.
        let pattern = match alias {
            Some(alias) => {
                format!("{prefix}semantic:{}:{}", glob_escape(alias), "?".repeat(DIGEST_HEX))
            }
            None => format!("{prefix}semantic:*"),
        };
        let mut removed = 0u64;
        let mut scan = Scan::start(&mut connection, &pattern, SCAN_COUNT).await?;
        while let Some(keys) = scan.next::<Vec<u8>>(&mut connection).await? {
            if !keys.is_empty() {
                let count: u64 =
                    redis::cmd("UNLINK").arg(&keys).query_async(&mut connection).await?;
                removed += count;
            }
        }
        Ok(removed)
    }

    fn key(&self, alias: &str, answer_key: &Digest) -> String {
        format!("{}semantic:{alias}:{}", self.prefix, hex(answer_key))
    }

    /// `(alias, answer_key)` of one of this store's keys.
    fn parse_key<'k>(&self, key: &'k [u8]) -> Option<(&'k str, Digest)> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(self.prefix.as_str())?.strip_prefix("semantic:")?;
        let split = rest.len().checked_sub(DIGEST_HEX + 1)?;
        let (alias, tail) = rest.split_at_checked(split)?;
        Some((alias, unhex(tail.strip_prefix(':')?)?))
    }
}

fn encode(entry: &SemanticEntry) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER + 4 * entry.vector.len());
    bytes.push(VERSION);
    bytes.extend_from_slice(&entry.context);
    bytes.extend_from_slice(&entry.answer_key);
    bytes.extend_from_slice(&entry.expires_at_ms.to_le_bytes());
    for value in &entry.vector {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    bytes
}

fn decode(alias: &str, bytes: &[u8]) -> Option<SemanticEntry> {
    let (&version, rest) = bytes.split_first()?;
    if version != VERSION || bytes.len() < HEADER || !(bytes.len() - HEADER).is_multiple_of(4) {
        return None;
    }
    let (context, rest) = rest.split_first_chunk::<32>()?;
    let (answer_key, rest) = rest.split_first_chunk::<32>()?;
    let (expires, rest) = rest.split_first_chunk::<8>()?;
    let vector: Vec<f32> =
        rest.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    if vector.iter().any(|v| !v.is_finite()) {
        return None;
    }
    Some(SemanticEntry {
        alias: alias.to_string(),
        context: *context,
        vector,
        answer_key: *answer_key,
        expires_at_ms: u64::from_le_bytes(*expires),
    })
}

fn unhex(text: &str) -> Option<Digest> {
    let bytes = text.as_bytes();
    if bytes.len() != DIGEST_HEX {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let mut digest = [0u8; 32];
    for (out, pair) in digest.iter_mut().zip(bytes.chunks_exact(2)) {
        *out = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(digest)
}

#[cfg(test)]
mod tests;
