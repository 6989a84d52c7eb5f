/*
 * frostgate commit protocol: "consume durably before release" with an HSM-anchored,
 * MAC-chained host store.  Promela model for spin (see scripts/model/README.md and
 * scripts/model.sh).
 *
 * Modelled after the code, not the prose:
 *   enclave/src/rounds/signing.rs      round2: check-and-set under the state lock, persist, release
 *   enclave/src/rounds/replay.rs       replay at load only adds markers, removes the consumed nonce
 *   enclave/src/store/mod.rs           submit / commit_loop / commit / load_chunk / adopt / detach
 *   enclave/src/store/chain.rs         Loader + check_against_anchor
 *   enclave/src/store/anchor.rs        the HSM anchor (create new, destroy old, reader takes max)
 *   host/src/node/store.rs             append: one SQLite transaction per PersistRecords, head check
 *   host/src/node/enclave.rs           persist_records: commit, then ack (fault points)
 *   host/src/node/proxy.rs             reload on reconnect and after every store_not_loaded reply
 *   enclave/src/service.rs             maintain: engine.snapshot() then store.compact()
 *
 * ONE nonce (one attempt, one seat).  Two signing packages (1 and 2) for it arrive from two
 * coordinator processes, concurrently and/or after restarts.  The nonce lives only in the first
 * enclave process: a restarted enclave never has it again.
 *
 * Properties (select with -D; several may be combined):
 *   PROP_NONCE     P1  never two different shares released for the nonce
 *   PROP_LOADABLE  P2a with crashes/faults only (no attacker action) the host store always loads
 *                      against the HSM anchor (checked in every reachable state)
 *   PROP_BOOT      P2b with crashes/faults only, no load the host performs is ever refused
 *                      (store_tampered / store_rollback_detected)
 *   PROP_ROLLBACK  P3  every adopted store contains the anchored chain (in particular an anchored
 *                      marker, unless compaction moved the store's start past it): a restored
 *                      older copy that lacks anchored records is refused
 *   PROP_RETAIN    P4  once a share was released, every store the enclave adopts replays the
 *                      consumed marker (the marker outlives crashes, reloads and rollbacks)
 *   PROP_CONSISTENT P5 with crashes/faults only, the host never refuses a record because it does
 *                      not continue its head (the enclave's head and the host's agree)
 *
 * Variants:
 *   FIX_LOAD_WHILE_READY  a (non verify-only) load arriving while the store is Ready is answered
 *                         without re-verifying (proposed fix for finding F1)
 *   FIX_SNAPSHOT          the snapshot includes Pending markers and is queued before the engine
 *                         lock is released (proposed fix for finding F2)
 *   BROKEN_RELEASE_BEFORE_DURABLE  the share is released at check-and-set, before the persist
 *   BROKEN_RELEASE_BEFORE_ANCHOR   persist returns Ok on the host's ack, before the anchor moves
 *   NO_ATTACKER / NO_COMPACTION    drop those processes
 */

#ifndef MAXC
#define MAXC 2          /* crashes, enclave or host, in all */
#endif
#ifndef MAXF
#define MAXF 1          /* honest faults: a failed host transaction, a failed anchor update */
#endif
#ifndef MAXR
#define MAXR 3          /* round-2 requests in all (either package) */
#endif
#define MAXV 6          /* store versions */

/* record kinds */
#define K_NONE  0
#define K_MARK  1       /* NonceConsumed for our nonce (with its Charged/Audit records) */
#define K_OTHER 2       /* any other record (a background session/attempt binding) */
#define K_SNAP0 3       /* a complete snapshot (Begin, state, End) without the marker */
#define K_SNAP1 4       /* a complete snapshot carrying the marker */

/* store phases (enclave/src/store/mod.rs Phase) */
#define NL     0
#define READY  1
#define FAILED 2

/* the engine's consumed marker */
#define M_NONE 0
#define M_PEND 1
#define M_KEPT 2

/* persist outcomes */
#define R_NONE 0
#define R_OK   1
#define R_NW   2        /* NotWritten */
#define R_UNK  3        /* Unknown */

/* load verdicts */
#define V_OK       0
#define V_AGAIN    1    /* store_not_loaded: anchor moved / commit in flight (transient) */
#define V_TAMPERED 2
#define V_ROLLBACK 3
#define V_SKIP     4    /* FIX_LOAD_WHILE_READY: already loaded */

