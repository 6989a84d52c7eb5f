/*
 * frostgate's commit protocol: "consume durably before release" with an HSM-anchored,
 * MAC-chained host store.  A Promela model for spin; scripts/model.sh runs it, and
 * scripts/model/README.md says what it covers.
 *
 * Modelled on the code as of d42b2ba, not on the prose:
 *   enclave/src/rounds/signing.rs   round2: admit gate, check-and-set under the state lock, persist,
 *                                   then take the nonce by value and release
 *   enclave/src/rounds/replay.rs    replay at load only adds markers (a replayed marker drops the
 *                                   nonce); snapshot_then: Pending markers too, submitted under the lock
 *   enclave/src/store/mod.rs        submit, commit_loop (a refused first chunk: NotWritten and
 *                                   NotLoaded), commit, load_chunk (a live store takes no stream;
 *                                   the loader starts from the HSM's anchor), adopt (latest load
 *                                   only), detach
 *   enclave/src/store/chain.rs      Loader, check_against_anchor
 *   enclave/src/store/anchor.rs     the HSM anchor: create the new object, destroy the old; a reader
 *                                   takes the highest (so a failed destroy leaves the HSM ahead)
 *   enclave/src/service.rs          store_load: load_chunk, replay, adopt (a separate step: the
 *                                   connection may end in between); maintain: snapshot_then(compact)
 *   enclave/src/server.rs           detach when a connection ends (spawned handlers run on)
 *   host/src/node/store.rs          append: one SQLite transaction per PersistRecords, head check,
 *                                   blocked while a stream holds the store (hold_commits)
 *   host/src/node/enclave.rs        persist_records: commit, then ack; load_store holds commits
 *                                   from its read to the reply to its last chunk
 *   host/src/node/proxy.rs          a load at every (re)connect and after every store_not_loaded reply
 *
 * One nonce (one attempt, one seat).  Coordinators send round 2 for package 1 or 2, at any time,
 * while a request is in flight, after crashes.  The nonce exists only in the first enclave
 * process: a restarted enclave never has it.
 *
 * The configuration is read at run time (so that one compiled pan checks every variant):
 *   MODEL_PROPS    bits of the properties checked
 *       1  P1  never two different shares released for the nonce
 *       2  P2a with faults only (no attacker action) the host store always loads against the
 *              HSM anchor (checked in every reachable state)
 *       4  P2b with faults only, no load of the host's store is ever refused
 *              (store_tampered / store_rollback_detected)
 *       8  P3  every load that passes holds the anchored head and the anchored marker record
 *              (unless compaction moved the store's start past it): an older copy is refused
 *      16  P4  once a share was released, every load that passes replays its consumed marker
 *      32  P5  no wedge: with faults only, after the host refused a commit as not continuing its
 *              head, the store commits nothing more until a load re-established its head
 *      64  P5s with faults only, the host never refuses a record for not continuing its head
 *              (stricter than P5: the trigger of the pre-fix wedge)
 *     128  P6  with faults only, a load is sent back ("load again") only if the HSM anchor moved
 *              during it or a commit was in flight: a quiet store always loads
 *     256  P7  a load is adopted only on a connection that is still up
 *   MODEL_VARIANT  bits
 *       1  the attacker (keeps a copy of host.db and restores it later; lies once)
 *       2  compaction (one snapshot)
 *       pre-fix behaviours (each reverts one fix of d42b2ba; 4|8|16|32 is the load path of 1951a03):
 *       4  PRE_FIX_LIVE: a live (Ready) store judges and adopts a stream
 *       8  PRE_FIX_HOLD: the host's commits land while a stream is read and judged
 *      16  PRE_FIX_SEED: the loader starts from the anchor in the enclave's memory
 *      32  PRE_FIX_ADOPT: adopt installs any completed load, whatever happened since
 *      64  PRE_FIX_REFUSAL: a first chunk the host refuses is NotWritten, the store stays Ready
 *     128  PRE_FIX_SNAPSHOT: the snapshot takes Kept markers only and is submitted after the
 *              engine lock is released
 *    1024  PRE_FIX_CLOSED: adopt installs a load on a connection that has ended
 *       deliberately broken:
 *     256  BROKEN_RELEASE_BEFORE_DURABLE: the share leaves at check-and-set, before the persist
 *     512  BROKEN_RELEASE_BEFORE_ANCHOR: persist returns Ok on the host's ack, before the anchor
 *   MODEL_MAXF     faults in all: enclave crash, host crash, a dropped connection, a failed host
 *                  transaction (host_before_commit), a failed anchor update (nothing written, or
 *                  the new object written but the old one not destroyed) (default 2)
 *   MODEL_MAXR     round-2 requests in all, either package (default 3)
 *
 * Trails: `./pan -r` replays one (spin -t cannot run the embedded C); lines "EV ..." are events.
 */

