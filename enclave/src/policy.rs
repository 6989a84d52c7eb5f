//! The operator's spending policy (`[policy]` of `enclave.toml`): what this enclave agrees to sign,
//! decided here and nowhere else. The host and the network cannot change it.
//!
//! Invariants:
//! - Every rule is checked before anything is consumed; a refusal is `policy_violation` naming
//!   the rule and the numbers.
//! - The window counters are charged once per charge id (a transaction id for PSBT signing, the
//!   digest for a raw-digest signature) under the engine's one lock, and made durable in the same
//!   commit as the first consumed-nonce marker of that charge (`Record::Charged`), so no restart,
//!   kill -9 or restored database resets them (a restored database is a rollback: refused).
//! - The policy's canonical hash names exactly the rules in force; it is reported by `GetPolicy`,
//!   `frostgate status` and every audit record.
//!
//! Without `[policy]` the enclave is unrestricted (raw digests allowed, no limits) and says so in
//! its canonical text (`unrestricted`) and hash: that is the development default.

use bitcoin::{Address, Network, ScriptBuf};
use frostgate_common::error::{Error, ErrorCode};
use serde::Deserialize;
use std::str::FromStr;

/// `[policy]` as written by the operator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// `bitcoin`, `testnet`, `signet` or `regtest`: destinations of another network are refused.
    pub network: String,
    /// Whether the raw-digest path (a caller-supplied 32-byte message) may be used.
    #[serde(default)]
    pub allow_raw_digest: bool,
    /// Allowed recipients (addresses). Outputs back to the signing key are always allowed.
    #[serde(default)]
    pub destinations: Vec<String>,
    /// Most satoshis per transaction to outputs other than the signing key's.
    pub max_sats_per_tx: Option<u64>,
    /// The rolling window of the two window limits, seconds.
    pub window_secs: Option<u64>,
    /// Most satoshis sent (to outputs other than the signing key's) within the window.
    pub max_sats_per_window: Option<u64>,
    /// Most signed transactions (or raw digests) within the window.
    pub max_signatures_per_window: Option<u64>,
    /// Most fee per transaction, from the `witness_utxo` values.
    pub max_fee_sats: Option<u64>,
}

/// The policy in force, validated.
#[derive(Debug, Clone)]
pub struct Policy {
    network: Option<Network>,
    allow_raw_digest: bool,
    /// (normalized address, its script), sorted by address.
    destinations: Vec<(String, ScriptBuf)>,
    max_sats_per_tx: Option<u64>,
    window_secs: u64,
    max_sats_per_window: Option<u64>,
    max_signatures_per_window: Option<u64>,
    max_fee_sats: Option<u64>,
    text: String,
    hash: [u8; 32],
}

/// What a transaction spends, as the enclave computed it from the PSBT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spend {
    /// Outputs not returning to the signing key: (script, satoshis).
    pub external: Vec<(ScriptBuf, u64)>,
    /// Their sum.
    pub sats: u64,
    /// Inputs minus outputs.
    pub fee: u64,
}

/// The window's state for one check: what was already charged within the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    /// Satoshis charged within the window.
    pub sats: u64,
    /// Charges (transactions or digests) within the window.
    pub count: u64,
}

fn violation(rule: &str, detail: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::PolicyViolation, format!("{rule}: {detail}"))
}

fn config_err(msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::ConfigInvalid, format!("policy: {msg}"))
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "none".into())
}

impl Policy {
    /// No `[policy]`: raw digests allowed, no limits (development default).
    pub fn unrestricted() -> Policy {
        let text = "frostgate/policy/v1\nunrestricted\n".to_string();
        Policy {
            network: None,
            allow_raw_digest: true,
            destinations: Vec::new(),
            max_sats_per_tx: None,
            window_secs: 0,
            max_sats_per_window: None,
            max_signatures_per_window: None,
            max_fee_sats: None,
            hash: sha256(text.as_bytes()),
            text,
        }
    }

