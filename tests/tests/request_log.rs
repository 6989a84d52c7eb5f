//! The request log's rules on both stores, through the one interface the service uses
//! (`RequestLog`): embedded SQLite, and a real PostgreSQL server. Idempotency and conflicts per
//! client, cancel until the first signing request, claims fenced by their lease epoch, takeover
//! of an expired lease, fairness between clients, the bound on open requests, and (PostgreSQL)
//! two instances claiming at once never sharing a request, and the server gone: store_unavailable,
//! then recovered with nothing accepted lost.

use frostgate_common::error::ErrorCode;
use frostgate_host::service::log::{ClaimAtAccept, Filter, Record, Submitted};
use frostgate_host::service::request::{Outcome, State, Submission};
use frostgate_host::service::store::RequestLog;
use frostgate_tests::postgres::Postgres;
use std::collections::{BTreeMap, HashSet};

fn submission(id: &str, digest: u8) -> Submission {
    Submission {
        request_id: id.into(),
        key: "ab".repeat(32),
        digest: Some(format!("{digest:02x}").repeat(32)),
        merkle_root: None,
        untweaked: false,
        path: None,
        psbt: None,
        labels: BTreeMap::new(),
    }
}

/// `client`'s new request `id`, claimed at its acceptance (a worker "w" holds it, leased a minute).
async fn claimed(log: &RequestLog, client: &str, id: &str, digest: u8) -> Record {
    let at = ClaimAtAccept { owner: "w".into(), lease_ms: 60_000, ready: true };
    match log.submit(client, &submission(id, digest), 1000, Some(at)).await.expect(id) {
        Submitted::Accepted(r) => r,
        other => panic!("{other:?}"),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

async fn rules(log: &RequestLog) {
    let none = HashSet::new;
    // Idempotency per client; another body conflicts; another client may reuse the id.
    let Submitted::Accepted(a) = log.submit("alice", &submission("r1", 1), 3, None).await.expect("new") else {
        panic!()
    };
    let Submitted::Existing(again) = log.submit("alice", &submission("r1", 1), 3, None).await.expect("again") else {
        panic!()
    };
    assert_eq!(a.seq, again.seq);
    assert_eq!(
        log.submit("alice", &submission("r1", 2), 3, None).await.expect_err("body").code(),
        ErrorCode::RequestConflict
    );
    assert!(matches!(log.submit("bob", &submission("r1", 2), 3, None).await.expect("bob"), Submitted::Accepted(_)));
    assert!(log.get("carol", "r1").await.expect("get").is_none());
    assert_eq!(log.cancel("carol", "r1").await.expect_err("not hers").code(), ErrorCode::RequestUnknown);
    assert_eq!(log.list("alice", Filter { limit: 10, ..Filter::default() }).await.expect("list").len(), 1);
    // The bound on open requests.
    log.submit("alice", &submission("r2", 2), 3, None).await.expect("r2");
    log.submit("alice", &submission("r3", 3), 3, None).await.expect("r3");
    assert_eq!(
        log.submit("alice", &submission("r4", 4), 3, None).await.expect_err("bound").code(),
        ErrorCode::TooManyInFlight
    );
    // Claims: alice has three pending, bob one; a batch of two gives bob his turn second.
    let batch = log.claim("w1", 30_000, 2, none()).await.expect("claim");
    let clients: Vec<&str> = batch.iter().map(|(r, _)| r.client.as_str()).collect();
    assert_eq!(clients, ["alice", "bob"]);
    let (r1, taken_over) = batch[0].clone();
    assert!(!taken_over);
    // Claimed, nothing sent: cancellable, and the claim is then lost (writes nothing).
    assert_eq!(log.cancel("alice", "r1").await.expect("cancel").state, State::Cancelled);
    assert!(!log.mark_sent(r1.seq, r1.lease_epoch, 30_000).await.expect("mark"));
    assert!(log.finish(r1.seq, r1.lease_epoch, State::Signed, Outcome::default()).await.expect("finish").is_none());
    // Sent: not cancellable; finished under its epoch.
    let (bob, _) = batch[1].clone();
    assert!(log.mark_sent(bob.seq, bob.lease_epoch, 30_000).await.expect("mark"));
    assert_eq!(log.cancel("bob", "r1").await.expect_err("sent").code(), ErrorCode::RequestNotCancellable);
    let stored = log.finish(bob.seq, bob.lease_epoch, State::Signed, Outcome::default()).await.expect("finish");
    assert_eq!(stored.map(|r| (r.seq, r.state)), Some((bob.seq, State::Signed)), "the record as stored");
    // An expired lease is taken over with a new epoch, which fences the old claim.
    let (first, _) = log.claim("w1", -1, 1, none()).await.expect("claim").pop().expect("r2");
    let (second, takeover) = log.claim("w2", 30_000, 1, none()).await.expect("takeover").pop().expect("r2 again");
    assert!(takeover);
    assert_eq!((second.seq, second.lease_epoch), (first.seq, first.lease_epoch + 1));
    assert!(!log.renew(first.seq, first.lease_epoch, 30_000).await.expect("old renew"));
    assert!(log.finish(first.seq, first.lease_epoch, State::Failed, Outcome::default()).await.expect("old").is_none());
    assert!(log.renew(second.seq, second.lease_epoch, 30_000).await.expect("renew"));
    assert!(log
        .finish(second.seq, second.lease_epoch, State::Signed, Outcome::default())
        .await
        .expect("new")
        .is_some());
    // A ready key's request is marked sent by its claim.
    let ready = HashSet::from(["ab".repeat(32)]);
    let (r3, _) = log.claim("w1", 30_000, 1, ready).await.expect("claim").pop().expect("r3");
    assert!(r3.first_sent);
    let open: BTreeMap<&str, u64> =
        log.open_counts().await.expect("counts").into_iter().map(|(s, n)| (s.name(), n)).collect();
    assert_eq!(open, BTreeMap::from([("running", 1)]));
    let signed = Filter { state: Some(State::Signed), limit: 10, ..Filter::default() };
    assert_eq!(log.list("alice", signed).await.expect("list").len(), 1);
    // A free worker claims a request in the accepting commit, far from the client's bound too
    // (on PostgreSQL the one-statement submit); submitted again it is answered, not claimed again.
    let far = ClaimAtAccept { owner: "w4".into(), lease_ms: 30_000, ready: false };
    let Submitted::Accepted(g1) = log.submit("grace", &submission("g1", 1), 1000, Some(far.clone())).await.expect("g1")
    else {
        panic!()
    };
    assert_eq!((g1.state, g1.lease_epoch, g1.first_sent), (State::Running, 1, false));
    let Submitted::Existing(g1_again) =
        log.submit("grace", &submission("g1", 1), 1000, Some(far.clone())).await.expect("g1 again")
    else {
        panic!()
    };
    assert_eq!((g1_again.seq, g1_again.state, g1_again.lease_epoch), (g1.seq, State::Running, 1));
    assert_eq!(
        log.submit("grace", &submission("g1", 2), 1000, Some(far.clone())).await.expect_err("body").code(),
        ErrorCode::RequestConflict
    );
    // ... unless an older one is pending.
    let at = ClaimAtAccept { owner: "w3".into(), lease_ms: 30_000, ready: true };
    let Submitted::Accepted(now) = log.submit("dave", &submission("d1", 1), 3, Some(at.clone())).await.expect("d1")
    else {
        panic!()
    };
    assert_eq!((now.state, now.lease_epoch, now.first_sent), (State::Running, 1, true));
    log.submit("dave", &submission("d2", 2), 3, None).await.expect("d2 pending");
    let Submitted::Accepted(later) = log.submit("dave", &submission("d3", 3), 3, Some(at)).await.expect("d3") else {
        panic!()
    };
    assert_eq!((later.state, later.lease_epoch), (State::Pending, 0), "d2 is older and pending: it goes first");
    let Submitted::Accepted(g2) = log.submit("grace", &submission("g2", 2), 1000, Some(far)).await.expect("g2") else {
        panic!()
    };
    assert_eq!((g2.state, g2.lease_epoch), (State::Pending, 0), "far from the bound too");
}

/// Every request in the log by state, counted by the server.
fn stored_counts(pg: &Postgres) -> BTreeMap<String, u64> {
    let all = pg.query("SELECT state || '=' || COUNT(*) FROM sign_requests GROUP BY state");
    all.lines()
        .filter_map(|l| l.trim().split_once('='))
        .map(|(s, n)| (s.to_string(), n.parse().expect("count")))
        .collect()
}

/// The open requests by state (health, the gauge) match the log's.
async fn open_counts_come_from_the_claim_index(pg: &Postgres, log: &RequestLog) {
    let counted: BTreeMap<String, u64> =
        log.open_counts().await.expect("counts").into_iter().map(|(s, n)| (s.name().to_string(), n)).collect();
    let all = stored_counts(pg);
    let stored: BTreeMap<String, u64> =
        all.iter().filter(|(s, _)| *s == "pending" || *s == "running").map(|(s, n)| (s.clone(), *n)).collect();
    assert!(all.contains_key("signed"), "the log holds final requests too: {all:?}");
    assert_eq!((counted.len(), &counted), (2, &stored), "{all:?}");
    // Its plan (a partial index of open requests) is pinned with the others':
    // `statements_keep_their_plans_on_a_log_never_vacuumed`.
}

/// Whether any request is pending (asked by every submit that may claim its request): both submit
/// paths ask the same, the exclusive one (`postgres.rs`) and `frostgate_submit` (migration V5),
/// whose plan (the claim index, from its first entry) is pinned with the others':
/// `statements_keep_their_plans_on_a_log_never_vacuumed`.
fn the_pending_check_is_answered_by_the_claim_index(pg: &Postgres) {
    let check = frostgate_host::service::postgres::NONE_PENDING;
    let source = pg.query("SELECT prosrc FROM pg_proc WHERE proname = 'frostgate_submit'");
    assert!(source.contains(check), "frostgate_submit asks another pending check: {source}");
}

/// Every statement keeps the plan it was written for on a log whose statistics mislead the
/// planner: empty, then accepted and finished in bulk and never vacuumed nor analyzed (a new
/// log's first busy minutes). Planned as the service's sessions plan (`SESSION_SETTINGS`), each
/// is served by its index: no sequential scan, no bitmap scan (which never marks the entries of
/// finished requests dead), no partial index for a row found by its key. Under the planner's
/// defaults, the same logs make the outcome update a sequential scan and the per-client count a
/// bitmap scan: the hazards the settings avoid.
#[test]
fn statements_keep_their_plans_on_a_log_never_vacuumed() {
    use frostgate_host::service::postgres::{PINNED_PLANS, SESSION_SETTINGS};
    let pg = Postgres::start();
    rt().block_on(async { RequestLog::open(&pg.url(), None).await.expect("open") });
    pg.query("ALTER TABLE sign_requests SET (autovacuum_enabled = off)");
    let explain = |settings: &str, sql: &str, args: &str| -> String {
        let run = if args.is_empty() { "EXECUTE p".to_string() } else { format!("EXECUTE p({args})") };
        pg.query(&format!("{settings} PREPARE p AS {sql}; EXPLAIN {run}"))
    };
    let session: String = SESSION_SETTINGS.iter().map(|(k, v)| format!("SET {k} = '{v}'; ")).collect();
    let pinned = |log: &str| {
        for (sql, args, indexes) in PINNED_PLANS {
            let plan = explain(&session, sql, args);
            assert!(indexes.iter().any(|i| plan.contains(i)), "{log}: {sql}\n{plan}");
            assert!(!plan.contains("Bitmap") && !plan.contains("Seq Scan"), "{log}: {sql}\n{plan}");
        }
    };
    let generic = "SET plan_cache_mode = force_generic_plan;";
    // An empty log: under the planner's defaults, the outcome update reads the whole table.
    let update = PINNED_PLANS.iter().find(|(sql, ..)| sql.contains("unnest")).expect("the outcome update");
    let defaults = explain(generic, update.0, update.1);
    assert!(defaults.contains("Seq Scan"), "not the hazardous statistics: {defaults}");
    pinned("empty");
    pg.query(
        "INSERT INTO sign_requests (client, request_id, body_sha256, body, key, kind, state, created_ms, updated_ms,
                                    lease_until_ms, lease_epoch)
         SELECT 'dev', 'r-' || n, '\\x00', repeat('b', 250), 'k', 'digest', 'running', n, n, n, 1
         FROM generate_series(1, 16000) AS n",
    );
    pg.query("UPDATE sign_requests SET state = 'signed', outcome = repeat('o', 250), lease_until_ms = 0 WHERE seq % 500 <> 0");
    // Grown and never analyzed: under the defaults, the per-client count is a bitmap scan.
    let count = PINNED_PLANS.iter().find(|(sql, ..)| sql.starts_with("SELECT COUNT(*)")).expect("the per-client count");
    let defaults = explain(generic, count.0, count.1);
    assert!(defaults.contains("Bitmap Heap Scan"), "not the hazardous statistics: {defaults}");
    pinned("grown, never vacuumed");
}

#[test]
fn the_rules_hold_on_sqlite() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite:{}", dir.path().join("requests.db").display());
    rt().block_on(async { rules(&RequestLog::open(&url, None).await.expect("open")).await });
}

