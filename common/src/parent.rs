//! Tying a child process's life to its parent's: a child started by a supervisor (the enclave and
//! host children of `frostgate node`) stops when the supervisor is gone, even after SIGKILL.

use std::time::Duration;

/// Resolves when this process's parent has exited (the process was re-parented); never when
/// `watch` is false. Polls every 250 ms.
pub async fn exited(watch: bool) {
    if !watch {
        return std::future::pending().await;
    }
    let parent = nix::unistd::getppid();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        if nix::unistd::getppid() != parent {
            return;
        }
    }
}
