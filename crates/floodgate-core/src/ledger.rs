//! The usage ledger: every request's record reaches the store, in batches,
//! off the request path, and none is lost or written twice.
//!
//! - Handlers hand records to a bounded channel ([`Ledger::record`] never
//!   blocks on the database). When the channel is full (the writer is behind)
//!   the record is appended to the spill file at once instead.
//! - One task, waking every [`FLUSH_EVERY`], writes what is queued in
//!   transactions of up to [`BATCH`] rows.
//! - When a write fails (the database is down), the batch is appended to the
//!   spill file, an append-only file of JSON lines, synced to disk, and the
//!   writer stops trying the database: it pings it each tick, and once it
//!   answers, replays the spill file and goes back to writing directly.
//! - Every record carries a `record_id` made by the gateway and the store
//!   skips ids it already holds, so a batch that was in fact written before
//!   its answer was lost, then spilled and replayed, is stored once.
//! - Replay moves the spill file aside first (`<spill>.replay`), so records
//!   spilled while a replay runs go to a fresh file; the moved file is
//!   deleted only once all of it is written. A crash in between leaves it in
//!   place and the next start replays it (again idempotently).
//! - On shutdown the task drains the channel to the database, or to the
//!   spill file when the database is down, before it returns.
//! - With the journal on (`database.ledger_journal`, the default), a record
//!   is also appended to a journal segment (`<spill>.journal.<n>`, written
//!   but not synced: it survives the process being killed, not the machine
//!   failing) before it enters the channel. Each tick the writer seals the
//!   segment, then drains the channel, which by then holds every record of
//!   the sealed segment, and deletes the segment once those are stored or
//!   spilled. Segments a killed process left are replayed at the next start
//!   like spill files, and the store skips records it already holds.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::store::{Store, UsageRecord};
use crate::telemetry::{self, metric};

/// Rows per transaction: at 20,000 requests a second a tick brings 5,000.
const BATCH: usize = 4096;
const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// Failed tries of one batch before it goes to the spill file.
const TRIES_BEFORE_SPILL: u32 = 2;
/// One try's limit: a database that hangs counts as down. (A write that in
/// fact lands after its try gave up is spilled too, and skipped at replay.)
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// While the database is down: how often to ask whether it is back, and
/// how long to wait for its answer.
const PROBE_EVERY: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct Ledger {
    tx: mpsc::Sender<UsageRecord>,
    spill: Arc<Spill>,
    journal: Option<Arc<Journal>>,
}

/// The half that writes; run it with [`LedgerWriter::run`].
#[derive(Debug)]
pub struct LedgerWriter {
    rx: mpsc::Receiver<UsageRecord>,
    store: Arc<dyn Store>,
    spill: Arc<Spill>,
    /// The database failed and has not answered since: batches go to the spill file.
    down: bool,
    journal: Option<Arc<Journal>>,
    /// Journal segments an earlier process left, to replay.
    left_over: Vec<PathBuf>,
}

impl Ledger {
    /// A ledger holding at most `buffer` records in memory, spilling to
    /// `spill_path` (created when needed).
    /// `<spill_path>.journal.<n>` with `journal`.
    pub fn new(
        store: Arc<dyn Store>,
        buffer: usize,
        spill_path: &Path,
        journal: bool,
    ) -> (Ledger, LedgerWriter) {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let spill = Arc::new(Spill::new(spill_path.to_path_buf()));
        let (journal, left_over) = if journal {
            let (journal, left_over) = Journal::open(spill_path);
            (Some(Arc::new(journal)), left_over)
        } else {
            (None, Vec::new())
        };
        let ledger = Ledger { tx, spill: spill.clone(), journal: journal.clone() };
        (ledger, LedgerWriter { rx, store, spill, down: false, journal, left_over })
    }

    pub fn record(&self, record: UsageRecord) {
        match &self.journal {
            // Under the journal's lock, so a sealed segment's records are all
            // in the channel by the time the writer drains it.
            Some(journal) => journal.append_then(record, |record| self.send(record)),
            None => self.send(record),
        }
    }

