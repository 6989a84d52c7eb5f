//! When the request log commits a group (both stores' group writers: [`super::writer`] for
//! every write on SQLite, `pg_group.rs` for PostgreSQL's submits and outcomes; its other writes
//! commit on their own): at once when few are writing, a moment later when many are, so that one
//! commit (one fsync, one round trip) holds more writes.
//!
//! The rule: after a group of at least [`BUSY`] writes, the next group waits up to [`WINDOW`]
//! after the writer takes its first write, until it holds as many writes as that group did (the
//! writers of the last group are back); after a smaller group it is committed with what has
//! arrived. A client that waits for each answer before its next write (most do) is then never
//! waited for in vain at low concurrency, where a window would only add latency.
//!
//! Invariants: pacing only delays a commit, by at most [`WINDOW`] after the writer takes the
//! group's first write; it never reorders, drops or merges writes, and every caller is still
//! answered only after the commit that holds its write.
//!
//! Measured (BENCHMARKS.md, "Group commit pacing").

use std::time::Duration;

/// Longest a group waits for more writes after its first.
pub const WINDOW: Duration = Duration::from_millis(3);

/// Writes in one group from which the log counts as busy (many writing at once).
pub const BUSY: usize = 4;

/// How long the next group may wait, and for how many writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    /// Longest wait after the group's first write.
    pub window: Duration,
    /// The group stops waiting once it holds this many writes.
    pub writes: usize,
}

impl Wait {
    /// No wait: the group is what has arrived.
    pub const NONE: Wait = Wait { window: Duration::ZERO, writes: 0 };

    /// Whether a group of `held` writes, `elapsed` after its first, waits for more.
    pub fn more(&self, held: usize, elapsed: Duration) -> bool {
        held < self.writes && elapsed < self.window
    }
}

/// The pacing of one group writer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    last: usize,
}

impl Pacing {
    /// How the next group waits for more writes after its first (see the module's rule).
    pub fn wait(&self) -> Wait {
        match self.last >= BUSY {
            true => Wait { window: WINDOW, writes: self.last },
            false => Wait::NONE,
        }
    }

    /// A group of `writes` was committed (or failed): the next one's wait follows from it.
    pub fn committed(&mut self, writes: usize) {
        self.last = writes;
        super::metrics::global().grouped(writes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_group_waits_only_after_a_busy_one_and_only_for_as_many_writes_as_it_held() {
        let mut p = Pacing::default();
        assert!(!p.wait().more(1, Duration::ZERO), "a fresh writer commits at once");
        p.committed(BUSY - 1);
        assert!(!p.wait().more(1, Duration::ZERO), "a few writing: at once");
        p.committed(BUSY);
        assert_eq!(p.wait(), Wait { window: WINDOW, writes: BUSY }, "busy from BUSY writes");
        p.committed(10);
        let w = p.wait();
        assert_eq!(w, Wait { window: WINDOW, writes: 10 });
        assert!(w.more(1, Duration::ZERO) && w.more(9, WINDOW - MS), "waits for the last group's writers");
        assert!(!w.more(10, MS), "they are back: committed without waiting out the window");
        assert!(!w.more(3, WINDOW), "the window is the longest wait");
        p.committed(2);
        assert!(!p.wait().more(1, Duration::ZERO), "quiet again: at once");
        p.committed(0);
        assert!(!p.wait().more(1, Duration::ZERO));
    }
}