#define MAXV 6          /* store versions */

/* record kinds */
#define K_NONE  0
#define K_MARK  1       /* NonceConsumed for the nonce (with its Charged / Audit records) */
#define K_OTHER 2       /* another record (e.g. a session or attempt binding) */
#define K_SNAP0 3       /* a complete snapshot (Begin, state, End) without the marker */
#define K_SNAP1 4       /* a complete snapshot carrying the marker */

/* store phases (Phase in enclave/src/store/mod.rs) */
#define NL     0
#define READY  1
#define FAILED 2

/* the engine's consumed marker for (attempt, seat) */
#define M_NONE 0
#define M_PEND 1
#define M_KEPT 2

/* persist outcomes */
#define R_NONE 0
#define R_OK   1
#define R_NW   2        /* PersistError::NotWritten */
#define R_UNK  3        /* PersistError::Unknown */

/* load verdicts */
#define V_OK       0
#define V_AGAIN    1    /* store_not_loaded: load again (transient) */
#define V_TAMPERED 2
#define V_ROLLBACK 3

/* the host's handler and its reply */
#define HP_IDLE   0
#define HP_ACK    1
#define HP_FAIL   2     /* store_commit_failed: the transaction failed (or the attacker's lie) */
#define HP_REFUSE 3     /* store_commit_failed: the records do not continue the stored head */

/* queue owners */
#define O_R2    1       /* the round-2 request */
#define O_OTHER 3
#define O_SNAP  4

/* ------------------------------------------------------------------ configuration */
short prop;  short var;  byte maxf;  byte maxr;
#define P1_NONCE       (prop & 1)
#define P2A_LOADABLE   (prop & 2)
#define P2B_BOOT       (prop & 4)
#define P3_ROLLBACK    (prop & 8)
#define P4_RETAIN      (prop & 16)
#define P5_NO_WEDGE    (prop & 32)
#define P5S_CONTINUES  (prop & 64)
#define P6_QUIET_LOADS (prop & 128)
#define P7_LIVE_ADOPT  (prop & 256)
#define ATTACKER       (var & 1)
#define COMPACTION     (var & 2)
#define PRE_LIVE       (var & 4)
#define PRE_HOLD       (var & 8)
#define PRE_SEED       (var & 16)
#define PRE_ADOPT      (var & 32)
#define PRE_REFUSAL    (var & 64)
#define PRE_SNAPSHOT   (var & 128)
#define PRE_CLOSED     (var & 1024)
#define BROKEN_DURABLE (var & 256)
#define BROKEN_ANCHOR  (var & 512)

/* ------------------------------------------------------------------ durable: the host store */
byte rmac[MAXV+1];  byte rprev[MAXV+1];  byte rkind[MAXV+1];
byte lo = 1;  byte hi = 0;          /* rows lo..hi are present; hi == 0: empty */

/* ------------------------------------------------------------------ durable: the HSM anchor */
byte aver = 0;  byte amac = 0;      /* token init: the empty head */

/* ------------------------------------------------------------------ ghosts */
byte m_anch = 0;  byte m_amac = 0;  /* the newest anchored marker record: version, mac */
bool attacked = 0;                  /* the attacker changed something (restore, lie) */
bool released = 0;  byte relpkg = 0;
byte nextmac = 0;                   /* macs: a fresh id per chained record */
byte faults = 0;
bool stuck = 0;                     /* P5: the host refused the store's commit as discontinuous */

/* ------------------------------------------------------------------ the connection */
bool conn = 0;  byte connid = 0;    /* up?, its generation */
/* PersistRecords (one chunk) on its way to the host */
bool m_full = 0;  byte m_conn;  byte m_ver;  byte m_mac;  byte m_prev;  byte m_kind;  bool m_compact;
/* the host's reply */
byte rep = HP_IDLE;  byte rep_conn;

/* ------------------------------------------------------------------ the host process */
byte h_pc = HP_IDLE;  byte h_conn;
bool reloadq = 0;                   /* a reload spawned after a store_not_loaded reply */
byte lies = 0;
/* a load (the host holds every commit from its read to the reply to its last chunk):
   lh = 1 the host read the rows; lh = 2 the enclave took the first chunk (the loader starts
   from l_start; a_first: the HSM anchor then); lh = 3 the last chunk passed, the adopt is
   still to come */
byte lh = 0;  byte l_conn;  byte l_start;  byte a_first;
byte lmac[MAXV+1];  byte lprev[MAXV+1];  byte lkind[MAXV+1];  byte l_lo;  byte l_hi;