    fn send(&self, record: UsageRecord) {
        match self.tx.try_send(record) {
            Ok(()) => telemetry::gauge(metric::LEDGER_PENDING, &[]).increment(1.0),
            // Not synced to disk here, on the request's path: the writer
            // syncs the file with its next batch, and at shutdown.
            Err(mpsc::error::TrySendError::Full(record)) => {
                metrics::counter!(metric::LEDGER_OVERFLOW).increment(1);
                self.spill.append(std::slice::from_ref(&record), false);
            }
            // Only after shutdown finished; the spill file is replayed at the next start.
            Err(mpsc::error::TrySendError::Closed(record)) => {
                self.spill.append(std::slice::from_ref(&record), true);
            }
        }
    }
}

impl LedgerWriter {
    /// Writes until `shutdown`, then drains what is queued and returns.
    ///
    /// The writer wakes on a timer, not per record: waking it for every
    /// record would cost a cross-thread wake-up per request.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut last_probe = tokio::time::Instant::now();
        // Records an earlier run (or a crash) left behind.
        self.down = !self.replay().await;
        loop {
            let stopping = tokio::select! {
                biased;
                () = shutdown.cancelled() => true,
                () = tokio::time::sleep(FLUSH_EVERY) => false,
            };
            if stopping {
                self.rx.close();
            }
            let sealed = self.journal.as_ref().and_then(|journal| journal.seal());
            // What is queued first: to the store, or while it is down to the
            // spill file, so the buffer keeps draining whatever the database does.
            while let Ok(record) = self.rx.try_recv() {
                batch.push(record);
                if batch.len() >= BATCH {
                    self.write(&mut batch).await;
                }
            }
            self.write(&mut batch).await;
            // Every record of the sealed segment is stored or spilled now.
            if let Some(sealed) = sealed {
                remove(&sealed);
            }
            if self.down {
                // At most once a second, and never waiting long.
                if last_probe.elapsed() >= PROBE_EVERY {
                    last_probe = tokio::time::Instant::now();
                    if matches!(
                        tokio::time::timeout(PROBE_TIMEOUT, self.store.ping()).await,
                        Ok(Ok(()))
                    ) {
                        tracing::info!(
                            "the database answers again; replaying spilled usage records"
                        );
                        self.down = !self.replay().await;
                    }
                }
            } else if self.spill.has_records() {
                // Records that overflowed the buffer.
                self.down = !self.replay().await;
            }
            if stopping {
                self.spill.sync();
                return;
            }
        }
    }

    /// Writes `batch` to the store, or to the spill file when the store
    /// fails; either way the batch is empty afterwards.
    async fn write(&mut self, batch: &mut Vec<UsageRecord>) {
        if batch.is_empty() {
            return;
        }
        let rows = batch.len();
        metrics::gauge!(metric::LEDGER_PENDING).decrement(rows as f64);
        if !self.down {
            for tries in 1..=TRIES_BEFORE_SPILL {
                let written = tokio::time::timeout(WRITE_TIMEOUT, self.store.record_usage(batch))
                    .await
                    .unwrap_or_else(|_| {
                        Err(crate::store::StoreError::Invalid(format!(
                            "no answer in {}",
                            humantime::format_duration(WRITE_TIMEOUT)
                        )))
                    });
                match written {
                    Ok(_) => {
                        metrics::counter!(metric::LEDGER_WRITTEN).increment(rows as u64);
                        batch.clear();
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(%error, rows, tries, "usage ledger write failed");
                        if tries < TRIES_BEFORE_SPILL {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
            tracing::error!(
                path = %self.spill.path.display(),
                "the database is not answering; usage records go to the spill file until it does"
            );
            self.down = true;
        }
        self.spill.append(batch, true);
        batch.clear();
    }

    /// Writes every spilled record to the store. False when the store failed
    /// (what is left stays spilled).
    async fn replay(&mut self) -> bool {
        while let Some(path) = self.left_over.last().cloned() {
            if !self.replay_file(&path).await {
                return false;
            }
            self.left_over.pop();
        }
        while let Some(path) = self.spill.take() {
            if !self.replay_file(&path).await {
                return false;
            }
        }
        true
    }

    async fn replay_file(&mut self, path: &Path) -> bool {
        let path = path.to_path_buf();
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(error) => {
                tracing::error!(%error, path = %path.display(), "cannot read the ledger spill file");
                return true;
            }
        };
        let mut lines = BufReader::new(file).lines();
        let mut batch = Vec::with_capacity(BATCH);
        let mut replayed = 0u64;
        loop {
            batch.clear();
            for line in lines.by_ref().take(BATCH) {
                match line.map_err(|e| e.to_string()).and_then(|l| {
                    serde_json::from_str::<UsageRecord>(&l).map_err(|e| e.to_string())
                }) {
                    Ok(record) => batch.push(record),
                    // A line cut short by a crash mid-write: the one record it held is gone.
                    Err(error) => {
                        tracing::warn!(%error, "skipping an unreadable line in the ledger spill file");
                    }
                }
            }
            if batch.is_empty() {
                break;
            }
            if let Err(error) = self.store.record_usage(&batch).await {
                tracing::warn!(%error, "replaying the ledger spill file failed; will retry");
                // Nothing is lost: the rest of the moved file is kept for the next replay.
                self.spill.keep_remainder(&path, &batch, lines);
                return false;
            }
            replayed += batch.len() as u64;
        }
        metrics::counter!(metric::LEDGER_REPLAYED).increment(replayed);
        remove(&path);
        tracing::info!(records = replayed, path = %path.display(), "replayed usage records");
        true
    }
}

fn remove(path: &Path) {
    if let Err(error) = std::fs::remove_file(path)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::error!(%error, path = %path.display(), "cannot remove a written ledger file");
    }
}

/// The journal: every record since the writer's last tick, in the segment
/// being written, so a process killed between a request and the next batch
/// loses no record.
#[derive(Debug)]
struct Journal {
    /// `<spill>.journal.`; segments are this plus their number.
    stem: std::ffi::OsString,
    segment: Mutex<Segment>,
}

#[derive(Debug)]
struct Segment {
    number: u64,
    /// Opened on the first record after a seal.
    file: Option<File>,
    /// Set once a write failed, so the log says it once per segment.
    failed: bool,
}

impl Journal {
    /// The journal next to `spill_path`, and the segments found there from
    /// an earlier process (to replay), newest first.
    fn open(spill_path: &Path) -> (Journal, Vec<PathBuf>) {
        let mut stem = spill_path.as_os_str().to_owned();
        stem.push(".journal.");
        let mut found: Vec<(u64, PathBuf)> = Vec::new();
        let dir = match spill_path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let prefix = Path::new(&stem)
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let number = name
                    .to_str()
                    .and_then(|name| name.strip_prefix(&prefix))
                    .and_then(|n| n.parse::<u64>().ok());
                if let Some(number) = number {
                    found.push((number, entry.path()));
                }
            }
        }
        found.sort();
        let next = found.last().map_or(0, |(n, _)| n + 1);
        let left_over = found.into_iter().rev().map(|(_, path)| path).collect();
        let segment = Segment { number: next, file: None, failed: false };
        (Journal { stem, segment: Mutex::new(segment) }, left_over)
    }

    fn path(&self, number: u64) -> PathBuf {
        let mut name = self.stem.clone();
        name.push(number.to_string());
        PathBuf::from(name)
    }

    /// Appends `record` to the segment, then hands it to `then` under the
    /// same lock.
    fn append_then(&self, record: UsageRecord, then: impl FnOnce(UsageRecord)) {
        let mut line = Vec::with_capacity(512);
        if serde_json::to_writer(&mut line, &record).is_ok() {
            line.push(b'\n');
        }
        let Ok(mut segment) = self.segment.lock() else {
            then(record);
            return;
        };
        if segment.file.is_none() && !segment.failed {
            let path = self.path(segment.number);
            match OpenOptions::new().create(true).append(true).open(&path) {
                Ok(file) => segment.file = Some(file),
                Err(error) => {
                    segment.failed = true;
                    tracing::error!(%error, path = %path.display(),
                        "cannot open the ledger journal; records are not journaled until the next segment");
                }
            }
        }
        if let Some(file) = segment.file.as_mut()
            && let Err(error) = file.write_all(&line)
        {
            segment.file = None;
            segment.failed = true;
            tracing::error!(%error, "cannot write the ledger journal; records are not journaled until the next segment");
        }
        then(record);
    }

    /// Closes the segment being written, if anything was, and returns its
    /// path: new records go to the next one.
    fn seal(&self) -> Option<PathBuf> {
        let mut segment = self.segment.lock().ok()?;
        segment.failed = false;
        segment.file.take()?;
        let sealed = self.path(segment.number);
        segment.number += 1;
        Some(sealed)
    }
}