/* host handler state */
#define HP_IDLE 0
#define HP_ACK  1
#define HP_FAIL 2

/* queue owners: 1 = the round-2 request; 3 = background; 4 = compaction */
#define O_OTHER 3
#define O_SNAP  4

/* ------------------------------------------------------------------ durable: host store */
byte rmac[MAXV+1];  byte rprev[MAXV+1];  byte rkind[MAXV+1];
byte lo = 1;  byte hi = 0;          /* rows lo..hi present; hi == 0: empty */

/* ------------------------------------------------------------------ durable: HSM anchor */
byte aver = 0;  byte amac = 0;      /* token init: the empty head */

/* ------------------------------------------------------------------ ghosts */
byte m_anch = 0;  byte m_amac = 0;  /* the newest anchored marker record: version, mac */
bool attacked = 0;                  /* the attacker changed something (restore, lie) */
bool released = 0;  byte relpkg = 0;
byte nextmac = 0;
byte crashes = 0;  byte faults = 0;

/* ------------------------------------------------------------------ channel */
bool conn = 0;  byte connid = 0;   /* the host-enclave connection, its generation */
/* PersistRecords (one chunk) in flight to the host */
bool m_full = 0;  byte m_conn;  byte m_ver;  byte m_mac;  byte m_prev;  byte m_kind;  bool m_compact;
/* the host's reply */
byte rep = HP_IDLE;  byte rep_conn;

/* ------------------------------------------------------------------ host process */
byte h_pc = HP_IDLE;  byte h_conn;
bool reloadq = 0;                   /* a reload spawned after a store_not_loaded reply */
byte lies = 0;
/* a load: the host read the store (lh = 1); its copy */
bool lh = 0;  byte l_conn;
byte lmac[MAXV+1];  byte lprev[MAXV+1];  byte lkind[MAXV+1];  byte l_lo;  byte l_hi;

/* ------------------------------------------------------------------ enclave (volatile) */
byte phase = NL;
byte hver = 0;  byte hmac = 0;      /* i.head */
byte iaver = 0;  byte iamac = 0;    /* i.anchor */
byte e_chan = 0;                    /* i.channel: the connection generation it was adopted on */
bool nonce = 1;                     /* the live nonce (first process only) */
byte cons = M_NONE;                 /* consumed marker for (attempt, seat) */
/* the commit queue */
byte qk[3];  byte qo[3];  byte qn = 0;
/* the committer */
byte c_pc = 0;  byte c_n;  byte c_i;  byte c_conn;  bool c_early;
byte bk[2];  byte bo[2];  byte bver[2];  byte bmac[2];  byte bprev[2];
/* requests */
byte r_pc = 0;  byte r_pkg = 0;  byte nreq = 0;  byte res[5];
byte o_pc = 0;  bool o_rec = 0;
byte k_pc = 0;  byte k_n = 0;  bool k_mark;

#define committing (c_pc != 0 || qn > 0)

/* P2a: the host store loads against the HSM anchor (check_against_anchor + chain start) */
#define START_OK   (hi == 0 || (lo == 1 && rprev[1] == 0) || rkind[lo] >= K_SNAP0)
#define HEAD_OK    ((hi == aver && (hi == 0 || rmac[hi] == amac)) || \
                    (hi > aver && aver + 1 >= lo && rprev[aver + 1] == amac))
#define LOADABLE   (START_OK && HEAD_OK)

/* ------------------------------------------------------------------ helpers */

inline release(p) {
#ifdef PROP_NONCE
  assert(!released || relpkg == p);     /* P1 */
#endif
  released = 1;  relpkg = p
}

inline enqueue(k, o) {
  assert(qn < 3);
  qk[qn] = k;  qo[qn] = o;  qn++
}

inline deliver(r) {
  if
  :: c_early -> skip                    /* BROKEN_RELEASE_BEFORE_ANCHOR: already answered Ok */
  :: else ->
     res[bo[0]] = r;
     if :: c_n > 1 -> res[bo[1]] = r :: else fi
  fi
}

inline batch_clear() {
  c_pc = 0;  c_n = 0;  c_i = 0;  c_conn = 0;  c_early = 0;
  bk[0] = 0; bk[1] = 0; bo[0] = 0; bo[1] = 0; bver[0] = 0; bver[1] = 0;
  bmac[0] = 0; bmac[1] = 0; bprev[0] = 0; bprev[1] = 0
}