/* ------------------------------------------------------------------ the enclave (volatile) */
byte phase = NL;
byte hver = 0;  byte hmac = 0;      /* i.head */
byte iaver = 0;  byte iamac = 0;    /* i.anchor */
byte e_chan = 0;                    /* i.channel: the connection it was adopted on */
bool nonce = 1;                     /* the live nonce (first process only) */
byte cons = M_NONE;
/* a passed load still to adopt (service.rs: replay, then adopt), and, with PRE_FIX_ADOPT only,
   an older one still to adopt */
bool ad = 0;   byte ad_conn;   byte ad_ver;   byte ad_mac;
bool ado = 0;  byte ado_conn;  byte ado_ver;  byte ado_mac;
/* the commit queue */
byte qk[3];  byte qo[3];  byte qn = 0;
/* the committer */
byte c_pc = 0;  byte c_n;  byte c_i;  byte c_conn;  bool c_early;
byte bk[2];  byte bo[2];  byte bver[2];  byte bmac[2];  byte bprev[2];
/* the round-2 request in flight, and the others */
byte r_pc = 0;  byte r_pkg = 0;  byte nreq = 0;  byte res;
bool o_done = 0;
byte k_pc = 0;  bool k_mark;

#define committing (c_pc != 0 || qn > 0)

/* P2a: the host store loads (Loader start + check_against_anchor) */
#define START_OK   (hi == 0 || (lo == 1 && rprev[1] == 0) || rkind[lo] >= K_SNAP0)
#define HEAD_OK    ((hi == aver && (hi == 0 || rmac[hi] == amac)) || \
                    (hi > aver && aver + 1 >= lo && rprev[aver + 1] == amac))
#define LOADABLE   (START_OK && HEAD_OK)

/* the host's transaction check (HostStore::append) */
#define CONTINUES  ((hi == 0 && (m_ver == 1 || m_compact)) || \
                    (hi > 0 && m_ver == hi + 1 && m_prev == rmac[hi]))

/* ------------------------------------------------------------------ helpers */

inline release(p) {
  if :: P1_NONCE -> assert(!released || relpkg == p)      /* P1 */
     :: else fi;
  printf("EV SHARE RELEASED for package %d\n", p);
  released = 1;  relpkg = p
}

inline enqueue(k, o) {
  assert(qn < 3);
  qk[qn] = k;  qo[qn] = o;  qn++
}

inline deliver(r) {
  if
  :: c_early -> skip                    /* BROKEN_RELEASE_BEFORE_ANCHOR: answered Ok already */
  :: else ->
     if :: bo[0] == O_R2 || bo[1] == O_R2 -> res = r :: else fi   /* the others wait for nothing */
  fi
}

inline batch_clear() {
  c_pc = 0;  c_n = 0;  c_i = 0;  c_conn = 0;  c_early = 0;
  bk[0] = 0; bk[1] = 0; bo[0] = 0; bo[1] = 0; bver[0] = 0; bver[1] = 0;
  bmac[0] = 0; bmac[1] = 0; bprev[0] = 0; bprev[1] = 0
}

/* outcome unknown: the store takes nothing until the host reloads (even a Failed one) */
inline unknown() {
  printf("EV commit: outcome UNKNOWN; store not loaded\n");
  phase = NL;
  deliver(R_UNK);
  batch_clear()
}

inline notwritten() {
  printf("EV commit: NOT WRITTEN\n");
  deliver(R_NW);
  batch_clear()
}

inline clear_load() {
  i = 0;
  do
  :: i <= MAXV -> lmac[i] = 0; lprev[i] = 0; lkind[i] = 0; i++
  :: else -> break
  od;
  l_lo = 0;  l_hi = 0;  l_conn = 0;  l_start = 0;  a_first = 0;  lh = 0
}

/* the connection ends: calls in flight fail (the host's load with them, which releases its hold
   on commits); the store detaches if it lives on it.  Handlers already running in the enclave
   run on (a passed load's adopt). */
inline conn_close() {
  if
  :: conn ->
     conn = 0;  rep = HP_IDLE;  rep_conn = 0;  reloadq = 0;
     if :: lh -> clear_load() :: else fi;
     if
     :: e_chan == connid -> e_chan = 0; if :: phase == READY -> phase = NL :: else fi
     :: else
     fi
  :: else
  fi
}

/* HostStore::records: the host reads every row, then streams them (StoreLoad) */
inline read_store() {
  i = 0;
  do
  :: i <= MAXV -> lmac[i] = rmac[i]; lprev[i] = rprev[i]; lkind[i] = rkind[i]; i++
  :: else -> break
  od;
  l_lo = lo;  l_hi = hi;  l_conn = connid;  lh = 1;
  i = 0
}

