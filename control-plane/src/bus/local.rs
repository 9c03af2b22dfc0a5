//! The in-process bus of the single node: offers in per-pool queues, notices on
//! broadcast channels, and live log batches in one append-only spool file per
//! attempt under `DATA_DIR/live-logs` (so a killed process still has what its
//! runner published, exactly like a JetStream stream, and a restarted runner
//! resumes after it). The embedded runner reaches it through
//! `embedded_runner::link::LocalLink`.

use super::{Error, RawBatch};
use shared::protocol::{AttemptRef, CancelNotice, JobOffer};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, broadcast, watch};
use uuid::Uuid;

/// How long `next_offer` waits before answering "nothing".
const OFFER_WAIT: Duration = Duration::from_secs(5);
/// Spool frame header: first_line u64 LE, fencing token i64 LE, payload length u32 LE.
const FRAME_HEADER: usize = 20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the state consistent; a panic cannot tear it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Default)]
struct Offers {
    queues: HashMap<String, VecDeque<JobOffer>>,
    /// Queued or handed to the runner and not yet settled.
    outstanding: HashSet<(Uuid, i32)>,
}

#[derive(Clone)]
pub struct LocalBus {
    inner: Arc<Inner>,
}

struct Inner {
    spool_dir: PathBuf,
    offers: Mutex<Offers>,
    offered: Notify,
    cancels: broadcast::Sender<(String, CancelNotice)>,
    finished: broadcast::Sender<Uuid>,
    spools: Mutex<HashMap<(Uuid, i32), Arc<Spool>>>,
}