/* commit outcome unknown: take nothing until the host reloads (phase set even if Failed) */
inline unknown() {
  phase = NL;
  deliver(R_UNK);
  batch_clear()
}

inline notwritten() {
  deliver(R_NW);
  batch_clear()
}

inline clear_load() {
  i = 0;
  do
  :: i <= MAXV -> lmac[i] = 0; lprev[i] = 0; lkind[i] = 0; i++
  :: else -> break
  od;
  l_lo = 0;  l_hi = 0;  l_conn = 0;  lh = 0
}

/* the connection ends: pending calls fail; the store detaches if it lived on it */
inline conn_close() {
  if
  :: conn ->
     conn = 0;  rep = HP_IDLE;  rep_conn = 0;
     if :: lh -> clear_load() :: else fi;
     reloadq = 0;
     if
     :: e_chan == connid -> e_chan = 0; if :: phase == READY -> phase = NL :: else fi
     :: else
     fi
  :: else
  fi
}

/* whether the loaded rows carry the marker (a NonceConsumed record or a snapshot with it) */
inline loaded_mark(out) {
  out = 0;  i = l_lo;
  do
  :: i > 0 && i <= l_hi -> if :: lkind[i] == K_MARK || lkind[i] == K_SNAP1 -> out = 1 :: else fi; i++
  :: else -> break
  od
}

/* ------------------------------------------------------------------ round-2 requests */

/* Coordinators send round 2 for package 1 or 2 (through the host: only while connected).
   Enclave side: Engine::round2 (enclave/src/rounds/signing.rs).  One request is in flight at a
   time: a second one arriving meanwhile is refused at the check-and-set (the marker is set)
   or, while the store is not loaded, by the admit gate (which triggers a host reload: Other). */
proctype Coordinator() {
  byte p;
end:
  do
  /* admit gate (store ready), check-and-set under the one state lock, then persist: submit.
     (The await in between, with_bindings, adds nothing here: a phase change meanwhile is the
     committer's "not ready: NotWritten".) */
  :: atomic { r_pc == 0 && nreq < MAXR && conn ->
       if
       :: nreq == 0 -> p = 1                         /* w.l.o.g. (symmetry) */
       :: nreq > 0 -> p = 1
       :: nreq > 0 -> p = 2
       fi;
       nreq++;
       if
       :: phase == NL -> reloadq = 1                 /* store_not_loaded: the host spawns a reload */
       :: phase == FAILED -> skip                    /* the verdict's code: no reload */
       :: phase == READY && cons != M_NONE -> skip   /* nonce_already_consumed */
       :: phase == READY && cons == M_NONE && !nonce -> skip   /* nonce_unavailable */
       :: phase == READY && cons == M_NONE && nonce ->
          cons = M_PEND;
#ifdef BROKEN_RELEASE_BEFORE_DURABLE
          release(p);
#endif
          enqueue(K_MARK, 1);  r_pkg = p;  r_pc = 2
       fi;
       p = 0 }
  /* the persist outcome; on Ok take the nonce by value, sign, release */
  :: atomic { r_pc == 2 && res[1] != R_NONE ->
       if
       :: res[1] == R_OK ->
          cons = M_KEPT;                               /* settle */
#ifdef BROKEN_RELEASE_BEFORE_DURABLE
          nonce = 0                                    /* (released already) */
#else
          if
          :: nonce -> nonce = 0; release(r_pkg)
          :: else -> skip                              /* nonce_unavailable (a reload replayed it) */
          fi
#endif
       :: res[1] == R_NW -> cons = M_NONE              /* store_commit_failed: nonce stays live */
       :: res[1] == R_UNK -> cons = M_KEPT; nonce = 0  /* store_outcome_unknown: nonce wiped */
       fi;
       res[1] = R_NONE;  r_pc = 0;  r_pkg = 0 }
  od
}

/* background traffic: one other record (e.g. a session/attempt binding), committed in the
   background and possibly grouped with the marker */
proctype Other() {
end:
  do
  :: atomic { o_pc == 0 && !o_rec && phase == READY -> o_rec = 1; enqueue(K_OTHER, O_OTHER); o_pc = 1 }
  :: atomic { o_pc == 1 && res[O_OTHER] != R_NONE -> res[O_OTHER] = R_NONE; o_pc = 0 }
  /* any other request refused with store_not_loaded: the host spawns a reload (proxy.rs) */
  :: atomic { conn && phase == NL && !reloadq -> reloadq = 1 }
  od
}