inline append_row() {
  rmac[m_ver] = m_mac;  rprev[m_ver] = m_prev;  rkind[m_ver] = m_kind;
  if :: hi == 0 -> lo = m_ver :: else fi;
  hi = m_ver;
  if
  :: m_compact ->                 /* compact_before: every older row goes, same transaction */
     i = lo;
     do
     :: i < m_ver -> rmac[i] = 0; rprev[i] = 0; rkind[i] = 0; i++
     :: else -> break
     od;
     lo = m_ver
  :: else
  fi
}

/* the anchor moved to bver[..]: note the newest anchored marker (ghost) */
inline note_anchored_batch() {
  i = 0;
  do
  :: i < c_n -> if :: bk[i] == K_MARK || bk[i] == K_SNAP1 -> m_anch = bver[i]; m_amac = bmac[i]
                   :: else fi; i++
  :: else -> break
  od;
  i = 0
}

/* ChainedStore::adopt (the passed load in ad_*, or with PRE_FIX_ADOPT the older one in ado_*) */
inline adopt(a_conn, a_ver, a_mac) {
  if
  :: PRE_ADOPT || (phase == NL && hver == a_ver && hmac == a_mac && (PRE_CLOSED || (conn && a_conn == connid))) ->
     if :: P7_LIVE_ADOPT -> assert(conn && a_conn == connid)   /* P7 */
        :: else fi;
     e_chan = a_conn;  hver = a_ver;  hmac = a_mac;  phase = READY;  stuck = 0;
     printf("EV enclave: adopted on connection #%d (head v%d); ready\n", a_conn, a_ver)
  :: else ->
     printf("EV enclave: a superseded load is not adopted\n")
  fi
}

/* ------------------------------------------------------------------ round 2 */

/* Coordinators send round 2 for package 1 or 2 through the host (so only while connected);
   the enclave runs Engine::round2.  One request is in flight at a time: another arriving
   meanwhile meets the marker (nonce_already_consumed) or, while the store is not loaded, the
   admit gate (store_not_loaded, which makes the host spawn a reload: see Other). */
proctype Coordinator() {
  byte p;
end:
  do
  /* admit gate, check-and-set under the one state lock, persist (submit).  The await in
     between (with_bindings) adds nothing: a phase change meanwhile is the committer's
     "not ready: NotWritten". */
  :: atomic { r_pc == 0 && nreq < maxr && conn ->
       if
       :: nreq == 0 -> p = 1                          /* w.l.o.g. (symmetry) */
       :: nreq > 0 -> p = 1
       :: nreq > 0 -> p = 2
       fi;
       nreq++;
       if
       :: phase == NL -> reloadq = 1                  /* store_not_loaded: the host reloads */
          printf("EV round2(package %d): store_not_loaded; the host spawns a reload\n", p)
       :: phase == FAILED -> printf("EV round2(package %d): refused, the store failed its check\n", p)
       :: phase == READY && cons != M_NONE -> printf("EV round2(package %d): nonce_already_consumed\n", p)
       :: phase == READY && cons == M_NONE && !nonce -> printf("EV round2(package %d): nonce_unavailable\n", p)
       :: phase == READY && cons == M_NONE && nonce ->
          printf("EV round2(package %d): check-and-set; marker pending; queued\n", p);
          cons = M_PEND;
          if :: BROKEN_DURABLE -> release(p) :: else fi;
          enqueue(K_MARK, O_R2);  r_pkg = p;  r_pc = 2
       fi;
       p = 0 }
  /* the persist outcome; on Ok the nonce is taken by value, signed with, and the share leaves
     (crash point after_anchor_before_release: any crash before this step) */
  :: atomic { r_pc == 2 && res != R_NONE ->
       if
       :: res == R_OK ->
          cons = M_KEPT;                                /* settle */
          if
          :: BROKEN_DURABLE -> nonce = 0                /* released already */
          :: !BROKEN_DURABLE && nonce -> nonce = 0; release(r_pkg)
          :: !BROKEN_DURABLE && !nonce ->               /* a reload replayed the marker */
             printf("EV round2(package %d): Ok, but nonce_unavailable\n", r_pkg)
          fi
       :: res == R_NW -> cons = M_NONE                  /* store_commit_failed: nonce stays live */
          printf("EV round2(package %d): not written; marker removed, nonce kept\n", r_pkg)
       :: res == R_UNK -> cons = M_KEPT; nonce = 0      /* store_outcome_unknown: nonce wiped */
          printf("EV round2(package %d): store_outcome_unknown; nonce wiped\n", r_pkg)
       fi;
       res = R_NONE;  r_pc = 0;  r_pkg = 0 }
  od
}

/* other traffic, once: another record (e.g. a session or attempt binding, committed in the
   background, possibly in one batch with the marker), or, while the store is not loaded,
   another request refused with store_not_loaded (the host then spawns a reload) */