impl LocalBus {
    /// `spool_dir` holds the live logs; it is created if missing.
    pub fn open(spool_dir: PathBuf) -> Result<LocalBus, Error> {
        std::fs::create_dir_all(&spool_dir).map_err(|e| spool_err(&spool_dir, e))?;
        let spool_dir = std::fs::canonicalize(&spool_dir).map_err(|e| spool_err(&spool_dir, e))?;
        Ok(LocalBus {
            inner: Arc::new(Inner {
                spool_dir,
                offers: Mutex::new(Offers::default()),
                offered: Notify::new(),
                cancels: broadcast::channel(256).0,
                finished: broadcast::channel(1024).0,
                spools: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn describe(&self) -> String {
        format!("in-process with the embedded runner (live logs in {})", self.inner.spool_dir.display())
    }

    pub fn offer(&self, pool: &str, run_id: Uuid, attempt: i32) {
        let mut offers = lock(&self.inner.offers);
        if offers.outstanding.insert((run_id, attempt)) {
            offers.queues.entry(pool.to_owned()).or_default().push_back(JobOffer { run_id, attempt });
        }
        drop(offers);
        self.inner.offered.notify_waiters();
    }

    pub fn has_offer(&self, _pool: &str, run_id: Uuid) -> bool {
        lock(&self.inner.offers).outstanding.iter().any(|(id, _)| *id == run_id)
    }

    /// The next offer of `pool`, waiting up to [`OFFER_WAIT`].
    #[cfg(test)]
    async fn next_offer(&self, pool: &str) -> Option<JobOffer> {
        self.next_offers(pool, 1).await.pop()
    }

    /// Up to `max` offers of `pool`: those queued now, or else the first to
    /// come within [`OFFER_WAIT`] (empty when none came). They stay outstanding
    /// until [`LocalBus::settle`]d.
    pub async fn next_offers(&self, pool: &str, max: usize) -> Vec<JobOffer> {
        let deadline = tokio::time::Instant::now() + OFFER_WAIT;
        loop {
            // Register before looking, so an offer in between is not missed.
            let notified = self.inner.offered.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut offers = lock(&self.inner.offers);
                if let Some(queue) = offers.queues.get_mut(pool).filter(|q| !q.is_empty()) {
                    let n = max.max(1).min(queue.len());
                    return queue.drain(..n).collect();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Vec::new();
            }
        }
    }

    /// The runner is done with an offer (claimed or refused for good).
    pub fn settle(&self, job: &JobOffer) {
        lock(&self.inner.offers).outstanding.remove(&(job.run_id, job.attempt));
    }

    /// Puts an offer back at the end of its pool's queue.
    pub fn requeue(&self, pool: &str, job: JobOffer) {
        lock(&self.inner.offers).queues.entry(pool.to_owned()).or_default().push_back(job);
        self.inner.offered.notify_waiters();
    }

    pub fn notify_cancel(&self, runner_id: &str, notice: &CancelNotice) {
        let _ = self.inner.cancels.send((runner_id.to_owned(), notice.clone()));
    }

    /// Every cancel notice from now on, with the runner it is for.
    pub fn cancel_notices(&self) -> broadcast::Receiver<(String, CancelNotice)> {
        self.inner.cancels.subscribe()
    }

    pub fn notify_finished(&self, run_id: Uuid) {
        let _ = self.inner.finished.send(run_id);
    }

    pub fn finished_events(&self, run_id: Uuid) -> FinishedEvents {
        FinishedEvents { run_id, rx: self.inner.finished.subscribe() }
    }

    /// The attempt's spool, loaded from disk if an earlier process left one.
    fn spool(&self, run_id: Uuid, attempt: i32) -> Result<Arc<Spool>, Error> {
        let mut spools = lock(&self.inner.spools);
        if let Some(spool) = spools.get(&(run_id, attempt)) {
            return Ok(spool.clone());
        }
        let spool = Arc::new(Spool::load(self.spool_path(run_id, attempt))?);
        spools.insert((run_id, attempt), spool.clone());
        Ok(spool)
    }

    pub async fn purge_log(&self, run_id: Uuid, attempt: i32) -> Result<(), Error> {
        let spool = lock(&self.inner.spools).remove(&(run_id, attempt));
        let path = self.spool_path(run_id, attempt);
        if let Some(spool) = spool {
            spool.purge();
        }
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(spool_err(&path, e)),
        }
    }

    /// A reader of what is stored now. It does not register the spool (unlike a
    /// follower, it needs no wake-ups), so reading an archived attempt leaves nothing behind.
    pub async fn log_cursor(&self, run_id: Uuid, attempt: i32) -> Result<LogCursor, Error> {
        let known = lock(&self.inner.spools).get(&(run_id, attempt)).cloned();
        let spool = match known {
            Some(spool) => spool,
            None => Arc::new(Spool::load(self.spool_path(run_id, attempt))?),
        };
        Ok(LogCursor { spool, next: 0 })
    }

    fn spool_path(&self, run_id: Uuid, attempt: i32) -> PathBuf {
        self.inner.spool_dir.join(format!("{run_id}.{attempt}.batches"))
    }

    pub async fn follow_log(&self, run_id: Uuid, attempt: i32) -> Result<LogFollower, Error> {
        let spool = self.spool(run_id, attempt)?;
        let grown = spool.grown.subscribe();
        Ok(LogFollower { cursor: LogCursor { spool, next: 0 }, grown })
    }

    /// Appends a batch to the attempt's spool (a re-sent or late batch is skipped).
    pub fn append(&self, at: &AttemptRef, first_line: u64, payload: &[u8]) -> Result<(), Error> {
        self.spool(at.run_id, at.attempt)?.append(at.fencing_token, first_line, payload)
    }
}

fn spool_err(path: &Path, source: std::io::Error) -> Error {
    Error::Spool { path: path.display().to_string(), source }
}

pub struct FinishedEvents {
    run_id: Uuid,
    rx: broadcast::Receiver<Uuid>,
}

impl FinishedEvents {
    pub async fn next(&mut self) {
        loop {
            match self.rx.recv().await {
                Ok(id) if id == self.run_id => return,
                Ok(_) => {}
                // Missed some events: maybe ours; the caller re-checks the run.
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    }
}

fn decode_frame_header(header: &[u8; FRAME_HEADER]) -> (u64, i64, u32) {
    let mut first_line = [0u8; 8];
    first_line.copy_from_slice(&header[0..8]);
    let mut token = [0u8; 8];
    token.copy_from_slice(&header[8..16]);
    let mut len = [0u8; 4];
    len.copy_from_slice(&header[16..20]);
    (u64::from_le_bytes(first_line), i64::from_le_bytes(token), u32::from_le_bytes(len))
}

#[derive(Clone, Copy)]
struct Frame {
    /// Where the payload starts in the file.
    offset: u64,
    len: u32,
    first_line: u64,
    token: i64,
}

/// One attempt's live log: an append-only file of framed batches and their index.
struct Spool {
    path: PathBuf,
    state: Mutex<SpoolState>,
    /// Number of frames, bumped on every append (and on purge) to wake followers.
    grown: watch::Sender<usize>,
}

struct SpoolState {
    writer: Option<std::fs::File>,
    reader: Option<Arc<std::fs::File>>,
    frames: Vec<Frame>,
    end: u64,
    purged: bool,
    /// Highest first line written per fencing token: a re-sent batch is skipped.
    last_first_line: HashMap<i64, u64>,
}

impl Spool {
    /// Indexes an existing file (cutting off a frame torn by a crash) or starts empty.
    fn load(path: PathBuf) -> Result<Spool, Error> {
        let mut state = SpoolState {
            writer: None,
            reader: None,
            frames: Vec::new(),
            end: 0,
            purged: false,
            last_first_line: HashMap::new(),
        };
        match std::fs::File::open(&path) {
            Ok(file) => {
                // Only the frame headers are read: a spool can hold a large log.
                let size = file.metadata().map_err(|e| spool_err(&path, e))?.len();
                let mut at = 0u64;
                let mut header = [0u8; FRAME_HEADER];
                while size - at >= FRAME_HEADER as u64 {
                    file.read_exact_at(&mut header, at).map_err(|e| spool_err(&path, e))?;
                    let (first_line, token, len) = decode_frame_header(&header);
                    if size - at - (FRAME_HEADER as u64) < u64::from(len) {
                        break;
                    }
                    state.frames.push(Frame { offset: at + FRAME_HEADER as u64, len, first_line, token });
                    state.last_first_line.insert(token, first_line);
                    at += FRAME_HEADER as u64 + u64::from(len);
                }
                state.end = at;
                if at < size {
                    tracing::warn!(path = %path.display(), torn_bytes = size - at, "cutting off a torn log batch");
                    let file = std::fs::OpenOptions::new().write(true).open(&path).map_err(|e| spool_err(&path, e))?;
                    file.set_len(at).map_err(|e| spool_err(&path, e))?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(spool_err(&path, e)),
        }
        let frames = state.frames.len();
        Ok(Spool { path, state: Mutex::new(state), grown: watch::channel(frames).0 })
    }

    fn append(&self, token: i64, first_line: u64, payload: &[u8]) -> Result<(), Error> {
        let len = u32::try_from(payload.len()).map_err(|_| Error::CorruptSpool {
            path: self.path.display().to_string(),
            message: "batch larger than 4 GiB".into(),
        })?;
        let mut state = lock(&self.state);
        if state.purged {
            // Archived already: late batches of a runner that lost the attempt change nothing.
            return Ok(());
        }
        if state.last_first_line.get(&token).is_some_and(|last| first_line <= *last) {
            return Ok(());
        }
        if state.writer.is_none() {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| spool_err(&self.path, e))?;
            state.writer = Some(file);
        }
        let mut frame = Vec::with_capacity(FRAME_HEADER + payload.len());
        frame.extend_from_slice(&first_line.to_le_bytes());
        frame.extend_from_slice(&token.to_le_bytes());
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(payload);
        if let Some(writer) = state.writer.as_mut() {
            writer.write_all(&frame).map_err(|e| spool_err(&self.path, e))?;
        }
        let offset = state.end + FRAME_HEADER as u64;
        state.end += frame.len() as u64;
        state.frames.push(Frame { offset, len, first_line, token });
        state.last_first_line.insert(token, first_line);
        let count = state.frames.len();
        drop(state);
        self.grown.send_replace(count);
        Ok(())
    }

    fn purge(&self) {
        let mut state = lock(&self.state);
        state.purged = true;
        state.writer = None;
        let count = state.frames.len();
        drop(state);
        self.grown.send_replace(count);
    }

    /// Frame `index`, if written yet, with a handle to read it.
    fn frame(&self, index: usize) -> Result<Option<(Frame, Arc<std::fs::File>)>, Error> {
        let mut state = lock(&self.state);
        let Some(frame) = state.frames.get(index).copied() else { return Ok(None) };
        if state.reader.is_none() {
            let file = std::fs::File::open(&self.path).map_err(|e| spool_err(&self.path, e))?;
            state.reader = Some(Arc::new(file));
        }
        Ok(state.reader.clone().map(|r| (frame, r)))
    }

    fn is_purged(&self) -> bool {
        lock(&self.state).purged
    }
}

pub struct LogCursor {
    spool: Arc<Spool>,
    next: usize,
}

impl LogCursor {
    pub async fn next_batch(&mut self) -> Result<Option<RawBatch>, Error> {
        let Some((frame, file)) = self.spool.frame(self.next)? else { return Ok(None) };
        let path = self.spool.path.clone();
        let payload = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; frame.len as usize];
            file.read_exact_at(&mut buf, frame.offset).map(|()| buf)
        })
        .await
        .map_err(|e| spool_err(&path, std::io::Error::other(e)))?
        .map_err(|e| spool_err(&path, e))?;
        self.next += 1;
        Ok(Some(RawBatch { first_line: Some(frame.first_line), token: Some(frame.token), payload: payload.into() }))
    }
}

pub struct LogFollower {
    cursor: LogCursor,
    grown: watch::Receiver<usize>,
}

impl LogFollower {
    pub async fn next(&mut self) -> Option<Result<RawBatch, Error>> {
        loop {
            match self.cursor.next_batch().await {
                Ok(Some(batch)) => return Some(Ok(batch)),
                Ok(None) if self.cursor.spool.is_purged() => return None,
                Ok(None) => {
                    if self.grown.changed().await.is_err() {
                        return None;
                    }
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fastflow-local-bus-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn at(run_id: Uuid, token: i64) -> AttemptRef {
        AttemptRef { run_id, attempt: 1, fencing_token: token }
    }

    async fn all_batches(bus: &LocalBus, run_id: Uuid) -> Vec<(u64, i64, Vec<u8>)> {
        let mut cursor = bus.log_cursor(run_id, 1).await.expect("cursor");
        let mut out = Vec::new();
        while let Some(b) = cursor.next_batch().await.expect("batch") {
            out.push((b.first_line.expect("line"), b.token.expect("token"), b.payload.to_vec()));
        }
        out
    }

    #[tokio::test]
    async fn batches_survive_a_restart_and_a_torn_tail_is_cut_off() {
        let dir = temp_dir();
        let run_id = Uuid::new_v4();
        let bus = LocalBus::open(dir.clone()).expect("open");
        bus.append(&at(run_id, 1), 1, b"one").expect("append");
        bus.append(&at(run_id, 1), 2, b"two").expect("append");
        // A re-sent batch (same first line) is stored once.
        bus.append(&at(run_id, 1), 2, b"two").expect("append");
        bus.append(&at(run_id, 2), 1, b"other token").expect("append");
        drop(bus);
        // A crash in the middle of a write leaves half a frame.
        let path = dir.join(format!("{run_id}.1.batches"));
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).expect("spool file");
        file.write_all(&[7u8; FRAME_HEADER - 3]).expect("write");
        drop(file);

        let bus = LocalBus::open(dir.clone()).expect("reopen");
        let expected = vec![(1, 1, b"one".to_vec()), (2, 1, b"two".to_vec()), (1, 2, b"other token".to_vec())];
        assert_eq!(all_batches(&bus, run_id).await, expected);
        // Appending after the cut continues a well-formed file.
        bus.append(&at(run_id, 1), 3, b"three").expect("append");
        drop(bus);
        let bus = LocalBus::open(dir.clone()).expect("reopen");
        assert_eq!(all_batches(&bus, run_id).await.len(), 4);
        bus.purge_log(run_id, 1).await.expect("purge");
        assert!(!path.exists(), "purge removes the spool file");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn a_follower_gets_batches_as_they_come_and_ends_at_purge() {
        let dir = temp_dir();
        let run_id = Uuid::new_v4();
        let bus = LocalBus::open(dir.clone()).expect("open");
        let mut follower = bus.follow_log(run_id, 1).await.expect("follow");
        let writer = bus.clone();
        tokio::spawn(async move {
            for line in 1..=3u64 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                writer.append(&at(run_id, 5), line, format!("batch {line}").as_bytes()).expect("append");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            writer.purge_log(run_id, 1).await.expect("purge");
        });
        let mut seen = Vec::new();
        while let Some(batch) = tokio::time::timeout(Duration::from_secs(5), follower.next()).await.expect("in time") {
            seen.push(batch.expect("batch").first_line.expect("line"));
        }
        assert_eq!(seen, vec![1, 2, 3]);
        // Late batches of an archived attempt are dropped.
        bus.append(&at(run_id, 5), 4, b"late").expect("append");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn offers_are_queued_once_per_attempt_and_come_back_when_retried() {
        let bus = LocalBus::open(temp_dir()).expect("open");
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        bus.offer("default", a, 1);
        bus.offer("default", a, 1);
        bus.offer("gpu", b, 1);
        assert!(bus.has_offer("default", a) && bus.has_offer("gpu", b));
        let first = bus.next_offer("default").await.expect("an offer");
        assert_eq!((first.run_id, first.attempt), (a, 1));
        // Still outstanding until settled; nothing else for this pool.
        assert!(bus.has_offer("default", a));
        tokio::time::pause();
        assert!(bus.next_offer("default").await.is_none(), "the duplicate offer was dropped");
        tokio::time::resume();
        bus.requeue("default", first.clone());
        let again = bus.next_offer("default").await.expect("the offer again");
        bus.settle(&again);
        assert!(!bus.has_offer("default", a));
        // A waiting runner is woken by a new offer.
        let waiter = {
            let bus = bus.clone();
            tokio::spawn(async move { bus.next_offer("default").await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        bus.offer("default", a, 2);
        let woken = waiter.await.expect("task").expect("an offer");
        assert_eq!(woken.attempt, 2);
    }
}