/* compaction: Service::maintain -> engine.snapshot() -> store.compact(state) */
proctype Compactor() {
end:
  do
#ifdef FIX_SNAPSHOT
  :: atomic { k_pc == 0 && k_n < 1 && phase == READY ->
       k_n++;
       enqueue(K_SNAP0 + (cons != M_NONE), O_SNAP);   /* Pending markers too, queued under the lock */
       k_pc = 2 }
#else
  :: atomic { k_pc == 0 && k_n < 1 && phase == READY ->
       k_n++;
       k_mark = (cons == M_KEPT);                     /* snapshot(): Kept markers only */
       k_pc = 1 }
  :: atomic { k_pc == 1 ->                            /* compact(): submit */
       if
       :: phase == READY -> enqueue(K_SNAP0 + k_mark, O_SNAP); k_pc = 2
       :: else -> k_pc = 0                            /* NotWritten(store_not_loaded) */
       fi;
       k_mark = 0 }
#endif
  :: atomic { k_pc == 2 && res[O_SNAP] != R_NONE -> res[O_SNAP] = R_NONE; k_pc = 0 }
  od
}

/* ------------------------------------------------------------------ the enclave's committer */

/* ChainedStore::commit_loop + commit (enclave/src/store/mod.rs) */
proctype Committer() {
  byte i;
end:
  do
  /* take a batch: a snapshot alone, else everything up to the next snapshot; chain it */
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
          c_pc = 1
       fi;
       i = 0 }
  /* PersistRecords: one chunk, one host transaction (a batch of k records = k chunks here) */
  :: atomic { c_pc == 1 && !m_full ->
       if
       :: conn && c_conn == connid ->
          m_full = 1;  m_conn = c_conn;  m_ver = bver[c_i];  m_mac = bmac[c_i];
          m_prev = bprev[c_i];  m_kind = bk[c_i];  m_compact = (bk[c_i] >= K_SNAP0);
          c_pc = 2
       :: else -> unknown()                 /* channel_closed */
       fi }
  :: atomic { c_pc == 2 && rep != HP_IDLE && rep_conn == c_conn ->
       if
       :: rep == HP_ACK ->
          rep = HP_IDLE;  rep_conn = 0;  c_i++;
          if
          :: c_i < c_n -> c_pc = 1
          :: else ->
             c_pc = 3;
#ifdef BROKEN_RELEASE_BEFORE_ANCHOR
             deliver(R_OK);  c_early = 1
#endif
          fi
       :: rep == HP_FAIL && c_i == 0 -> rep = HP_IDLE; rep_conn = 0; notwritten()   /* 1st chunk refused */
       :: rep == HP_FAIL && c_i > 0 -> rep = HP_IDLE; rep_conn = 0; unknown()
       fi }
  :: atomic { c_pc == 2 && !(conn && c_conn == connid) -> unknown() }   /* no ack: connection ended */
  /* crash point after_ack_before_anchor lies here; anchor::update, then head = anchor = new
     head and every queued request resolves Ok (crash point after_anchor_before_release lies
     between this step and the request's release) */
  :: atomic { c_pc == 3 ->
       if
       :: faults < MAXF -> faults++; unknown()          /* the HSM update failed */
       :: true ->
          assert(bprev[0] == amac && bver[0] == aver + 1);   /* chained on the anchored head */
          aver = bver[c_n - 1];  amac = bmac[c_n - 1];
          i = 0;
          do
          :: i < c_n -> if :: bk[i] == K_MARK || bk[i] == K_SNAP1 -> m_anch = bver[i]; m_amac = bmac[i] :: else fi; i++
          :: else -> break
          od;
          i = 0;
          hver = aver;  hmac = amac;  iaver = aver;  iamac = amac;
          deliver(R_OK);
          batch_clear()
       fi }
  od
}

/* ------------------------------------------------------------------ the host */

inline read_store() {             /* HostStore::records: the whole store, then streamed */
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
  :: m_compact ->                 /* compact_before: delete every older row, same transaction */
     i = lo;
     do
     :: i < m_ver -> rmac[i] = 0; rprev[i] = 0; rkind[i] = 0; i++
     :: else -> break
     od;
     lo = m_ver
  :: else
  fi
}