proctype Other() {
end:
  do
  :: atomic { !o_done && conn && phase == READY -> o_done = 1; enqueue(K_OTHER, O_OTHER);
       printf("EV another record queued\n") }
  :: atomic { !o_done && conn && phase == NL -> o_done = 1; reloadq = 1;
       printf("EV another request: store_not_loaded; the host spawns a reload\n") }
  od
}

/* compaction, once: Service::maintain -> engine.snapshot_then(|state| store.compact(state)).
   The code takes the state (markers Pending or Kept) and submits it under the engine lock.
   PRE_FIX_SNAPSHOT: Kept markers only, submitted after the lock is released (a multi-threaded
   runtime runs round 2 in between). */
proctype Compactor() {
end:
  do
  :: atomic { k_pc == 0 && phase == READY && !PRE_SNAPSHOT ->
       enqueue(K_SNAP0 + (cons != M_NONE), O_SNAP);
       printf("EV compaction: snapshot (marker %d) taken and queued under the lock\n", cons != M_NONE);
       k_pc = 2 }
  :: atomic { k_pc == 0 && phase == READY && PRE_SNAPSHOT ->
       k_mark = (cons == M_KEPT);
       printf("EV compaction: snapshot read (marker state %d, in the snapshot: %d)\n", cons, k_mark);
       k_pc = 1 }
  :: atomic { k_pc == 1 ->
       if
       :: phase == READY -> enqueue(K_SNAP0 + k_mark, O_SNAP); printf("EV compaction: snapshot queued\n")
       :: else -> skip                                 /* NotWritten(store_not_loaded) */
       fi;
       k_pc = 2;  k_mark = 0 }
  od
}

/* ------------------------------------------------------------------ the enclave's committer */

/* ChainedStore::commit_loop + commit */
proctype Committer() {
  byte i;
end:
  do
  /* take a batch (a snapshot alone, else everything before the next snapshot) and chain it on
     the head */
  :: atomic { c_pc == 0 && qn > 0 ->
       if
       :: qk[0] >= K_SNAP0 -> c_n = 1
       :: else -> c_n = 1; if :: qn > 1 && qk[1] < K_SNAP0 -> c_n = 2 :: else fi
       fi;
       i = 0;
       do
       :: i < c_n -> bk[i] = qk[i]; bo[i] = qo[i]; i++
       :: else -> break
       od;
       i = 0;
       do
       :: i + c_n < qn -> qk[i] = qk[i + c_n]; qo[i] = qo[i + c_n]; i++
       :: else -> break
       od;
       qn = qn - c_n;
       do
       :: i < 3 -> qk[i] = 0; qo[i] = 0; i++
       :: else -> break
       od;
       i = 0;
       if
       :: phase != READY -> notwritten()
       :: else ->
          if :: P5_NO_WEDGE -> assert(!stuck || attacked)   /* P5 */
             :: else fi;
          c_conn = e_chan;  c_i = 0;
          do
          :: i < c_n ->
             bver[i] = hver + 1 + i;
             assert(bver[i] <= MAXV);
             nextmac++;  bmac[i] = nextmac;
             if :: i == 0 -> bprev[i] = hmac :: else -> bprev[i] = bmac[i - 1] fi;
             i++
          :: else -> break
          od;
          printf("EV commit: %d record(s) chained at v%d..v%d (kinds %d,%d)\n", c_n, bver[0], bver[c_n-1], bk[0], bk[1]);
          c_pc = 1
       fi;
       i = 0 }
  /* PersistRecords: a chunk, one host transaction (each record is a chunk here, so a batch can
     be committed in part, as a batch of more than 256 records can) */
  :: atomic { c_pc == 1 && !m_full ->
       if
       :: conn && c_conn == connid ->
          m_full = 1;  m_conn = c_conn;  m_ver = bver[c_i];  m_mac = bmac[c_i];
          m_prev = bprev[c_i];  m_kind = bk[c_i];  m_compact = (bk[c_i] >= K_SNAP0);
          c_pc = 2
       :: else -> unknown()                            /* channel_closed */
       fi }
  :: atomic { c_pc == 2 && rep != HP_IDLE && rep_conn == c_conn ->
       if
       :: rep == HP_ACK ->
          rep = HP_IDLE;  rep_conn = 0;  c_i++;
          if
          :: c_i < c_n -> c_pc = 1
          :: else ->
             c_pc = 3;
             if :: BROKEN_ANCHOR -> deliver(R_OK); c_early = 1 :: else fi
          fi
       :: rep != HP_ACK && c_i == 0 ->                 /* store_commit_failed on the 1st chunk */
          if :: rep == HP_REFUSE && !attacked -> stuck = 1 :: else fi;
          rep = HP_IDLE;  rep_conn = 0;
          if
          :: PRE_REFUSAL -> notwritten()
          :: else -> phase = NL;  notwritten()           /* NotWritten; wait for a reload */
          fi
       :: rep != HP_ACK && c_i > 0 -> rep = HP_IDLE; rep_conn = 0; unknown()
       fi }
  :: atomic { c_pc == 2 && !(conn && c_conn == connid) -> unknown() }   /* no ack */
  /* crash point after_ack_before_anchor: any crash before this step.  anchor::update, then
     head = anchor = the new head and every request of the batch resolves Ok */
  :: atomic { c_pc == 3 ->
       assert(bprev[0] == amac && bver[0] == aver + 1);   /* chained on the anchored head */
       if
       :: true ->
          aver = bver[c_n - 1];  amac = bmac[c_n - 1];
          note_anchored_batch();
          printf("EV commit: acknowledged; HSM anchor -> v%d; Ok\n", aver);
          hver = aver;  hmac = amac;  iaver = aver;  iamac = amac;
          deliver(R_OK);
          batch_clear()
       :: faults < maxf -> faults++;                   /* C_CreateObject failed */
          printf("EV FAULT: the anchor update failed (nothing written)\n");  unknown()
       :: faults < maxf -> faults++;                   /* created, C_DestroyObject failed */
          aver = bver[c_n - 1];  amac = bmac[c_n - 1];
          note_anchored_batch();
          printf("EV FAULT: the anchor update wrote v%d but failed (the HSM is ahead of memory)\n", aver);
          unknown()
       fi }
  od
}