    /// Validates `[policy]`: a known network, destinations valid for it, a window for the window
    /// limits.
    pub fn from_config(c: &PolicyConfig) -> Result<Policy, Error> {
        let network = Network::from_core_arg(&c.network)
            .or_else(|_| Network::from_str(&c.network))
            .map_err(|_| config_err(format!("network {:?} (bitcoin, testnet, signet or regtest)", c.network)))?;
        let mut destinations = Vec::new();
        for d in &c.destinations {
            let address = Address::from_str(d)
                .map_err(|e| config_err(format!("destination {d:?}: {e}")))?
                .require_network(network)
                .map_err(|_| config_err(format!("destination {d:?} is not a {network} address")))?;
            destinations.push((address.to_string(), address.script_pubkey()));
        }
        destinations.sort();
        destinations.dedup();
        if destinations.len() > 100 {
            return Err(config_err("at most 100 destinations"));
        }
        let windowed = c.max_sats_per_window.is_some() || c.max_signatures_per_window.is_some();
        let window_secs = match (c.window_secs, windowed) {
            (Some(0), _) => return Err(config_err("window_secs must be positive")),
            (Some(w), _) => w,
            (None, true) => return Err(config_err("max_*_per_window needs window_secs")),
            (None, false) => 0,
        };
        let mut text = format!(
            "frostgate/policy/v1\nnetwork={network}\nallow_raw_digest={}\nmax_sats_per_tx={}\nwindow_secs={window_secs}\n\
             max_sats_per_window={}\nmax_signatures_per_window={}\nmax_fee_sats={}\n",
            c.allow_raw_digest,
            opt(c.max_sats_per_tx),
            opt(c.max_sats_per_window),
            opt(c.max_signatures_per_window),
            opt(c.max_fee_sats),
        );
        for (a, _) in &destinations {
            text.push_str(&format!("destination={a}\n"));
        }
        Ok(Policy {
            network: Some(network),
            allow_raw_digest: c.allow_raw_digest,
            destinations,
            max_sats_per_tx: c.max_sats_per_tx,
            window_secs,
            max_sats_per_window: c.max_sats_per_window,
            max_signatures_per_window: c.max_signatures_per_window,
            max_fee_sats: c.max_fee_sats,
            hash: sha256(text.as_bytes()),
            text,
        })
    }

    /// Whether no `[policy]` is configured.
    pub fn is_unrestricted(&self) -> bool {
        self.network.is_none()
    }

    /// The address of `script` on the policy's network, if it has one.
    pub fn address(&self, script: &ScriptBuf) -> Option<String> {
        self.network.and_then(|n| Address::from_script(script, n).ok()).map(|a| a.to_string())
    }

    /// An output for the audit trail: its address on the policy's network, or its script.
    pub fn describe(&self, script: &ScriptBuf) -> frostgate_common::bounded::Label {
        let s = self.address(script).unwrap_or_else(|| format!("script:{}", script.to_hex_string()));
        frostgate_common::bounded::Label::new(
            s.chars().take(frostgate_common::bounded::Label::MAX_LEN).collect::<String>(),
        )
        .unwrap_or_else(|_| unreachable!("cut to the bound"))
    }

    /// SHA-256 of [`Self::text`].
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }

    /// The canonical text: every rule, one per line, in a fixed order.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The window length in seconds (0: no window limits).
    pub fn window_secs(&self) -> u64 {
        self.window_secs
    }

    /// The raw-digest path.
    pub fn check_raw_digest(&self) -> Result<(), Error> {
        if self.allow_raw_digest {
            Ok(())
        } else {
            Err(violation("allow_raw_digest", "this enclave signs PSBTs only (raw digests are off)"))
        }
    }

    /// The per-transaction rules: destinations, amount and fee.
    pub fn check_spend(&self, spend: &Spend) -> Result<(), Error> {
        if self.network.is_some() {
            for (script, sats) in &spend.external {
                if !self.destinations.iter().any(|(_, s)| s == script) {
                    let to = self.address(script).unwrap_or_else(|| format!("script {}", script.to_hex_string()));
                    return Err(violation("destinations", format!("{sats} sats to {to}, not an allowed destination")));
                }
            }
        }
        if let Some(max) = self.max_sats_per_tx {
            if spend.sats > max {
                return Err(violation("max_sats_per_tx", format!("{} requested, {max} allowed", spend.sats)));
            }
        }
        if let Some(max) = self.max_fee_sats {
            if spend.fee > max {
                return Err(violation("max_fee_sats", format!("fee {} requested, {max} allowed", spend.fee)));
            }
        }
        Ok(())
    }

    /// The window rules for a new charge of `sats` by a key signed as `split` says, given what
    /// this enclave's window already holds. Each limit is the cluster's; this enclave enforces
    /// its share of it ([`Split::share`]).
    pub fn check_window(&self, window: Window, sats: u64, split: Split) -> Result<(), Error> {
        if let Some(max) = self.max_sats_per_window {
            let share = split.share(max);
            let left = share.saturating_sub(window.sats);
            if sats > left {
                return Err(violation(
                    "max_sats_per_window",
                    format!("{sats} requested, {left} left of this enclave's {share} ({split} share of {max})"),
                ));
            }
        }
        if let Some(max) = self.max_signatures_per_window {
            let share = split.share(max);
            if window.count >= share {
                return Err(violation(
                    "max_signatures_per_window",
                    format!("{} of this enclave's {share} used ({split} share of {max})", window.count),
                ));
            }
        }
        Ok(())
    }
}

/// How a key's signings spread over enclaves: each signing takes a share from at least
/// `threshold` of the key's `seats` enclaves, and each enclave counts only its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// Signers per signing (t).
    pub threshold: u16,
    /// Enclaves holding a seat of the key (n).
    pub seats: u16,
}

impl Split {
    /// One enclave alone (t = n = 1): its share is the whole limit.
    pub const WHOLE: Split = Split { threshold: 1, seats: 1 };

