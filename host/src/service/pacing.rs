//! When the request log commits a group (both stores' group writers, [`super::writer`] and
//! `pg_group.rs`): at once after a lone write, a moment later when others are writing, so that
//! one commit (one fsync, one round trip) holds more writes.
//!
//! Invariants: pacing only delays a commit, by at most [`WINDOW`] after the group's first write;
//! it never reorders, drops or merges writes, and every caller is still answered only after the
//! commit that holds its write. A write alone (a quiet log) is committed without delay.
//!
//! Measured (BENCHMARKS.md, "Group commit pacing"): at 32 requests in flight, SQLite's commits
//! went from 2.1 writes each to about 8, and PostgreSQL's from 3.5 to about 10, for 2 ms more
//! per write.

use std::time::Duration;

/// How long a group waits for more writes after its first, when the log is busy.
pub const WINDOW: Duration = Duration::from_millis(2);

/// Writes in one group from which the log counts as busy (others were writing meanwhile).
const BUSY: usize = 2;

/// The pacing of one group writer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    busy: bool,
}

impl Pacing {
    /// How long the next group waits for more writes after its first: [`WINDOW`] when the last
    /// group held several writes, nothing after a lone one.
    pub fn window(&self) -> Duration {
        match self.busy {
            true => WINDOW,
            false => Duration::ZERO,
        }
    }

    /// A group of `writes` was committed (or failed): the next one's window follows from it.
    pub fn committed(&mut self, writes: usize) {
        self.busy = writes >= BUSY;
        super::metrics::global().grouped(writes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_write_is_not_delayed_and_a_busy_log_waits_one_window() {
        let mut p = Pacing::default();
        assert_eq!(p.window(), Duration::ZERO, "a fresh writer commits at once");
        p.committed(1);
        assert_eq!(p.window(), Duration::ZERO, "after a lone write: at once");
        p.committed(2);
        assert_eq!(p.window(), WINDOW, "others were writing: wait for more");
        p.committed(40);
        assert_eq!(p.window(), WINDOW);
        p.committed(1);
        assert_eq!(p.window(), Duration::ZERO, "quiet again: at once");
        p.committed(0);
        assert_eq!(p.window(), Duration::ZERO);
    }
}