/* ------------------------------------------------------------------ the host */

proctype Host() {
  byte i;
end:
  do
  /* (re)connect (supervise), and load the store */
  :: atomic { !conn && lh == 0 -> conn = 1; connid++;
       printf("EV host: connected (#%d); its load reads rows v%d..v%d\n", connid, lo, hi);
       read_store() }
  /* PersistRecords: one SQLite transaction (synchronous=FULL); blocked while a stream holds
     the store */
  :: atomic { m_full && h_pc == HP_IDLE && (lh == 0 || PRE_HOLD) ->
       m_full = 0;  h_conn = m_conn;
       if
       :: true ->
          if :: P5S_CONTINUES -> assert(CONTINUES || attacked)    /* P5s */
             :: else fi;
          if
          :: CONTINUES -> append_row(); h_pc = HP_ACK;
             printf("EV host: v%d (kind %d) durable; rows v%d..v%d\n", m_ver, m_kind, lo, hi)
          :: else -> h_pc = HP_REFUSE;                  /* does not continue the stored head */
             printf("EV host: v%d does not continue v%d: store_commit_failed\n", m_ver, hi)
          fi
       :: ATTACKER && lies < 1 && CONTINUES ->          /* commit, but answer store_commit_failed */
          lies++;  attacked = 1;  append_row();  h_pc = HP_FAIL;
          printf("EV ATTACK: the host commits v%d but answers store_commit_failed\n", m_ver)
       :: faults < maxf -> faults++; h_pc = HP_FAIL    /* host_before_commit: transaction failed */
          printf("EV FAULT host_before_commit: the transaction of v%d failed\n", m_ver)
       fi;
       m_conn = 0;  m_ver = 0;  m_mac = 0;  m_prev = 0;  m_kind = 0;  m_compact = 0;
       i = 0 }
  /* crash point host_after_commit_before_ack: any crash before this step.  The reply */
  :: atomic { h_pc != HP_IDLE ->
       if
       :: conn && h_conn == connid -> rep = h_pc; rep_conn = h_conn
       :: else -> printf("EV host: the reply is lost (connection gone)\n")
       fi;
       h_pc = HP_IDLE;  h_conn = 0 }
  /* a spawned reload (serialized with every other load by the reload mutex) */
  :: atomic { conn && lh == 0 && reloadq -> reloadq = 0;
       printf("EV host: a spawned reload reads rows v%d..v%d\n", lo, hi);
       read_store() }
  od
}

/* ------------------------------------------------------------------ the enclave: load */

/* StoreLoad: ChainedStore::load_chunk (first chunk, last chunk), Engine::replay,
   ChainedStore::adopt.  A one-chunk load is the case where nothing happens between the first
   two steps. */