#define CONTINUES ((hi == 0 && (m_ver == 1 || m_compact)) || (hi > 0 && m_ver == hi + 1 && m_prev == rmac[hi]))

/* host/src/node/enclave.rs persist_records + host/src/node/store.rs append; proxy.rs loads */
proctype Host() {
  byte i;
end:
  do
  /* (re)connect (supervise) and load the store */
  :: atomic { !conn && !lh -> conn = 1; connid++; read_store() }
  /* PersistRecords: one SQLite transaction, synchronous=FULL */
  :: atomic { m_full && h_pc == HP_IDLE ->
       m_full = 0;  h_conn = m_conn;
       if
       :: faults < MAXF -> faults++; h_pc = HP_FAIL     /* host_before_commit: transaction refused */
       :: true ->
#ifdef PROP_CONSISTENT
          assert(CONTINUES || attacked);                /* P5 */
#endif
          if
          :: CONTINUES -> append_row(); h_pc = HP_ACK
          :: else -> h_pc = HP_FAIL                     /* "does not continue the stored head" */
          fi
#ifndef NO_ATTACKER
       :: lies < 1 && CONTINUES ->                      /* attacker: commit, answer store_commit_failed */
          lies++;  attacked = 1;  append_row();  h_pc = HP_FAIL
#endif
       fi;
       m_conn = 0;  m_ver = 0;  m_mac = 0;  m_prev = 0;  m_kind = 0;  m_compact = 0;
       i = 0 }
  /* crash point host_after_commit_before_ack lies here; the ack */
  :: atomic { h_pc != HP_IDLE ->
       if
       :: conn && h_conn == connid -> rep = h_pc; rep_conn = h_conn
       :: else                                          /* connection gone: reply lost */
       fi;
       h_pc = HP_IDLE;  h_conn = 0 }
  /* a reload spawned after a store_not_loaded reply (one load at a time) */
  :: atomic { conn && !lh && reloadq -> reloadq = 0; read_store() }
  od
}

/* ------------------------------------------------------------------ the enclave: load, adopt */

/* ChainedStore::load_chunk (first = last), chain::check_against_anchor, Engine::replay, adopt */
proctype Enclave() {
  byte i;  byte verdict;  bool ahead;  bool mk;
end:
  do
  :: atomic { lh && conn && l_conn == connid ->
       verdict = V_OK;  ahead = 0;
#ifdef FIX_LOAD_WHILE_READY
       if :: phase == READY -> verdict = V_SKIP :: else fi;
#endif
       /* Loader: the chain starts at record 1 or at a complete snapshot (rows are contiguous
          and MAC-valid by construction: the attacker cannot forge MACs) */
       if
       :: verdict == V_OK && l_hi > 0 && !((l_lo == 1 && lprev[1] == 0) || lkind[l_lo] >= K_SNAP0) ->
          verdict = V_TAMPERED
       :: else
       fi;
       /* re-read the anchor; "moved during the load" is judged against i.anchor, as the code does */
       if :: verdict == V_OK && aver != iaver -> verdict = V_AGAIN :: else fi;
       /* check_against_anchor (the loader tracked the successor of i.anchor's version) */
       if
       :: verdict == V_OK ->
          if
          :: l_hi == aver -> if :: l_hi == 0 || lmac[l_hi] == amac -> skip :: else -> verdict = V_TAMPERED fi
          :: l_hi < aver -> verdict = V_ROLLBACK
          :: l_hi > aver ->
             if
             :: iaver + 1 >= l_lo && lprev[iaver + 1] == amac -> ahead = 1
             :: else -> verdict = V_TAMPERED
             fi
          fi
       :: else
       fi;
       if
       :: verdict == V_TAMPERED || verdict == V_ROLLBACK ->
#ifdef PROP_BOOT
          assert(attacked);                                 /* P2b */
#endif
          phase = FAILED
       :: verdict == V_OK && committing -> skip             /* a commit is in flight: load again */
       :: verdict == V_OK && !committing ->
#ifdef PROP_ROLLBACK
          /* P3: the adopted store reaches the anchored head and holds the anchored marker
             record, unless its start (a snapshot) now lies after it */
          assert(l_hi >= aver);
          assert(m_anch == 0 || (l_hi >= m_anch && (l_lo > m_anch || lmac[m_anch] == m_amac)));
#endif
          phase = NL;
          if
          :: ahead ->                                       /* finish the interrupted anchor update */
             i = aver + 1;
             do
             :: i <= l_hi -> if :: lkind[i] == K_MARK || lkind[i] == K_SNAP1 -> m_anch = i; m_amac = lmac[i] :: else fi; i++
             :: else -> break
             od;
             aver = l_hi;  amac = lmac[l_hi]
          :: else
          fi;
          iaver = l_hi;  hver = l_hi;
          if :: l_hi == 0 -> iamac = 0 :: else -> iamac = lmac[l_hi] fi;
          hmac = iamac;
          /* engine.replay: only adds markers; a replayed marker removes the nonce */
          loaded_mark(mk);
          if :: mk -> cons = M_KEPT; nonce = 0 :: else fi;
#ifdef PROP_RETAIN
          assert(!released || mk);                          /* P4 */
#endif
          /* adopt: live on this connection */
          e_chan = l_conn;  phase = READY
       :: else -> skip                                      /* V_AGAIN, V_SKIP */
       fi;
       clear_load();
       i = 0;  verdict = 0;  ahead = 0;  mk = 0 }
  od
}