    /// This enclave's share of a window limit `w` that must hold for the key whichever signers
    /// sign: the largest `s` with `n * s / t < w + 1`, i.e. `ceil((w + 1) * t / n) - 1`.
    ///
    /// Why it holds: every signing is charged by at least `t` enclaves, and the key's `n`
    /// enclaves together hold at most `n * s`; so the signings in one window total at most
    /// `n * s / t`, which is below `w + 1`. The price: no single spend above `s` (about `t/n`
    /// of the limit) is ever signed, and a fixed signer set can use only `s` per window.
    pub fn share(self, w: u64) -> u64 {
        let (t, n) = (u128::from(self.threshold), u128::from(self.seats));
        if t == 0 || n <= t {
            return w;
        }
        let s = ((u128::from(w) + 1) * t).div_ceil(n) - 1;
        u64::try_from(s).unwrap_or(w).min(w)
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-of-{}", self.threshold, self.seats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> PolicyConfig {
        toml::from_str(&format!("network = \"regtest\"\n{extra}")).expect("toml")
    }

    #[test]
    fn the_hash_names_the_rules_and_only_them() {
        let a = Policy::from_config(&config("max_sats_per_tx = 10")).expect("valid");
        let b = Policy::from_config(&config("max_sats_per_tx = 11")).expect("valid");
        let a2 = Policy::from_config(&config("max_sats_per_tx = 10")).expect("valid");
        assert_ne!(a.hash(), b.hash());
        assert_eq!(a.hash(), a2.hash());
        assert_ne!(a.hash(), Policy::unrestricted().hash());
    }

    #[test]
    fn bad_configurations_are_refused() {
        for bad in [
            "network = \"mainnet2\"",
            "network = \"regtest\"\nmax_sats_per_window = 5",
            "network = \"regtest\"\nwindow_secs = 0",
            // A mainnet address on a regtest policy.
            "network = \"regtest\"\ndestinations = [\"bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr\"]",
            "network = \"regtest\"\nunknown = 1",
        ] {
            let parsed: Result<PolicyConfig, _> = toml::from_str(bad);
            match parsed {
                Err(_) => {}
                Ok(c) => {
                    let e = Policy::from_config(&c).expect_err(bad);
                    assert_eq!(e.code(), ErrorCode::ConfigInvalid, "{bad}");
                }
            }
        }
    }

    #[test]
    fn window_limits_name_the_numbers() {
        let p =
            Policy::from_config(&config("window_secs = 60\nmax_sats_per_window = 100\nmax_signatures_per_window = 2"))
                .expect("valid");
        p.check_window(Window { sats: 40, count: 1 }, 60, Split::WHOLE).expect("fits");
        let e = p.check_window(Window { sats: 40, count: 1 }, 61, Split::WHOLE).expect_err("over");
        assert_eq!(
            e.message(),
            "max_sats_per_window: 61 requested, 60 left of this enclave's 100 (1-of-1 share of 100)"
        );
        let e = p.check_window(Window { sats: 0, count: 2 }, 0, Split::WHOLE).expect_err("count");
        assert_eq!(e.code(), ErrorCode::PolicyViolation);
        // 2-of-3: 67 of 100 here (3 * 67 / 2 < 101), one signature of 2.
        let two_of_three = Split { threshold: 2, seats: 3 };
        p.check_window(Window { sats: 0, count: 0 }, 67, two_of_three).expect("fits");
        p.check_window(Window { sats: 0, count: 0 }, 68, two_of_three).expect_err("over the share");
        p.check_window(Window { sats: 0, count: 1 }, 0, two_of_three).expect_err("one signature of 2");
    }

    /// Every way of spreading signings over the enclaves stays within the limit: a brute force
    /// over small clusters, limits and per-signing amounts, where each signing must fit the
    /// share of every one of `t` signers (greedy on the enclaves with the most room left, which
    /// is the spreading that signs the most).
    #[test]
    fn no_spreading_over_the_enclaves_exceeds_the_limit() {
        for n in 1..=7u16 {
            for t in 1..=n {
                let split = Split { threshold: t, seats: n };
                for w in 0..=40u64 {
                    let share = split.share(w);
                    assert!(share <= w);
                    for amount in 1..=w.max(1) {
                        let mut room = vec![share; usize::from(n)];
                        let mut total = 0u64;
                        loop {
                            room.sort_unstable_by(|a, b| b.cmp(a));
                            if room[usize::from(t) - 1] < amount {
                                break;
                            }
                            for r in room.iter_mut().take(usize::from(t)) {
                                *r -= amount;
                            }
                            total += amount;
                        }
                        assert!(total <= w, "{split}, limit {w}, {amount} per signing: {total} signed");
                    }
                    // And the share is the largest that holds: one more lets a spreading exceed.
                    if share < w {
                        let more = share + 1;
                        assert!(u128::from(n) * u128::from(more) / u128::from(t) > u128::from(w), "{split} {w}");
                    }
                }
            }
        }
    }
}