proctype Enclave() {
  byte i;  byte verdict;  bool ahead;  bool mk;
end:
  do
  /* first chunk */
  :: atomic { lh == 1 && conn && l_conn == connid ->
       if
       :: phase == READY && !PRE_LIVE ->               /* live: no verdict, loader dropped */
          printf("EV enclave load (first chunk): the store is live; the stream is ignored\n");
          clear_load()
       :: else ->
          if :: PRE_SEED -> l_start = iaver :: else -> l_start = aver fi;
          a_first = aver;  lh = 2;
          printf("EV enclave load (first chunk): the loader starts from anchor v%d (HSM v%d)\n", l_start, aver)
       fi }
  /* last chunk */
  :: atomic { lh == 2 && conn && l_conn == connid && phase == READY && !PRE_LIVE ->
       printf("EV enclave load (last chunk): the store is live; no verdict\n");
       clear_load() }
  :: atomic { lh == 2 && conn && l_conn == connid && (phase != READY || PRE_LIVE) &&
               !(ad && ado) ->                           /* (PRE_FIX_ADOPT: two pending at most) */
       verdict = V_OK;  ahead = 0;
       /* Loader: the chain starts at record 1 or at a complete snapshot (rows are contiguous
          and MAC-valid by construction: the attacker cannot forge a MAC) */
       if
       :: l_hi > 0 && !((l_lo == 1 && lprev[1] == 0) || lkind[l_lo] >= K_SNAP0) -> verdict = V_TAMPERED
       :: else
       fi;
       /* the anchor is re-read: if it moved since the loader started, load again */
       if :: verdict == V_OK && aver != l_start -> verdict = V_AGAIN :: else fi;
       /* check_against_anchor (the loader tracked the successor of version l_start) */
       if
       :: verdict == V_OK ->
          if
          :: l_hi == aver -> if :: l_hi == 0 || lmac[l_hi] == amac -> skip :: else -> verdict = V_TAMPERED fi
          :: l_hi < aver -> verdict = V_ROLLBACK
          :: l_hi > aver ->
             if
             :: l_start + 1 >= l_lo && lprev[l_start + 1] == amac -> ahead = 1
             :: else -> verdict = V_TAMPERED
             fi
          fi
       :: else
       fi;
       if :: verdict == V_OK && committing -> verdict = V_AGAIN :: else fi;
       printf("EV enclave load (last chunk): rows v%d..v%d, anchor v%d (v%d at the first chunk), phase %d (0 not loaded, 1 ready, 2 failed), committing %d -> verdict %d (0 ok, 1 again, 2 tampered, 3 rollback), ahead %d\n",
              l_lo, l_hi, aver, a_first, phase, committing, verdict, ahead);
       if
       :: verdict == V_TAMPERED || verdict == V_ROLLBACK ->
          if :: P2B_BOOT -> assert(attacked)           /* P2b */
             :: else fi;
          phase = FAILED;
          clear_load()
       :: verdict == V_AGAIN ->
          if :: P6_QUIET_LOADS -> assert(attacked || committing || aver != a_first)   /* P6 */
             :: else fi;
          clear_load()
       :: verdict == V_OK ->
          if
          :: P3_ROLLBACK ->                            /* P3 */
             assert(l_hi >= aver);
             assert(m_anch == 0 || (l_hi >= m_anch && (l_lo > m_anch || lmac[m_anch] == m_amac)))
          :: else
          fi;
          phase = NL;
          if
          :: ahead ->                                   /* finish the interrupted anchor update */
             i = aver + 1;
             do
             :: i <= l_hi -> if :: lkind[i] == K_MARK || lkind[i] == K_SNAP1 -> m_anch = i; m_amac = lmac[i]
                                :: else fi; i++
             :: else -> break
             od;
             aver = l_hi;  amac = lmac[l_hi]
          :: else
          fi;
          iaver = l_hi;  hver = l_hi;
          if :: l_hi == 0 -> iamac = 0 :: else -> iamac = lmac[l_hi] fi;
          hmac = iamac;
          /* engine.replay: only adds markers; a replayed marker drops the nonce */
          mk = 0;  i = l_lo;
          do
          :: i > 0 && i <= l_hi -> if :: lkind[i] == K_MARK || lkind[i] == K_SNAP1 -> mk = 1 :: else fi; i++
          :: else -> break
          od;
          if :: mk -> cons = M_KEPT; nonce = 0 :: else fi;
          if :: P4_RETAIN -> assert(!released || mk)   /* P4 */
             :: else fi;
          printf("EV enclave: load passed (head v%d), replayed (marker %d)\n", hver, mk);
          /* a load that passed earlier and is still to adopt is superseded (generation) */
          if
          :: ad && PRE_ADOPT -> ado = 1; ado_conn = ad_conn; ado_ver = ad_ver; ado_mac = ad_mac
          :: else
          fi;
          ad = 1;  ad_conn = l_conn;  ad_ver = hver;  ad_mac = hmac;
          lh = 3
       fi;
       i = 0;  verdict = 0;  ahead = 0;  mk = 0 }
  /* adopt (then the reply to the last chunk, which ends the host's hold on commits) */
  :: atomic { ad ->
       adopt(ad_conn, ad_ver, ad_mac);
       if :: lh == 3 && l_conn == ad_conn -> clear_load() :: else fi;
       ad = 0;  ad_conn = 0;  ad_ver = 0;  ad_mac = 0 }
  :: atomic { ado ->                                    /* PRE_FIX_ADOPT only */
       adopt(ado_conn, ado_ver, ado_mac);
       ado = 0;  ado_conn = 0;  ado_ver = 0;  ado_mac = 0 }
  od
}