/* ------------------------------------------------------------------ crashes */

/* A crash and the restart are one step: a restarted process that is not connected yet is
   inert, and everything that may happen while it is down may happen then. */
proctype Crash() {
  byte i;
end:
  do
  /* the enclave dies and restarts: all volatile state is lost, the nonce forever;
     ChainedStore::open reads the anchor, the store is not loaded */
  :: atomic { crashes < MAXC ->
       crashes++;
       cons = M_NONE;  nonce = 0;  e_chan = 0;
       qn = 0;  qk[0] = 0; qk[1] = 0; qk[2] = 0; qo[0] = 0; qo[1] = 0; qo[2] = 0;
       batch_clear();
       r_pc = 0;  r_pkg = 0;
       res[1] = 0; res[2] = 0; res[3] = 0; res[4] = 0;
       o_pc = 0;  k_pc = 0;  k_mark = 0;
       conn_close();                /* a PersistRecords already sent may still be committed */
       phase = NL;  hver = aver;  hmac = amac;  iaver = aver;  iamac = amac }
  /* the host dies and restarts: an uncommitted transaction and an unsent ack are lost */
  :: atomic { crashes < MAXC ->
       crashes++;
       h_pc = HP_IDLE;  h_conn = 0;  m_full = 0;
       m_conn = 0;  m_ver = 0;  m_mac = 0;  m_prev = 0;  m_kind = 0;  m_compact = 0;
       conn_close() }
  od
}

/* ------------------------------------------------------------------ the attacker (host user) */

/* keeps one copy of host.db, and may put it back later (while nodes run or between crashes) */
proctype Attacker() {
  byte cmac[MAXV+1];  byte cprev[MAXV+1];  byte ckind[MAXV+1];  byte clo;  byte chi;
  byte i;  bool differ;
  atomic {
    i = 0;
    do
    :: i <= MAXV -> cmac[i] = rmac[i]; cprev[i] = rprev[i]; ckind[i] = rkind[i]; i++
    :: else -> break
    od;
    clo = lo;  chi = hi;  i = 0 };
  atomic {
    differ = (clo != lo || chi != hi);
    i = 0;
    do
    :: i <= MAXV -> differ = differ || cmac[i] != rmac[i];
                   rmac[i] = cmac[i]; rprev[i] = cprev[i]; rkind[i] = ckind[i]; i++
    :: else -> break
    od;
    lo = clo;  hi = chi;
    attacked = attacked || differ;
    i = 0;
    do
    :: i <= MAXV -> cmac[i] = 0; cprev[i] = 0; ckind[i] = 0; i++
    :: else -> break
    od;
    i = 0;  clo = 0;  chi = 0;  differ = 0 }
}

#ifdef PROP_LOADABLE
active proctype Monitor() {
end:
  atomic { !attacked && !LOADABLE -> assert(false) }   /* P2a */
}
#endif

init {
  atomic {
    run Coordinator();
    run Other();
    run Committer();
    run Host();
    run Enclave();
    run Crash();
#ifndef NO_COMPACTION
    run Compactor();
#endif
#ifndef NO_ATTACKER
    run Attacker();
#endif
  }
}