#[test]
fn the_rules_hold_on_postgres_and_two_instances_never_claim_the_same_request() {
    let pg = Postgres::start();
    rt().block_on(async {
        // Two instances migrate at once: one applies, the other finds it applied.
        let url = pg.url();
        let (a, b) = tokio::join!(RequestLog::open(&url, None), RequestLog::open(&url, None));
        let (a, b) = (a.expect("instance a"), b.expect("instance b"));
        rules(&a).await;
        open_counts_come_from_the_claim_index(&pg, &a).await;
        the_pending_check_is_answered_by_the_claim_index(&pg);
        // One id submitted to both instances at once, far from the bound (no client lock): the
        // same body is one request; another body is a conflict, whichever lands first.
        for round in 0..20u8 {
            let (id, other) = (format!("race-{round}"), if round % 2 == 0 { round } else { round + 100 });
            let (first, second) = (submission(&id, round), submission(&id, other));
            let (x, y) = tokio::join!(a.submit("erin", &first, 1000, None), b.submit("erin", &second, 1000, None));
            let accepted = [&x, &y].iter().filter(|r| matches!(r, Ok(Submitted::Accepted(_)))).count();
            assert_eq!(accepted, 1, "{x:?} {y:?}");
            let second = if matches!(x, Ok(Submitted::Accepted(_))) { &y } else { &x };
            match round % 2 {
                0 => assert!(matches!(second, Ok(Submitted::Existing(_))), "{second:?}"),
                _ => assert_eq!(second.as_ref().expect_err("conflict").code(), ErrorCode::RequestConflict),
            }
        }
        // The bound is exact across instances, on both sides of the lock-free margin: 200
        // concurrent submits of one client against a bound of 140 accept exactly 140.
        let mut submits = Vec::new();
        for i in 0..200u32 {
            let log = if i % 2 == 0 { a.clone() } else { b.clone() };
            submits.push(tokio::spawn(async move {
                log.submit("frank", &submission(&format!("f{i}"), i as u8), 140, None).await
            }));
        }
        let (mut accepted, mut bounded) = (0, 0);
        for t in submits {
            match t.await.expect("task") {
                Ok(Submitted::Accepted(_)) => accepted += 1,
                Err(e) if e.code() == ErrorCode::TooManyInFlight => bounded += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((accepted, bounded), (140, 60));
        for i in 0..200u32 {
            let log = if i % 2 == 0 { &a } else { &b };
            log.submit(&format!("c{}", i % 5), &submission(&format!("x{i}"), i as u8), 1000, None)
                .await
                .expect("submit");
        }
        // Both instances claim concurrently in small batches until nothing is left.
        let claim_all = |log: RequestLog, owner: &'static str| async move {
            let mut mine = Vec::new();
            loop {
                let got = log.claim(owner, 60_000, 4, HashSet::new()).await.expect("claim");
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|(r, _)| (r.seq, r.lease_epoch)));
            }
        };
        let (x, y) = tokio::join!(claim_all(a.clone(), "a"), claim_all(b.clone(), "b"));
        let mut all: Vec<(i64, i64)> = x.iter().chain(&y).copied().collect();
        let claimed = all.len();
        all.sort();
        all.dedup_by_key(|(seq, _)| *seq);
        // 200, the three `rules` left pending, the 20 races and frank's 140.
        assert_eq!((claimed, all.len()), (363, 363), "every request claimed once: a {} b {}", x.len(), y.len());
        // Outcomes written all at once from both instances go out in groups, each write fenced
        // by its own claim: per request, its outcome and a repeat of it race (exactly one is
        // stored, and the stored row is the one answered), a write under the previous epoch
        // stores nothing.
        let mut writes = Vec::new();
        for (i, &(seq, epoch)) in all.iter().enumerate() {
            // The outcome and its repeat through one instance (one group writer), the stale
            // write through the other.
            let (log, other) = if i % 2 == 0 { (a.clone(), b.clone()) } else { (b.clone(), a.clone()) };
            writes.push(tokio::spawn(async move {
                let (signed, failed, old) = tokio::join!(
                    log.finish(seq, epoch, State::Signed, Outcome::default()),
                    log.finish(seq, epoch, State::Failed, Outcome::default()),
                    other.finish(seq, epoch - 1, State::Refused, Outcome::default()),
                );
                (seq, epoch, signed.expect("signed"), failed.expect("failed"), old.expect("old"))
            }));
        }
        let mut stored = BTreeMap::new();
        for t in writes {
            let (seq, epoch, signed, failed, old) = t.await.expect("task");
            assert!(old.is_none(), "a stale epoch stored an outcome: {old:?}");
            // The caller answered is the one whose write was stored.
            let won = match (signed, failed) {
                (Some(r), None) if r.state == State::Signed => r,
                (None, Some(r)) if r.state == State::Failed => r,
                other => panic!("request {seq}: {other:?}"),
            };
            assert_eq!((won.seq, won.lease_epoch), (seq, epoch));
            *stored.entry(won.state.name()).or_insert(0u64) += 1;
        }
        let counts = stored_counts(&pg);
        let finished = counts.get("signed").copied().unwrap_or(0) + counts.get("failed").copied().unwrap_or(0);
        // `rules` left two signed, and three running under claims of their own (r3, d1, g1).
        assert_eq!(finished, 363 + 2, "{counts:?} {stored:?}");
        assert_eq!(stored.values().sum::<u64>(), 363, "{stored:?}");
        assert_eq!(counts.get("running"), Some(&3), "{counts:?}");
    });
}