/// The append-only spill file.
#[derive(Debug)]
struct Spill {
    path: PathBuf,
    file: Mutex<Option<File>>,
    /// Set on append; cleared when the file is moved aside for replay.
    written: std::sync::atomic::AtomicBool,
}

impl Spill {
    fn new(path: PathBuf) -> Self {
        let written = std::sync::atomic::AtomicBool::new(path.exists());
        Spill { path, file: Mutex::new(None), written }
    }

    fn has_records(&self) -> bool {
        self.written.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn replay_path(&self) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(".replay");
        PathBuf::from(name)
    }

    /// Appends records as JSON lines, synced to disk when `sync`.
    fn append(&self, records: &[UsageRecord], sync: bool) {
        let mut text = Vec::with_capacity(records.len() * 400);
        for record in records {
            if serde_json::to_writer(&mut text, record).is_ok() {
                text.push(b'\n');
            }
        }
        let Ok(mut slot) = self.file.lock() else {
            tracing::error!(records = records.len(), "ledger spill lock poisoned; records lost");
            return;
        };
        if slot.is_none() {
            match OpenOptions::new().create(true).append(true).open(&self.path) {
                Ok(file) => *slot = Some(file),
                Err(error) => {
                    tracing::error!(%error, path = %self.path.display(), records = records.len(),
                        "cannot open the ledger spill file; usage records lost");
                    return;
                }
            }
        }
        if let Some(file) = slot.as_mut() {
            let synced = |file: &mut File| if sync { file.sync_data() } else { Ok(()) };
            match file.write_all(&text).and_then(|()| synced(file)) {
                Ok(()) => {
                    self.written.store(true, std::sync::atomic::Ordering::Relaxed);
                    metrics::counter!(metric::LEDGER_SPILLED).increment(records.len() as u64);
                }
                Err(error) => tracing::error!(%error, path = %self.path.display(),
                    records = records.len(), "cannot write the ledger spill file; usage records lost"),
            }
        }
    }

