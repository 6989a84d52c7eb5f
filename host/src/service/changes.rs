//! Announcements of the changes made to requests here, one channel per request: a wait hears
//! its own request's changes and is not woken by anyone else's.
//!
//! Invariant: a change announced after [`Changes::subscribe`] returned reaches that
//! subscription (or, past its capacity, makes it lag: the waiter then reads the log). A
//! request's channel exists while it has a subscriber; an announcement with none is dropped.

use super::log::Record;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

/// A request: (client, request id).
pub type RequestKey = (String, String);

/// Announcements a request's channel holds for a subscriber that has not read them yet.
const CAPACITY: usize = 4;

/// A change to a request made here.
#[derive(Debug, Clone)]
pub struct Change {
    /// Its final record as stored, when the change stored one.
    pub stored: Option<Arc<Record>>,
}

/// The channels of the requests someone waits for.
#[derive(Debug, Default)]
pub struct Changes {
    channels: Mutex<HashMap<RequestKey, broadcast::Sender<Change>>>,
}

impl Changes {
    fn channels(&self) -> MutexGuard<'_, HashMap<RequestKey, broadcast::Sender<Change>>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hears every change to `client`'s request `request_id` announced from now on.
    pub fn subscribe(self: &Arc<Self>, client: &str, request_id: &str) -> Subscription {
        let key = (client.to_string(), request_id.to_string());
        let rx = self.channels().entry(key.clone()).or_insert_with(|| broadcast::channel(CAPACITY).0).subscribe();
        Subscription { rx: Some(rx), key, changes: self.clone() }
    }

    /// Announces a change to the request `key` to its subscribers.
    pub fn announce(&self, key: &RequestKey, change: Change) {
        if let Some(tx) = self.channels().get(key) {
            let _ = tx.send(change);
        }
    }

    /// How many requests have a channel (tests: none is left behind).
    pub fn open_channels(&self) -> usize {
        self.channels().len()
    }
}

/// One subscriber of one request's changes; its channel goes with its last subscriber.
#[derive(Debug)]
pub struct Subscription {
    /// Taken only by drop, under the channels' lock.
    rx: Option<broadcast::Receiver<Change>>,
    key: RequestKey,
    changes: Arc<Changes>,
}

impl Subscription {
    /// Waits for the next change, until `until`: the final record as stored when the change
    /// carried it; `None` at `until`, when the channel lagged, or when the change carried none.
    pub async fn next(&mut self, until: tokio::time::Instant) -> Option<Arc<Record>> {
        let rx = self.rx.as_mut()?;
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Ok(change)) => change.stored,
            _ => None,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // The receiver goes under the lock, so the last of several subscribers leaving at once
        // sees a count of zero and removes the channel (no channel is left behind).
        let mut channels = self.changes.channels();
        drop(self.rx.take());
        if channels.get(&self.key).is_some_and(|tx| tx.receiver_count() == 0) {
            channels.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::request::{Outcome, State, Submission};
    use super::*;
    use std::time::Duration;

    fn soon() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_millis(200)
    }

    fn key(client: &str, id: &str) -> RequestKey {
        (client.into(), id.into())
    }

    /// A change that stored `client`'s request `id`, signed.
    fn signed(client: &str, id: &str) -> Change {
        let submission = Submission {
            request_id: id.into(),
            key: "ab".repeat(32),
            digest: Some("cd".repeat(32)),
            merkle_root: None,
            untweaked: false,
            path: None,
            psbt: None,
            labels: Default::default(),
        };
        let record = Record {
            seq: 7,
            client: client.into(),
            submission,
            state: State::Signed,
            outcome: Outcome::default(),
            created_ms: 1,
            updated_ms: 2,
            lease_epoch: 1,
            first_sent: true,
        };
        Change { stored: Some(Arc::new(record)) }
    }

    #[tokio::test]
    async fn a_subscriber_hears_its_own_request_only_and_its_channel_goes_with_it() {
        let changes = Arc::new(Changes::default());
        let mut a = changes.subscribe("alice", "r1");
        let mut a2 = changes.subscribe("alice", "r1");
        let mut b = changes.subscribe("bob", "r1");
        assert_eq!(changes.open_channels(), 2);
        changes.announce(&key("alice", "r1"), signed("alice", "r1"));
        // Heard by both of alice's subscribers, with the record as stored...
        for s in [&mut a, &mut a2] {
            let heard = s.next(soon()).await.expect("heard");
            assert_eq!((heard.client.as_str(), heard.state), ("alice", State::Signed));
        }
        // ...and not by bob's request of the same id, which waits until its deadline.
        let started = tokio::time::Instant::now();
        assert!(b.next(soon()).await.is_none());
        assert!(started.elapsed() >= Duration::from_millis(200));
        drop(a);
        assert_eq!(changes.open_channels(), 2, "alice's channel stays while a2 listens");
        drop(a2);
        assert_eq!(changes.open_channels(), 1);
        drop(b);
        assert_eq!(changes.open_channels(), 0);
        // Nobody listens: the announcement is dropped, no channel is made.
        changes.announce(&key("alice", "r1"), signed("alice", "r1"));
        assert_eq!(changes.open_channels(), 0);
    }

    #[test]
    fn subscribers_of_one_request_leaving_at_once_leave_no_channel_behind() {
        let changes = Arc::new(Changes::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let changes = changes.clone();
                std::thread::spawn(move || {
                    for _ in 0..2_000 {
                        let s = changes.subscribe("alice", "r1");
                        changes.announce(&key("alice", "r1"), Change { stored: None });
                        drop(s);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(changes.open_channels(), 0);
    }

    #[tokio::test]
    async fn a_subscriber_that_lags_is_answered_none_then_hears_what_is_left() {
        let changes = Arc::new(Changes::default());
        let mut a = changes.subscribe("alice", "r1");
        for _ in 0..=CAPACITY {
            changes.announce(&key("alice", "r1"), signed("alice", "r1"));
        }
        // One announcement too many: the lag is answered None (the waiter reads the log).
        assert!(a.next(soon()).await.is_none());
        for _ in 0..CAPACITY {
            assert!(a.next(soon()).await.is_some());
        }
        assert!(a.next(soon()).await.is_none());
    }
}