#[test]
fn a_client_at_its_bound_does_not_hold_up_another_clients_submits() {
    let pg = Postgres::start();
    rt().block_on(async {
        let log = RequestLog::open(&pg.url(), None).await.expect("open");
        // Another instance's submit near alice's bound holds her lock exclusively.
        let mut holder = pg.session(
            "BEGIN; SELECT pg_advisory_xact_lock(hashtextextended('alice', 0)); SELECT pg_sleep(30); COMMIT;",
        );
        while pg.query("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted").trim() != "1" {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let alice = {
            let log = log.clone();
            tokio::spawn(async move { log.submit("alice", &submission("a1", 1), 1000, None).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        // Bob's submit is answered while alice's waits for her lock.
        let bob = log.submit("bob", &submission("b1", 1), 1000, None).await.expect("bob");
        assert!(matches!(bob, Submitted::Accepted(_)), "{bob:?}");
        assert!(!alice.is_finished(), "alice's submit did not wait for her client's lock");
        // Its session ends (the server ends it: a client gone unnoticed would keep the lock).
        pg.query("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND mode = 'ExclusiveLock' AND granted");
        let _ = holder.wait();
        let alice = alice.await.expect("task").expect("alice, once the lock is free");
        assert!(matches!(alice, Submitted::Accepted(_)), "{alice:?}");
    });
}

#[test]
fn a_submit_group_without_a_free_slot_takes_the_exclusive_path() {
    let pg = Postgres::start();
    rt().block_on(async {
        let log = RequestLog::open(&pg.url(), None).await.expect("open");
        let granted = |n: usize| {
            let q = "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted";
            pg.query(q).trim() == n.to_string()
        };
        let wait_for = |n: usize| async move {
            while !granted(n) {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        };
        // Another session holds alice's lock shared, as a lock-free submit of hers does: a
        // lock-free submit goes through beside it.
        let mut shared = pg.session(
            "BEGIN; SELECT pg_advisory_xact_lock_shared(hashtextextended('alice', 0)); SELECT pg_sleep(30); COMMIT;",
        );
        wait_for(1).await;
        let free = log.submit("alice", &submission("s1", 1), 1000, None).await.expect("with a free slot");
        assert!(matches!(free, Submitted::Accepted(_)), "{free:?}");
        // Every group slot held (eight groups of other instances in flight): alice's submit is
        // not lock-free; it waits for her lock exclusively, so for the shared holder to end.
        let mut slots = pg.session(
            "BEGIN; SELECT pg_advisory_xact_lock(1718055536, n) FROM generate_series(1, 8) AS n; SELECT pg_sleep(30); COMMIT;",
        );
        wait_for(9).await;
        let held = {
            let log = log.clone();
            tokio::spawn(async move { log.submit("alice", &submission("s2", 2), 1000, None).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert!(!held.is_finished(), "a submit without a group slot went through lock-free");
        pg.query("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND mode = 'ShareLock' AND granted");
        let _ = shared.wait();
        let s2 = held.await.expect("task").expect("once the lock is free");
        assert!(matches!(s2, Submitted::Accepted(_)), "{s2:?}");
        let _ = slots.kill();
        let _ = slots.wait();
    });
}

#[test]
fn writes_queued_past_the_bound_are_refused_at_once_with_store_unavailable() {
    let pg = Postgres::start();
    rt().block_on(async {
        let log = RequestLog::open(&pg.url(), None).await.expect("open");
        let r = claimed(&log, "alice", "q1", 1).await;
        // Another session holds the request's row: its outcome's group cannot commit, and the
        // outcomes that arrive meanwhile wait.
        let mut holder = pg.session(&format!(
            "BEGIN; SELECT 1 FROM sign_requests WHERE seq = {} FOR UPDATE; SELECT pg_sleep(30); COMMIT;",
            r.seq
        ));
        while pg.query("SELECT COUNT(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' AND state = 'active' AND pid <> pg_backend_pid()").trim() != "1" {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let stuck = {
            let log = log.clone();
            tokio::spawn(async move { log.finish(r.seq, r.lease_epoch, State::Signed, Outcome::default()).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let mut waiting = Vec::new();
        for seq in 0..4_200i64 {
            let log = log.clone();
            waiting.push(tokio::spawn(async move {
                log.finish(-1 - seq, 1, State::Signed, Outcome::default()).await
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        pg.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' AND pid <> pg_backend_pid()");
        let _ = holder.wait();
        let (mut refused, mut answered) = (0, 0);
        for t in waiting {
            match t.await.expect("task") {
                Ok(None) => answered += 1,
                Err(e) if e.code() == ErrorCode::StoreUnavailable && e.message().contains("overloaded") => refused += 1,
                other => panic!("{other:?}"),
            }
        }
        // 4,096 wait in the queue; the rest are refused at once, nothing is written for them.
        assert_eq!((answered, refused), (4_096, 104));
        let stored = stuck.await.expect("task").expect("the held outcome, once the row is free");
        assert_eq!(stored.map(|r| r.state), Some(State::Signed));
    });
}

#[test]
fn a_statement_refused_in_a_group_fails_its_own_kind_and_the_other_is_written_alone() {
    let pg = Postgres::start();
    rt().block_on(async {
        let log = RequestLog::open(&pg.url(), None).await.expect("open");
        let mut rows = Vec::new();
        for (id, digest) in [("x1", 1), ("y1", 2), ("x2", 3), ("z2", 4)] {
            rows.push(claimed(&log, "alice", id, digest).await);
        }
        // The server refuses y1's outcome and the submit of "bad".
        pg.query(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$; \
             CREATE TRIGGER refuse BEFORE UPDATE OR INSERT ON sign_requests FOR EACH ROW \
             WHEN (NEW.request_id IN ('y1', 'bad')) EXECUTE FUNCTION refuse();",
        );
        // Each round: x's row held elsewhere keeps a group in flight, so a submit and an outcome
        // that arrive meanwhile go out together in the next one, in one transaction.
        for (held, outcome, submit, submit_refused) in [(&rows[0], &rows[1], "s1", false), (&rows[2], &rows[3], "bad", true)] {
            let mut holder = pg.session(&format!(
                "BEGIN; SELECT 1 FROM sign_requests WHERE seq = {} FOR UPDATE; SELECT pg_sleep(30); COMMIT;",
                held.seq
            ));
            while pg.query("SELECT COUNT(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' AND state = 'active' AND pid <> pg_backend_pid()").trim() != "1" {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            let finish = |r: &Record, state| {
                let (log, seq, epoch) = (log.clone(), r.seq, r.lease_epoch);
                tokio::spawn(async move { log.finish(seq, epoch, state, Outcome::default()).await })
            };
            let first = finish(held, State::Signed);
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let submitted = {
                let (log, id) = (log.clone(), submit.to_string());
                tokio::spawn(async move { log.submit("bob", &submission(&id, 5), 1000, None).await })
            };
            let finished = finish(outcome, State::Signed);
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            pg.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' AND pid <> pg_backend_pid()");
            let _ = holder.wait();
            assert!(first.await.expect("task").expect("the held outcome").is_some());
            let submitted = submitted.await.expect("task");
            let finished = finished.await.expect("task");
            let stored = log.get("bob", submit).await.expect("get");
            if submit_refused {
                // The submit refused; the outcome, which never ran, written alone.
                assert_eq!(submitted.expect_err("refused").code(), ErrorCode::StoreUnavailable);
                assert!(stored.is_none(), "a refused submit was stored");
            } else {
                // The outcome refused; the submit, rolled back with it, written alone.
                assert!(matches!(submitted.expect("written alone"), Submitted::Accepted(_)));
                assert!(stored.is_some(), "an accepted submit was not stored");
            }
            let stored = log.get("alice", &outcome.submission.request_id).await.expect("get").map(|r| r.state);
            if submit_refused {
                assert_eq!(finished.expect("written alone").map(|r| r.state), Some(State::Signed));
                assert_eq!(stored, Some(State::Signed));
            } else {
                assert_eq!(finished.expect_err("refused").code(), ErrorCode::StoreUnavailable);
                assert_eq!(stored, Some(State::Running), "a refused outcome was stored");
            }
        }
    });
}

#[test]
fn a_submit_and_an_outcome_that_arrive_together_are_one_transaction() {
    let pg = Postgres::start();
    rt().block_on(async {
        let log = RequestLog::open(&pg.url(), None).await.expect("open");
        let (x, y) = (claimed(&log, "alice", "x1", 1).await, claimed(&log, "alice", "y1", 2).await);
        let active = |n: usize| {
            let q = "SELECT COUNT(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' AND state = 'active' AND pid <> pg_backend_pid()";
            pg.query(q).trim() == n.to_string()
        };
        let hold = |seq: i64| {
            pg.session(&format!(
                "BEGIN; SELECT 1 FROM sign_requests WHERE seq = {seq} FOR UPDATE; SELECT pg_sleep(30); COMMIT;"
            ))
        };
        let release = |seq: i64| {
            pg.query(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%seq = {seq} FOR UPDATE%' AND pid <> pg_backend_pid()"));
        };
        let (mut hold_x, mut hold_y) = (hold(x.seq), hold(y.seq));
        while !active(2) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let finish = |r: &Record| {
            let (log, seq, epoch) = (log.clone(), r.seq, r.lease_epoch);
            tokio::spawn(async move { log.finish(seq, epoch, State::Signed, Outcome::default()).await })
        };
        // x1's outcome in flight, held; a submit and y1's outcome queue behind it.
        let first = finish(&x);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let submitted = {
            let log = log.clone();
            tokio::spawn(async move { log.submit("bob", &submission("s1", 3), 1000, None).await })
        };
        let second = finish(&y);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        release(x.seq);
        let _ = hold_x.wait();
        assert!(first.await.expect("task").expect("x1").is_some());
        // The next group waits for y1's row while still holding the group slot its submit took:
        // the submit and the update are one transaction, and the submit is not visible yet.
        let slot_and_waiting = "SELECT COUNT(*) FROM pg_locks AS slot JOIN pg_locks AS w ON w.pid = slot.pid \
            WHERE slot.locktype = 'advisory' AND slot.classid = 1718055536 AND slot.objsubid = 2 AND slot.granted \
            AND NOT w.granted";
        let mut seen = false;
        for _ in 0..60 {
            if pg.query(slot_and_waiting).trim() == "1" {
                seen = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(seen, "no transaction held a group slot while it waited for y1's row");
        assert_eq!(pg.query("SELECT COUNT(*) FROM sign_requests WHERE request_id = 's1'").trim(), "0");
        assert!(!submitted.is_finished(), "the submit was answered before its transaction committed");
        release(y.seq);
        let _ = hold_y.wait();
        assert!(matches!(submitted.await.expect("task").expect("s1"), Submitted::Accepted(_)));
        assert_eq!(second.await.expect("task").expect("y1").map(|r| r.state), Some(State::Signed));
    });
}

#[test]
fn postgres_gone_is_store_unavailable_and_nothing_accepted_is_lost() {
    let pg = Postgres::start();
    rt().block_on(async {
        let log = RequestLog::open(&pg.url(), None).await.expect("open");
        for i in 0..20u8 {
            log.submit("alice", &submission(&format!("k{i}"), i), 100, None).await.expect("accepted");
        }
        pg.stop("immediate");
        let e = log.submit("alice", &submission("lost", 99), 100, None).await.expect_err("server down");
        assert_eq!(e.code(), ErrorCode::StoreUnavailable, "{e}");
        assert_eq!(log.get("alice", "k1").await.expect_err("down").code(), ErrorCode::StoreUnavailable);
        pg.restart();
        // The pool reconnects; every accepted request is there, the refused one is not.
        let mut back = None;
        for _ in 0..50 {
            match log.list("alice", Filter { limit: 100, ..Filter::default() }).await {
                Ok(l) => {
                    back = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            }
        }
        let ids: Vec<String> = back.expect("recovered").into_iter().map(|r| r.submission.request_id).collect();
        assert_eq!(ids, (0..20).map(|i| format!("k{i}")).collect::<Vec<_>>());
        log.submit("alice", &submission("after", 1), 100, None).await.expect("accepted again");
    });
}

#[test]
fn postgres_over_tls_verifies_the_server_against_the_configured_authority_only() {
    let (pg, ca) = Postgres::start_with_tls(true);
    let ca = ca.expect("authority");
    rt().block_on(async {
        // TLS against the authority: the rules hold as in plaintext.
        let url = format!("postgres://frostgate@localhost:{}/postgres", pg.port);
        let log = RequestLog::open(&url, Some(&ca)).await.expect("over TLS");
        log.submit("alice", &submission("tls-1", 1), 10, None).await.expect("accepted over TLS");
        // Every session of the log's pool is encrypted (psql's own is left out).
        let sessions = "SELECT COUNT(*) FILTER (WHERE s.ssl), COUNT(*) FROM pg_stat_ssl AS s JOIN pg_stat_activity AS a
                        USING (pid) WHERE a.usename = 'frostgate' AND a.application_name <> 'psql'";
        let counts = pg.query(sessions);
        let (encrypted, all) = counts.trim().split_once('|').expect("two counts");
        assert!(all != "0" && encrypted == all, "{counts}");
        // Another authority: no connection (never a plaintext fallback).
        let (_other, other_ca) = Postgres::start_with_tls(true);
        let e = RequestLog::open(&url, other_ca.as_deref()).await.expect_err("unknown authority");
        assert_eq!(e.code(), ErrorCode::StoreUnavailable, "{e}");
        assert!(e.message().contains("certificate"), "{e}");
        // sslmode=require without an authority to verify against: refused as configured.
        let e = RequestLog::open(&format!("{url}?sslmode=require"), None).await.expect_err("no authority");
        assert_eq!(e.code(), ErrorCode::ConfigInvalid, "{e}");
    });
}
