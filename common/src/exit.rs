//! Exit statuses of both binaries (`frostgate`, `frostgate-enclave`): one table, chosen by the
//! error's recovery class so a script or supervisor can act on it without parsing stderr (which
//! still carries the exact code: `error: <code> (recovery: <class>): <message>`).
//!
//! | status | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | `fix_request`: the request or input is wrong; the same command fails the same way |
//! | 2 | the command line or a configuration file is invalid (`config_invalid`; also clap's usage errors) |
//! | 3 | `operator`: this node cannot serve until an operator acts (HSM, tampered store, permissions) |
//! | 4 | `new_attempt`: this signing attempt can never complete; start a new one |
//! | 70 | `internal`: a bug (EX_SOFTWARE) |
//! | 75 | `retry`: transient; run it again later (EX_TEMPFAIL) |

use crate::error::{Error, ErrorCode, RecoveryClass};

/// Success.
pub const SUCCESS: u8 = 0;
/// The request or input is wrong.
pub const FIX_REQUEST: u8 = 1;
/// The command line or a configuration file is invalid.
pub const CONFIG: u8 = 2;
/// An operator must act.
pub const OPERATOR: u8 = 3;
/// Start a new signing attempt.
pub const NEW_ATTEMPT: u8 = 4;
/// A bug.
pub const INTERNAL: u8 = 70;
/// Transient: retry later.
pub const RETRY: u8 = 75;

/// The exit status for a command that failed with `e`.
pub fn status_for(e: &Error) -> u8 {
    match (e.code(), e.recovery_class()) {
        (ErrorCode::ConfigInvalid, _) => CONFIG,
        (ErrorCode::Internal, _) => INTERNAL,
        (_, RecoveryClass::FixRequest) => FIX_REQUEST,
        (_, RecoveryClass::Operator) => OPERATOR,
        (_, RecoveryClass::NewAttempt) => NEW_ATTEMPT,
        (_, RecoveryClass::Retry) => RETRY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_pinned() {
        let status = |c: ErrorCode| status_for(&Error::new(c, "x"));
        assert_eq!(status(ErrorCode::ConfigInvalid), 2);
        assert_eq!(status(ErrorCode::Internal), 70);
        assert_eq!(status(ErrorCode::MalformedMessage), 1);
        assert_eq!(status(ErrorCode::StoreRollbackDetected), 3);
        assert_eq!(status(ErrorCode::NonceAlreadyConsumed), 4);
        assert_eq!(status(ErrorCode::EnclaveUnavailable), 75);
        // Every code maps to one of the documented statuses.
        for c in ErrorCode::ALL {
            assert!([1, 2, 3, 4, 70, 75].contains(&status(*c)), "{}", c.code());
        }
    }
}
