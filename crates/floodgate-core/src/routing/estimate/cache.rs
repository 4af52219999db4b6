//! A per-thread cache of token counts by text.
//!
//! BPE is the dearest step of an estimate (figures in `counter.rs`), and
//! most prompt text was counted moments ago: chat clients send the whole
//! conversation again every turn, and the same system prompt on every
//! conversation. A request never leaves its
//! worker thread, so a table per thread needs no lock.
//!
//! The table is direct-mapped: [`SLOTS`] entries indexed by a 64-bit hash of
//! (tokenizer, text), a newcomer overwriting whatever held its slot. Entries
//! keep the hash and the length, not the text, so a hit costs one pass of the
//! hasher over the text; two texts of one length sharing a 64-bit hash would
//! give one of them the other's count, which costs one misestimated
//! reservation, settled with the real count anyway.

use std::cell::RefCell;
use std::hash::BuildHasher;

use super::Tokenizer;

/// Entries per thread: 16 bytes each, 128 KiB per worker thread.
const SLOTS: usize = 8192;
/// Shorter texts are counted directly, so that the many one-word messages do
/// not evict the long texts that pay.
const MIN_LEN: usize = 32;

#[derive(Clone, Copy, Default)]
struct Slot {
    hash: u64,
    len: u32,
    tokens: u32,
}

struct Table {
    hasher: foldhash::fast::RandomState,
    slots: Box<[Slot]>,
}

thread_local! {
    /// Allocated on a thread's first long text: only serving threads count.
    static TABLE: RefCell<Option<Table>> = const { RefCell::new(None) };
}

/// Where a text's count lives: its hash and length. `None` for a text not
/// worth caching.
#[derive(Clone, Copy)]
pub(super) struct Key {
    hash: u64,
    len: u32,
}

impl Key {
    pub(super) fn new(tokenizer: Tokenizer, text: &str) -> Option<Key> {
        if text.len() < MIN_LEN {
            return None;
        }
        let len = u32::try_from(text.len()).ok()?;
        let hash =
            TABLE.with_borrow_mut(|table| table_of(table).hasher.hash_one((tokenizer, text)));
        Some(Key { hash, len })
    }

    fn slot(self) -> usize {
        // The hasher's low bits are as good as its high ones.
        self.hash as usize % SLOTS
    }
}

fn table_of(table: &mut Option<Table>) -> &mut Table {
    table.get_or_insert_with(|| Table {
        hasher: foldhash::fast::RandomState::default(),
        slots: vec![Slot::default(); SLOTS].into_boxed_slice(),
    })
}

/// The cached count, if this thread counted the text lately.
pub(super) fn get(key: Key) -> Option<u64> {
    TABLE.with_borrow(|table| {
        let slot = table.as_ref()?.slots[key.slot()];
        // Empty slots have length 0, which no key has.
        (slot.hash == key.hash && slot.len == key.len).then_some(u64::from(slot.tokens))
    })
}

pub(super) fn put(key: Key, tokens: u64) {
    let tokens = u32::try_from(tokens).unwrap_or(u32::MAX);
    TABLE.with_borrow_mut(|table| {
        table_of(table).slots[key.slot()] = Slot { hash: key.hash, len: key.len, tokens };
    });
}

#[cfg(test)]
pub(super) fn clear() {
    TABLE.with_borrow_mut(|table| *table = None);
}
