//! The attempts this runner holds right now, owned by one service: executions
//! register and deregister themselves, heartbeats list them, and cancel notices,
//! stale notices and shutdown tell them to stop, all through [`Handle`].

use shared::protocol::AttemptRef;
use std::collections::{HashMap, HashSet, hash_map};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A user cancelled the run: stop (gracefully unless forced) and report.
    Cancel { force: bool },
    /// The control plane says this runner no longer holds the attempt: stop and forget it.
    Stale,
    /// The runner is shutting down hard.
    Shutdown,
}

/// What an execution watches to learn that it must stop. Once the registry is gone
/// (the runner returned), the channel is closed and no stop can come any more.
pub type StopSignal = watch::Receiver<Option<StopReason>>;

enum Command {
    Register { attempt: AttemptRef, reply: oneshot::Sender<Option<StopSignal>> },
    Deregister { run_id: Uuid },
    Stop { attempt: AttemptRef, reason: StopReason },
    StopAll { reason: StopReason },
    Snapshot { reply: oneshot::Sender<Vec<AttemptRef>> },
    Held { run_ids: Vec<Uuid>, reply: oneshot::Sender<HashSet<Uuid>> },
}

struct Entry {
    attempt: AttemptRef,
    stop: watch::Sender<Option<StopReason>>,
}

/// The registry service: the only owner of the map of running attempts.
pub struct Attempts {
    commands: mpsc::UnboundedReceiver<Command>,
    handle: Handle,
    held: HashMap<Uuid, Entry>,
}

/// A cheap, cloneable way to talk to [`Attempts`]. Once the service has returned,
/// commands are dropped and queries answer as if nothing were held.
#[derive(Clone)]
pub struct Handle {
    // Unbounded: a command is a few words, and stop/deregister must be sendable from
    // anywhere without waiting (one per attempt start, end or notice).
    commands: mpsc::UnboundedSender<Command>,
}

impl Default for Attempts {
    fn default() -> Self {
        Self::new()
    }
}

impl Attempts {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self { commands: rx, handle: Handle { commands: tx }, held: HashMap::new() }
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Serves commands until `cancel`; the stop signals of attempts still held then close.
    pub async fn run(mut self, cancel: CancellationToken) {
        loop {
            let command = tokio::select! {
                _ = cancel.cancelled() => return,
                command = self.commands.recv() => match command {
                    Some(command) => command,
                    // Cannot happen while `self.handle` lives; ends the loop all the same.
                    None => return,
                },
            };
            self.apply(command);
        }
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Register { attempt, reply } => {
                let signal = match self.held.entry(attempt.run_id) {
                    hash_map::Entry::Occupied(_) => None,
                    hash_map::Entry::Vacant(slot) => {
                        let (stop, rx) = watch::channel(None);
                        slot.insert(Entry { attempt, stop });
                        Some(rx)
                    }
                };
                let _ = reply.send(signal);
            }
            Command::Deregister { run_id } => {
                self.held.remove(&run_id);
            }
            Command::Stop { attempt, reason } => {
                // A stale token (an earlier attempt of the run) is ignored.
                if let Some(entry) = self.held.get(&attempt.run_id)
                    && entry.attempt == attempt
                {
                    entry.stop.send_if_modified(|current| {
                        let first = current.is_none();
                        if first {
                            *current = Some(reason);
                        }
                        first
                    });
                }
            }
            Command::StopAll { reason } => {
                for entry in self.held.values() {
                    let _ = entry.stop.send(Some(reason));
                }
            }
            Command::Snapshot { reply } => {
                let _ = reply.send(self.held.values().map(|e| e.attempt.clone()).collect());
            }
            Command::Held { run_ids, reply } => {
                let _ = reply.send(run_ids.into_iter().filter(|id| self.held.contains_key(id)).collect());
            }
        }
    }
}

impl Handle {
    /// Registers an attempt; the signal tells it when to stop. `None` when its run is
    /// already held (a second copy must not run) or the registry is gone.
    pub async fn register(&self, attempt: AttemptRef) -> Option<StopSignal> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Register { attempt, reply });
        answer.await.ok().flatten()
    }

    pub fn deregister(&self, run_id: Uuid) {
        self.send(Command::Deregister { run_id });
    }

    /// Asks the execution of this exact attempt to stop (the first reason wins).
    pub fn stop(&self, attempt: &AttemptRef, reason: StopReason) {
        self.send(Command::Stop { attempt: attempt.clone(), reason });
    }

    pub fn stop_all(&self, reason: StopReason) {
        self.send(Command::StopAll { reason });
    }

    /// The attempts held now (for heartbeats).
    pub async fn snapshot(&self) -> Vec<AttemptRef> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Snapshot { reply });
        answer.await.unwrap_or_default()
    }

    /// Which of these runs are held now.
    pub async fn held(&self, run_ids: Vec<Uuid>) -> HashSet<Uuid> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Held { run_ids, reply });
        answer.await.unwrap_or_default()
    }

    /// How many attempts are held now.
    pub async fn count(&self) -> usize {
        self.snapshot().await.len()
    }

    fn send(&self, command: Command) {
        // Fails only once the service has returned: nothing is held any more.
        let _ = self.commands.send(command);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(run_id: Uuid, fencing_token: i64) -> AttemptRef {
        AttemptRef { run_id, attempt: 1, fencing_token }
    }

    #[tokio::test]
    async fn registers_once_stops_the_exact_attempt_and_closes_when_done() {
        let service = Attempts::new();
        let attempts = service.handle();
        let cancel = CancellationToken::new();
        let running = tokio::spawn(service.run(cancel.clone()));

        let run = Uuid::new_v4();
        let mut stop = attempts.register(at(run, 7)).await.expect("registered");
        assert!(attempts.register(at(run, 8)).await.is_none(), "one attempt per run");
        assert_eq!(attempts.held(vec![run, Uuid::new_v4()]).await, HashSet::from([run]));
        assert_eq!(attempts.snapshot().await, vec![at(run, 7)]);

        attempts.stop(&at(run, 6), StopReason::Stale);
        attempts.stop(&at(run, 7), StopReason::Cancel { force: true });
        attempts.stop(&at(run, 7), StopReason::Stale);
        stop.changed().await.expect("told to stop");
        assert_eq!(*stop.borrow(), Some(StopReason::Cancel { force: true }), "the first reason wins");

        attempts.deregister(run);
        assert_eq!(attempts.count().await, 0);

        let other = attempts.register(at(Uuid::new_v4(), 1)).await.expect("registered");
        cancel.cancel();
        running.await.expect("no panic");
        let mut other = other;
        assert!(other.changed().await.is_err(), "the signal closes with the registry");
        assert!(attempts.snapshot().await.is_empty());
        assert!(attempts.register(at(Uuid::new_v4(), 1)).await.is_none());
    }
}
