//! The daemons a development cluster starts (nodes, token daemons) are tracked by pid files: one
//! liveness rule for all of them.

use std::path::Path;

/// The pid in `pid_file`, if that process runs.
pub fn alive(pid_file: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
    running(pid).then_some(pid)
}

/// Whether the process exists and is not a zombie (an exited daemon whose parent, the CLI that
/// started it, is gone and which nobody reaped yet).
pub fn running(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Field 3, after the parenthesized command name, is the state.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    matches!(state, Some(s) if s != "Z" && s != "X")
}