/* ------------------------------------------------------------------ faults */

/* A crash and the restart are one step: a restarted process that is not connected yet is inert,
   and whatever may happen while it is down may happen then. */
proctype Crash() {
  byte i;
end:
  do
  /* the enclave dies and restarts: everything volatile is lost, the nonce for good;
     ChainedStore::open reads the anchor; the store is not loaded */
  :: atomic { faults < maxf ->
       faults++;
       printf("EV CRASH: the enclave (it restarts without the nonce)\n");
       cons = M_NONE;  nonce = 0;  e_chan = 0;  stuck = 0;
       qn = 0;  qk[0] = 0; qk[1] = 0; qk[2] = 0; qo[0] = 0; qo[1] = 0; qo[2] = 0;
       batch_clear();
       r_pc = 0;  r_pkg = 0;  res = 0;
       if :: k_pc == 1 -> k_pc = 2 :: else fi;  k_mark = 0;   /* a snapshot not yet queued is lost */
       ad = 0;  ad_conn = 0;  ad_ver = 0;  ad_mac = 0;  ado = 0;  ado_conn = 0;  ado_ver = 0;  ado_mac = 0;
       conn_close();                /* a PersistRecords already sent may still be committed */
       phase = NL;  hver = aver;  hmac = amac;  iaver = aver;  iamac = amac }
  /* the host dies and restarts: an uncommitted transaction and an unsent ack are lost */
  :: atomic { faults < maxf ->
       faults++;
       printf("EV CRASH: the host\n");
       h_pc = HP_IDLE;  h_conn = 0;  m_full = 0;
       m_conn = 0;  m_ver = 0;  m_mac = 0;  m_prev = 0;  m_kind = 0;  m_compact = 0;
       conn_close() }
  /* the connection drops (or a call times out): both processes live on, and so does a host
     transaction already under way */
  :: atomic { faults < maxf && conn ->
       faults++;
       printf("EV FAULT: the connection drops\n");
       conn_close() }
  od
}

/* ------------------------------------------------------------------ the attacker (the host user) */

/* keeps one copy of host.db and may put it back later, at any moment */
proctype Attacker() {
  byte cmac[MAXV+1];  byte cprev[MAXV+1];  byte ckind[MAXV+1];  byte clo;  byte chi;
  byte i;  bool differ;
  atomic {
    i = 0;
    do
    :: i <= MAXV -> cmac[i] = rmac[i]; cprev[i] = rprev[i]; ckind[i] = rkind[i]; i++
    :: else -> break
    od;
    clo = lo;  chi = hi;  i = 0;
    printf("EV the attacker copies host.db (rows v%d..v%d)\n", lo, hi) };
  atomic {
    differ = (clo != lo || chi != hi);
    i = 0;
    do
    :: i <= MAXV -> differ = differ || cmac[i] != rmac[i];
                   rmac[i] = cmac[i]; rprev[i] = cprev[i]; rkind[i] = ckind[i]; i++
    :: else -> break
    od;
    lo = clo;  hi = chi;
    printf("EV ATTACK: the old copy is restored (rows v%d..v%d; differs %d)\n", lo, hi, differ);
    attacked = attacked || differ;
    i = 0;
    do
    :: i <= MAXV -> cmac[i] = 0; cprev[i] = 0; ckind[i] = 0; i++
    :: else -> break
    od;
    i = 0;  clo = 0;  chi = 0;  differ = 0 }
}

/* P2a, in every reachable state */
proctype Monitor() {
end:
  atomic { P2A_LOADABLE && !attacked && !LOADABLE -> assert(false) }
}

init {
  c_code {
    char *e;
    e = getenv("MODEL_PROPS");    now.prop = e ? atoi(e) : 0;
    e = getenv("MODEL_VARIANT");  now.var = e ? atoi(e) : 0;
    e = getenv("MODEL_MAXF");     now.maxf = e ? atoi(e) : 2;
    e = getenv("MODEL_MAXR");     now.maxr = e ? atoi(e) : 3;
  };
  atomic {
    printf("EV config: properties %d, variant %d, faults %d, requests %d\n", prop, var, maxf, maxr);
    /* pan's search tries the highest process number first: faults and attacks come last,
       which keeps counterexamples short */
    run Monitor();
    run Crash();
    if :: ATTACKER -> run Attacker() :: else fi;
    if :: COMPACTION -> run Compactor() :: else fi;
    run Other();
    run Coordinator();
    run Enclave();
    run Host();
    run Committer()
  }
}