    fn sync(&self) {
        if let Ok(slot) = self.file.lock()
            && let Some(file) = slot.as_ref()
        {
            let _ = file.sync_all();
        }
    }

    /// Moves the spill file aside for replay (a left-over replay file first)
    /// and returns the file to replay, if any.
    fn take(&self) -> Option<PathBuf> {
        let replay = self.replay_path();
        if replay.exists() {
            return Some(replay);
        }
        let Ok(mut slot) = self.file.lock() else {
            return None;
        };
        self.written.store(false, std::sync::atomic::Ordering::Relaxed);
        if !self.path.exists() {
            return None;
        }
        // Appends after this go to a new file.
        *slot = None;
        match std::fs::rename(&self.path, &replay) {
            Ok(()) => Some(replay),
            Err(error) => {
                tracing::error!(%error, path = %self.path.display(), "cannot move the spill file aside to replay it");
                None
            }
        }
    }

    /// After a failed replay: rewrites the replay file as `batch` (not yet
    /// written) plus the lines not yet read.
    fn keep_remainder(
        &self,
        path: &Path,
        batch: &[UsageRecord],
        rest: std::io::Lines<BufReader<File>>,
    ) {
        let mut text = Vec::new();
        for record in batch {
            if serde_json::to_writer(&mut text, record).is_ok() {
                text.push(b'\n');
            }
        }
        for line in rest.map_while(Result::ok) {
            text.extend_from_slice(line.as_bytes());
            text.push(b'\n');
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let written = File::create(&tmp)
            .and_then(|mut f| f.write_all(&text).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(error) = written {
            // The original replay file is still whole; replaying it again is idempotent.
            tracing::warn!(%error, "cannot shorten the replay file; it will be replayed whole");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn record(i: u32) -> UsageRecord {
        UsageRecord { input_tokens: i, ..crate::store::tests::record(&format!("rec-{i}")) }
    }

    #[tokio::test]
    async fn every_record_is_written_by_the_time_run_returns() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open("sqlite::memory:").await.unwrap());
        let (ledger, writer) = Ledger::new(store.clone(), 100_000, &dir.path().join("spill"), true);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(writer.run(shutdown.clone()));
        for i in 0..1500 {
            ledger.record(record(i));
        }
        shutdown.cancel();
        task.await.unwrap();
        let totals = store.usage_totals().await.unwrap();
        assert_eq!(totals[0].requests, 1500);
        assert_eq!(totals[0].input_tokens, (0..1500i64).sum::<i64>());
        assert!(!dir.path().join("spill").exists());
    }

    #[tokio::test]
    async fn records_of_a_killed_process_are_replayed_from_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let spill = dir.path().join("spill");
        let store = Arc::new(SqliteStore::open("sqlite::memory:").await.unwrap());
        // A process that handed 50 records to its ledger and died before its
        // writer ran: only the journal holds them.
        let (ledger, writer) = Ledger::new(store.clone(), 1000, &spill, true);
        for i in 0..50 {
            ledger.record(record(i));
        }
        drop((ledger, writer));
        assert!(dir.path().join("spill.journal.0").exists());
        // The next process replays them, once, and its own records follow.
        let (ledger, writer) = Ledger::new(store.clone(), 1000, &spill, true);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(writer.run(shutdown.clone()));
        for i in 50..80 {
            ledger.record(record(i));
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.is_empty(), "every journal segment is removed once written: {names:?}");
        shutdown.cancel();
        task.await.unwrap();
        let totals = store.usage_totals().await.unwrap();
        assert_eq!(totals[0].requests, 80);
        assert_eq!(totals[0].input_tokens, (0..80i64).sum::<i64>());
    }

    #[tokio::test]
    async fn a_full_buffer_spills_and_the_spill_is_replayed_once() {
        let dir = tempfile::tempdir().unwrap();
        let spill = dir.path().join("spill");
        let store = Arc::new(SqliteStore::open("sqlite::memory:").await.unwrap());
        // A buffer of 10 with no writer running: 90 of 100 records spill.
        let (ledger, writer) = Ledger::new(store.clone(), 10, &spill, false);
        for i in 0..100 {
            ledger.record(record(i));
        }
        assert_eq!(std::fs::read_to_string(&spill).unwrap().lines().count(), 90);
        // The same records again, as after a crash between write and removal:
        // stored once all the same.
        std::fs::copy(&spill, dir.path().join("spill.replay")).unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(writer.run(shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(600)).await;
        shutdown.cancel();
        task.await.unwrap();
        let totals = store.usage_totals().await.unwrap();
        assert_eq!(totals[0].requests, 100);
        assert_eq!(totals[0].input_tokens, (0..100i64).sum::<i64>());
        assert!(!spill.exists() && !dir.path().join("spill.replay").exists());
    }
}
