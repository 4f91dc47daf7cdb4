/*
 * lease.pml -- the consumer-group lease protocol of docs/protocol.md §8
 * (bus/group/consumer_core.cpp), for Spin.
 *
 * What is modelled, by the code's names:
 *   the lease word per ring slot (state, attempt, owner, lap tag; the
 *   deadline is abstracted, below); the group's `next` and `floor`; the
 *   consumer table (control word = state + pid); the producer's `head` and
 *   the slot stamps; ConsumerCore::take_new (G1, G2, help_advance_next, the
 *   re-read of `next`), take_due (G7, G8, owner_dead, the re-load after a
 *   release), deliver (G10, G11), ack (G3), nack (G4), extend (G5),
 *   dead_letter (G6), send_to_dlq (G9; the DLQ may refuse), release
 *   (leaving: G12 then free), release_consumer / release_leases_of (G12),
 *   join_consumer, advance_floor; a block publisher gated by the floor.
 *   With -DRUN, take_new's G1 may go on as a run (ConsumerCore::take_run,
 *   receive_batch): a G1 at n + 1 before `next` moves past n, then one
 *   raise of `next` past the run.
 *   Consumers may crash at any of the marked points (kill -9), leave, and a
 *   late consumer may join and reuse a freed index.
 *
 * Abstractions (each makes the model allow MORE behaviours than the code):
 *   - Time: "the deadline is reached" is a nondeterministic choice at every
 *     check, so any lease may expire at any moment, and the deadline field
 *     is left out of the word: two words that differ only in their deadline
 *     compare equal here, so every CAS that succeeds in the code succeeds
 *     here (and some that fail in the code succeed here).
 *   - extend (G5) therefore rewrites the same word: it only checks that the
 *     lease is still held.
 *   - Memory is sequentially consistent; docs/protocol.md §9 argues the
 *     C++ memory orders separately.
 *   - The publisher does not crash here (publish.pml covers publishers).
 *
 * Invariants (assertions; Spin reports the first violation):
 *   I1 no two live leases on one message: at every change of a lease word
 *      or of a consumer's held delivery, at most one live consumer holds a
 *      delivery whose word equals the current word of that message; and no
 *      two live consumers share a consumer index.
 *   I2 each message acked or dead-lettered: when the floor has passed every
 *      sequence, each committed message ended acked (by a consumer it was
 *      delivered to) or dead-lettered (and the DLQ got a copy), each
 *      aborted claim ended finished by G2, and nothing was lost (block).
 *      Every sequence is finished exactly once.
 *   I3 the floor only passes finished sequences, and the publisher never
 *      reuses a slot whose previous message the group has not finished.
 *   I4 a message is delivered at most MAXDEL times.
 *
 * Ordered groups (-DORDERED, GroupOrdering::per_key): consumers receive by
 * the per-key scan of take_ordered() instead of take_due / take_new. Each
 * message s carries the key KEY(s) (bit s of KEYPAT: two keys). Further
 * invariants, asserted with I1 at every change of a lease word or held
 * delivery, and at every finishing transition:
 *   K1 per key, at most one message in progress (its word of its lap
 *      leased, due or dead-lettering); hence never two live leases on one
 *      key: at most one live consumer holds a delivery of a key whose word
 *      is current.
 *   K2 per key, completions (ack, dead-letter, loss) happen in sequence
 *      order: when s finishes, every committed earlier message of its key
 *      has finished.
 *   K3 a message finishes only below `next`, so the floor can pass it
 *      (`next` is one past the highest sequence ever leased).
 *
 * Deliberately broken variants (the tests expect Spin to find a violation):
 *   -DBROKEN_FLOOR            advance_floor skips a sequence when
 *                             f + capacity <= head (the bug fixed by commit
 *                             45df166): violates I3.
 *   -DBROKEN_NO_NEXT_RECHECK  take_new pairs the stamp and lease word it read
 *                             without re-reading `next`: a consumer delayed a
 *                             whole lap leases the wrong lap (I2 / I3).
 *   -DBROKEN_JOIN_NO_CAS      join_consumer takes a free entry with a load
 *                             and a store instead of a CAS: two consumers
 *                             share an index (I1).
 *   -DBROKEN_DUE_NO_BLOCK     (with ORDERED) the scan does not block the key
 *                             of a due message whose time has not come: a
 *                             later message of the key is leased (K1, K2).
 *   -DBROKEN_RAISE_ON_G1_ONLY (with ORDERED) only a first lease (G1) raises
 *                             `next`, not a re-lease (G7, G8): after a kill
 *                             between G1 and the raise, a message finishes
 *                             at or above `next`, and the floor cannot pass
 *                             it until a later message is leased (K3).
 *   -DBROKEN_SCAN_FROM_NEXT   (with ORDERED) the scan starts at `next`, past
 *                             the floor: it misses the earlier messages of a
 *                             key still in progress (K1, K2).
 *
 * Bounds (-D on the spin command line): CAP slots, NMSG messages published,
 * MAXDEL max_deliveries, REJOIN 1 adds a third consumer that joins late,
 * MAXCRASH crashes in all; with ORDERED, KEYPAT the keys (bit s = key of
 * message s; default 4: keys 0 0 1 0) and WIN the order window (default CAP).
 */

#ifndef CAP
#define CAP 2
#endif
#ifndef NMSG
#define NMSG 3
#endif
#ifndef MAXDEL
#define MAXDEL 2
#endif
#ifndef REJOIN
#define REJOIN 0
#endif
#ifndef MAXCRASH
#define MAXCRASH 1
#endif
#ifndef KEYPAT
#define KEYPAT 4
#endif
#ifndef WIN
#define WIN CAP
#endif
#define KEY(q) (((KEYPAT) >> (q)) & 1)
#define NIDX 2            /* consumer entries per group (max_consumers) */
#define NPROC 4           /* consumer pids 1..3 (0 = nobody) */
#define NONE 255
#define NOOWN 3           /* kLeaseNoOwner: a lease held by dead_letter_due, no consumer entry */

/* Stamp word: make_stamp(seq, state) */
#define S_EMPTY 0
#define S_WRITING 1
#define S_COMMITTED 2
#define S_ABANDONED 3
#define MKS(q, st) ((q) * 4 + (st))

/* Lease word: make_lease(state, attempt, owner, lap); 0 = never used */
#define L_FREE 0
#define L_LEASED 1
#define L_DUE 2
#define L_ACKED 3
#define L_DEADLETTERED 4
#define L_LOST 5
#define L_DEADLETTERING 6
#define MK(st, a, o, l) ((st) + 8 * (a) + 64 * (o) + 256 * (l))
#define WST(w) ((w) % 8)
#define WATT(w) (((w) / 8) % 8)
#define WOWN(w) (((w) / 64) % 4)
#define WLAP(w) ((w) / 256)
#define FINAL(st) ((st) == L_ACKED || (st) == L_DEADLETTERED || (st) == L_LOST)
#define LAP(q) ((q) / CAP)

/* Consumer entry control word: state + 4 * pid */
#define E_FREE 0
#define E_CLAIMING 1
#define E_ACTIVE 2
#define CST(c) ((c) % 4)
#define CPID(c) ((c) / 4)

/* How each sequence was finished (ghost) */
#define F_NONE 0
#define F_ACKED 1
#define F_DEADLETTERED 2
#define F_LOST 3
#define F_G2 4

byte stamp[CAP];
short lease[CAP];
byte next = 0;
byte floor = 0;
byte head = 0;
byte ctl[NIDX];
bit pub_done = 0;

/* ghosts */
bit alive[NPROC];
byte myidx[NPROC];       /* consumer index a live consumer holds, NONE if none */
byte held_seq[NPROC];    /* the delivery it holds */
short held_word[NPROC];
bit committed[NMSG];
byte fin[NMSG];
byte acks[NMSG];
byte dlq[NMSG];          /* copies the DLQ got */
byte delivered[NMSG];    /* ok deliveries */
byte crashes = 0;

#ifdef ORDERED
/* K1 for the key of message q: at most one message of the key in progress
 * (word of its own lap, neither free nor final), and at most one live
 * consumer holding a current delivery of the key. */
inline check_keys(q) {
  kn = 0; i1p = 0;
  do
  :: i1p < NMSG ->
     if
     :: KEY(i1p) == KEY(q) && lease[i1p % CAP] != 0 && WLAP(lease[i1p % CAP]) == LAP(i1p) &&
        !FINAL(WST(lease[i1p % CAP])) -> kn++
     :: else -> skip
     fi;
     i1p++
  :: else -> break
  od;
  assert(kn <= 1);   /* K1: one message of a key in progress */
  kn = 0; i1p = 1;
  do
  :: i1p < NPROC ->
     if
     :: alive[i1p] && held_seq[i1p] != NONE && KEY(held_seq[i1p]) == KEY(q) &&
        held_word[i1p] == lease[held_seq[i1p] % CAP] && WLAP(held_word[i1p]) == LAP(held_seq[i1p]) -> kh++
     :: else -> skip
     fi;
     i1p++
  :: else -> break
  od;
  assert(kh <= 1);   /* K1: never two live leases on one key */
  kh = 0; i1p = 0
}
#endif

/* I1: at most one live holder of message q's current word, and every live
 * consumer on its own index. */
inline check_i1(q) {
  i1n = 0; i1p = 1;
    do
    :: i1p < NPROC ->
       if
       :: alive[i1p] && held_seq[i1p] == q && held_word[i1p] == lease[(q) % CAP] &&
          WLAP(held_word[i1p]) == LAP(q) -> i1n++
       :: else -> skip
       fi;
       i1q = i1p + 1;
       do
       :: i1q < NPROC ->
          assert(!(alive[i1p] && alive[i1q] && myidx[i1p] != NONE && myidx[i1p] == myidx[i1q]));
          i1q++
       :: else -> break
       od;
       i1p++
    :: else -> break
    od;
  assert(i1n <= 1);
#ifdef ORDERED
  check_keys(q);
#endif
  i1n = 0; i1p = 0; i1q = 0
}

/* Ghost bookkeeping of a finishing transition for sequence q. */
inline finished(q, how) {
  assert(fin[q] == F_NONE);  /* each sequence is finished exactly once */
#ifdef ORDERED
  if
  :: how != F_G2 ->          /* a message (an aborted claim has no key) */
     assert(q < next);       /* K3 */
     i1p = 0;
     do
     :: i1p < q ->
        assert(!(KEY(i1p) == KEY(q) && committed[i1p] && fin[i1p] == F_NONE));   /* K2 */
        i1p++
     :: else -> break
     od;
     i1p = 0
  :: else -> skip
  fi;
#endif
  fin[q] = how
}

/* kill -9 at this point (a consumer that may crash, within the budget). */
inline crash_point() {
  if
  :: skip
  :: may_crash && crashes < MAXCRASH ->
     atomic { crashes++; alive[p] = 0; held_seq[p] = NONE; held_word[p] = 0 };
     goto done
  fi
}

/* help_advance_next(n): next.CAS(n, n + 1) */
inline help_advance_next(q) {
  atomic { if :: next == q -> next = q + 1 :: else -> skip fi }
}

/* advance_floor(): move the floor over finished sequences, one CAS each
 * (the code's jump over slots already reused, f + capacity < head, never
 * applies under block). The loads of floor, next and head are one step here: all three only grow,
 * and a stale floor only makes the CAS fail and re-load (so reading it last
 * loses nothing). Each iteration's lease load and floor CAS are one step
 * too: while floor == f, the word for lap(f) can only become final, never
 * change once final, so reading it at the CAS is reading it as late as the
 * code could. */
inline advance_floor() {
  atomic { af = floor; anx = next; ahd = head };
  do
  :: af < anx ->
     atomic {
       aw = lease[af % CAP];
#ifdef BROKEN_FLOOR
       if
       :: (aw != 0 && FINAL(WST(aw)) && WLAP(aw) == LAP(af)) || af + CAP <= ahd ->
#else
       if
       :: (aw != 0 && FINAL(WST(aw)) && WLAP(aw) == LAP(af)) || af + CAP < ahd ->
#endif
          if
          :: floor == af ->
             assert(fin[af] != F_NONE);  /* I3: only finished sequences */
             floor = af + 1; af++
          :: else -> af = floor
          fi
       :: else -> af = anx   /* not finished: stop */
       fi
     }
  :: else -> break
  od;
  af = 0; anx = 0; ahd = 0; aw = 0
}

/* release_leases_of(o): make o's leases in [floor, next) due (G12), and
 * those of a run o was taking past `next` (its leases at next, next + 1,
 * ... up to the first word that is not o's live lease of its lap). */
inline release_leases_of(o) {
  rf = floor; rnx = next; rs = rf;
  do
  :: rs < NMSG && rs - rf < CAP ->
     atomic {
       rw = lease[rs % CAP];
       if
       :: (WST(rw) == L_LEASED || WST(rw) == L_DEADLETTERING) && WOWN(rw) == o && WLAP(rw) == LAP(rs) ->
          lease[rs % CAP] = MK(L_DUE, WATT(rw), o, LAP(rs));   /* G12 */
          check_i1(rs)
       :: else -> if :: rs >= rnx -> rs = NMSG :: else -> skip fi   /* past next: the run ended */
       fi
     };
     rs++
  :: else -> break
  od;
  rf = 0; rnx = 0; rs = 0; rw = 0
}

/* release_consumer(k, seen): reserve the entry judged dead (CAS from the word
 * judged), release its leases, free it. */
inline release_consumer(k, seen) {
  atomic {
    if
    :: ctl[k] == seen -> ctl[k] = E_CLAIMING + 4 * p; rok = 1
    :: else -> rok = 0
    fi
  };
  if
  :: rok ->
     if
     :: CST(seen) == E_ACTIVE -> release_leases_of(k)
     :: else -> skip
     fi;
     ctl[k] = E_FREE
  :: else -> skip
  fi;
  rok = 0
}

/* owner_dead(o): a non-active entry, or an active one whose process is dead
 * (then released at once). */
inline owner_dead(o) {
  oc = ctl[o];
  if
  :: CST(oc) != E_ACTIVE -> odead = 1
  :: else ->
     if
     :: !alive[CPID(oc)] -> odead = 1; release_consumer(o, oc)
     :: else -> odead = 0
     fi
  fi;
  oc = 0
}

/* send_to_dlq(q, held, back): copy to the DLQ (may be refused), then G9.
 * On a refusal, back == 0 leaves the dead-lettering word to its deadline
 * (dead_letter, take_due); back == 1 turns it due again, one CAS from the
 * held word (G4r after a final nack, and dead_letter_due's refusal). */
inline send_to_dlq(q, hw, back) {
  if
#ifndef NO_DLQ_FAILURE
  :: back == 0 -> skip   /* the DLQ refused (full, or not creatable): dlq_failures */
  :: back == 1 ->
     crash_point();
     atomic {
       if
       :: lease[(q) % CAP] == hw -> lease[(q) % CAP] = MK(L_DUE, WATT(hw), WOWN(hw), LAP(q)); check_i1(q)   /* G4r */
       :: else -> skip
       fi
     }
#endif
  :: atomic { if :: dlq[q] < 2 -> dlq[q]++ :: else -> skip fi };   /* committed to the DLQ (ghost count saturates) */
     crash_point();
     atomic {
       if
       :: lease[(q) % CAP] == hw ->
          lease[(q) % CAP] = MK(L_DEADLETTERED, WATT(hw), WOWN(hw), LAP(q));   /* G9 */
          finished(q, F_DEADLETTERED);
          check_i1(q);
          ok = 1
       :: else -> ok = 0
       fi
     };
     if :: ok -> advance_floor() :: else -> skip fi
  fi
}

/* deliver(q, lw): re-check the stamp after the copy; G10 / G11 / ok. */
inline deliver(q, lw) {
  if
  :: stamp[(q) % CAP] != MKS(q, S_COMMITTED) ->
     atomic {
       if
       :: lease[(q) % CAP] == lw ->
          lease[(q) % CAP] = MK(L_LOST, WATT(lw), WOWN(lw), LAP(q));     /* G10 */
          finished(q, F_LOST);
          check_i1(q);
          ok = 1
       :: else -> ok = 0
       fi
     };
     if :: ok -> advance_floor() :: else -> skip fi
  :: else ->
     if
#ifndef NO_G11
     :: atomic {                                /* G11: the caller's buffer is too small */
          lease[(q) % CAP] == lw ->
          lease[(q) % CAP] = MK(L_DUE, WATT(lw) - 1, WOWN(lw), LAP(q));
          check_i1(q)
        }
     :: lease[(q) % CAP] != lw -> skip          /* G11 lost the race: nothing to give back */
#endif
     :: atomic {
          delivered[q]++;
          assert(delivered[q] <= MAXDEL);   /* I4 */
          held_seq[p] = q; held_word[p] = lw;
          check_i1(q)
        }
     fi
  fi
}

/* raise_next(q): next = max(next, q + 1), the code's CAS-max loop (its
 * failed CASes change nothing, so one step is exact). */
inline raise_next(q) {
  atomic { if :: next < q + 1 -> next = q + 1 :: else -> skip fi }
}

#ifdef RUN
/* The rest of a run (ConsumerCore::take_run, receive_batch): after its G1
 * at n, and before `next` moves, the consumer may take n + 1 too, with the
 * run's re-read (`next` still at most n + 1 after loading both words: no
 * consumer can have leased n + 1 + capacity), then moves `next` past what
 * it took (raise_next). The earlier delivery of the run is held until the
 * next one replaces it here (the model holds one delivery per consumer);
 * its lease then stays with this live consumer until it expires, as a
 * forgotten delivery's does. Meanwhile other consumers find the run's
 * words at `next` and help `next` over them, as after any G1. */
inline take_run_more() {
  deliver(n, lw);
  rn = n + 1;
  if
  :: rn >= NMSG -> raise_next(n)
  :: else ->
     st = stamp[rn % CAP];
     w = lease[rn % CAP];
     if
     :: next > rn -> raise_next(n)                 /* someone moved `next` past rn: the run ends */
     :: st != MKS(rn, S_COMMITTED) || !(w == 0 || (FINAL(WST(w)) && WLAP(w) != LAP(rn))) ->
        raise_next(n)                              /* not for the run: take_new's */
     :: else ->
        rlw = MK(L_LEASED, 1, me, LAP(rn));
        atomic {
          if
          :: lease[rn % CAP] == w -> lease[rn % CAP] = rlw; check_i1(rn); ok = 1    /* G1 */
          :: else -> ok = 0
          fi
        };
        if
        :: ok ->
           crash_point();
           raise_next(rn);
           deliver(rn, rlw)
        :: else -> raise_next(n)
        fi
     fi
  fi;
  rn = 0; rlw = 0
}
#endif

/* take_new(): the next new message at `next` (G1), or finish an abandoned
 * claim (G2). */
inline take_new() {
  skip;
tn_again:
  n = next;
  if
  :: n >= NMSG -> goto tn_out        /* nothing will ever be published there */
  :: else -> skip
  fi;
  st = stamp[n % CAP];
  w = lease[n % CAP];
#ifndef BROKEN_NO_NEXT_RECHECK
  if :: next != n -> goto tn_again :: else -> skip fi;
#endif
  if
  :: w != 0 && WLAP(w) == LAP(n) ->                       /* taken: help */
     help_advance_next(n); goto tn_again
  :: else -> skip
  fi;
  if
  :: st == MKS(n, S_COMMITTED) ->
     lw = MK(L_LEASED, 1, me, LAP(n));
     atomic {
       if
       :: lease[n % CAP] == w ->
          lease[n % CAP] = lw;                             /* G1 */
          check_i1(n);
          /* an earlier lap's unfinished word: overwritten, lost */
          assert(w == 0 || FINAL(WST(w)));   /* never an unfinished earlier lap (block) */
          ok = 1
       :: else -> ok = 0
       fi
     };
     if :: !ok -> goto tn_again :: else -> skip fi;
     crash_point();
#ifdef RUN
     if
     :: take_run_more(); goto tn_out
     :: skip
     fi;
#endif
     help_advance_next(n);
     deliver(n, lw);
     goto tn_out
  :: st == MKS(n, S_ABANDONED) ->
     atomic {
       if
       :: lease[n % CAP] == w ->
          lease[n % CAP] = MK(L_ACKED, 0, 0, LAP(n));       /* G2 */
          finished(n, F_G2);
          check_i1(n);
          ok = 1
       :: else -> ok = 0
       fi
     };
     if
     :: ok -> help_advance_next(n); advance_floor()
     :: else -> skip
     fi;
     goto tn_again
  :: st % 4 != S_EMPTY && st / 4 > n ->
     assert(st / 4 <= n)   /* lapped: never under block */
  :: else -> skip    /* nothing committed at next yet */
  fi;
tn_out:
  n = 0; st = 0; w = 0
}

/* take_due(): a redelivery (G7) or a dead-lettering (G8). */
inline take_due() {
  advance_floor();
  f = floor; nx = next;
  if :: nx > f && nx - f > CAP -> f = nx - CAP :: else -> skip fi;
  s = f;
  do
  :: s < nx ->
     w = lease[s % CAP];
     if
     :: w == 0 || WLAP(w) != LAP(s) -> goto td_next
     :: else -> skip
     fi;
     ready = 0;
     if
     :: WST(w) == L_LEASED || WST(w) == L_DEADLETTERING ->
        if
        :: ready = 1       /* the deadline was reached */
        :: WOWN(w) == NOOWN -> skip   /* a dead_letter_due mover's lease: its deadline only */
        :: WOWN(w) != NOOWN ->
           owner_dead(WOWN(w));
           if
           :: odead ->
              w2 = lease[s % CAP];
              if
              :: w2 == w -> ready = 1
              :: w2 != w && WLAP(w2) == LAP(s) && WST(w2) == L_DUE ->
                 if :: w = w2; ready = 1 :: skip fi    /* due, and its time has come? */
              :: else -> skip
              fi;
              w2 = 0
           :: else -> skip
           fi;
           odead = 0
        fi
     :: WST(w) == L_DUE -> if :: ready = 1 :: skip fi
     :: else -> skip
     fi;
     if
     :: !ready || WLAP(w) != LAP(s) || FINAL(WST(w)) || w == 0 -> goto td_next
     :: else -> skip
     fi;
     if
     :: WATT(w) >= MAXDEL || WST(w) == L_DEADLETTERING ->
        lw = MK(L_DEADLETTERING, WATT(w), me, LAP(s));
        atomic {
          if
          :: lease[s % CAP] == w -> lease[s % CAP] = lw; check_i1(s); ok = 1    /* G8 */
          :: else -> ok = 0
          fi
        };
        if
        :: ok -> send_to_dlq(s, lw, 0)
        :: else -> skip
        fi;
        goto td_next
     :: else ->
        lw = MK(L_LEASED, WATT(w) + 1, me, LAP(s));
        atomic {
          if
          :: lease[s % CAP] == w -> lease[s % CAP] = lw; check_i1(s); ok = 1    /* G7 */
          :: else -> ok = 0
          fi
        };
        if
        :: ok -> deliver(s, lw); got = 1; break
        :: else -> goto td_next
        fi
     fi;
td_next:
     s++
  :: else -> break
  od;
  s = 0; f = 0; nx = 0; w = 0; ready = 0
}

#ifdef ORDERED
/* A re-lease (G7, G8) raises `next` too: the consumer that leased s first
 * may have been killed between its G1 and its raise. */
#ifdef BROKEN_RAISE_ON_G1_ONLY
#define RAISE_AGAIN(q) skip
#else
#define RAISE_AGAIN(q) raise_next(q)
#endif

/* take_ordered(): the receive of a per_key consumer. It walks s from the
 * floor up to min(floor + WIN, the first sequence not committed), keeping
 * the keys it has seen in progress in `blk` (its local set of blocked keys),
 * and leases the first message that is due again (G7 / G8) or free with its
 * key not blocked (G1). Every lease word load and stamp load is its own
 * step: other consumers' CASes, acks, nacks, expiries and kills interleave
 * with the scan. The key is read with the stamp: under the seqlock
 * discipline (stamp, meta, stamp again) a stamp of s means the key of s. */
inline take_ordered() {
  advance_floor();
#ifdef BROKEN_SCAN_FROM_NEXT
  f = next;
#else
  f = floor;
#endif
  blk = 0; s = f;
  do
  :: s < f + WIN && s < NMSG ->   /* (beyond NMSG no stamp is ever of s: the scan would stop) */
     w = lease[s % CAP];
     if
     :: w != 0 && WLAP(w) == LAP(s) && FINAL(WST(w)) -> goto to_next   /* finished: blocks nothing */
     :: else -> skip
     fi;
     st = stamp[s % CAP];
     if
     :: st == MKS(s, S_COMMITTED) -> skip
     :: st == MKS(s, S_ABANDONED) ->
        /* an abandoned claim: finished for the group (G2), as take_new does;
         * the scan stops there (its key is unknown) */
        if
        :: w == 0 || WLAP(w) != LAP(s) ->
           atomic {
             if
             :: lease[s % CAP] == w ->
                lease[s % CAP] = MK(L_ACKED, 0, 0, LAP(s));       /* G2 */
                finished(s, F_G2);
                check_i1(s);
                ok = 1
             :: else -> ok = 0
             fi
           };
           if
           :: ok -> raise_next(s); advance_floor()
           :: else -> skip
           fi
        :: else -> skip
        fi;
        goto to_out
     :: st % 4 != S_EMPTY && st / 4 > s ->
        /* a later message in the slot: s was overwritten (drop_oldest). Under
         * block only a stale scan sees this, after s finished: the loss CAS
         * from the word read before then fails. */
        atomic {
          if
          :: lease[s % CAP] == w && w != 0 && WLAP(w) == LAP(s) ->
             lease[s % CAP] = MK(L_LOST, WATT(w), WOWN(w), LAP(s));   /* G10 */
             finished(s, F_LOST);
             check_i1(s)
          :: else -> skip
          fi
        };
        goto to_next
     :: else -> goto to_out   /* not committed yet: its key is unknown, stop */
     fi;
     k = KEY(s);
     if
     :: w == 0 || WLAP(w) != LAP(s) ->                    /* free */
        if
        :: blk & (1 << k) -> goto to_next                  /* held back behind its key */
        :: else -> skip
        fi;
        lw = MK(L_LEASED, 1, me, LAP(s));
        atomic {
          if
          :: lease[s % CAP] == w ->
             lease[s % CAP] = lw;                           /* G1 */
             check_i1(s);
             assert(w == 0 || FINAL(WST(w)));   /* never an unfinished earlier lap (block) */
             ok = 1
          :: else -> ok = 0
          fi
        };
        blk = blk | (1 << k);    /* leased by us, or by someone faster: blocked either way */
        if :: !ok -> goto to_next :: else -> skip fi;
        crash_point();
        raise_next(s);
        deliver(s, lw);
        goto to_out
     :: else -> skip
     fi;
     /* in progress this lap: leased, dead-lettering or due */
     ready = 0;
     if
     :: WST(w) == L_LEASED || WST(w) == L_DEADLETTERING ->
        if
        :: ready = 1       /* the deadline was reached */
        :: WOWN(w) == NOOWN -> skip   /* a dead_letter_due mover's lease: its deadline only */
        :: WOWN(w) != NOOWN ->
           owner_dead(WOWN(w));
           if
           :: odead ->
              w2 = lease[s % CAP];
              if
              :: w2 == w -> ready = 1
              :: w2 != w && WLAP(w2) == LAP(s) && WST(w2) == L_DUE ->
                 if :: w = w2; ready = 1 :: skip fi    /* due, and its time has come? */
              :: else -> skip
              fi;
              w2 = 0
           :: else -> skip
           fi;
           odead = 0
        fi
     :: WST(w) == L_DUE ->
        if
        :: ready = 1
        :: skip            /* due, its time not yet come */
#ifdef BROKEN_DUE_NO_BLOCK
           ; goto to_next  /* ... and its key left unblocked */
#endif
        fi
     fi;
     blk = blk | (1 << k);
     if
     :: !ready || WLAP(w) != LAP(s) || FINAL(WST(w)) || w == 0 -> goto to_next
     :: else -> skip
     fi;
     if
     :: WATT(w) >= MAXDEL || WST(w) == L_DEADLETTERING ->
        lw = MK(L_DEADLETTERING, WATT(w), me, LAP(s));
        atomic {
          if
          :: lease[s % CAP] == w -> lease[s % CAP] = lw; check_i1(s); ok = 1    /* G8 */
          :: else -> ok = 0
          fi
        };
        if
        :: ok -> RAISE_AGAIN(s); send_to_dlq(s, lw, 0)
        :: else -> skip
        fi;
        goto to_next
     :: else ->
        lw = MK(L_LEASED, WATT(w) + 1, me, LAP(s));
        atomic {
          if
          :: lease[s % CAP] == w -> lease[s % CAP] = lw; check_i1(s); ok = 1    /* G7 */
          :: else -> ok = 0
          fi
        };
        if
        :: ok -> RAISE_AGAIN(s); deliver(s, lw); goto to_out
        :: else -> goto to_next
        fi
     fi;
to_next:
     s++
  :: else -> break
  od;
to_out:
  s = 0; f = 0; st = 0; w = 0; k = 0; blk = 0; ready = 0
}
#endif

/* finish(d, new word): one CAS from the delivery's word (ack/nack/extend/
 * dead_letter). */
inline finish(newword, how) {
  atomic {
    if
    :: lease[held_seq[p] % CAP] == held_word[p] ->
       lease[held_seq[p] % CAP] = newword; ok = 1;
       if
       :: how == F_ACKED -> acks[held_seq[p]]++; finished(held_seq[p], F_ACKED)
       :: how != F_ACKED -> skip
       fi;
       check_i1(held_seq[p])
    :: lease[held_seq[p] % CAP] != held_word[p] -> ok = 0     /* lease_lost */
    fi;
    held_seq[p] = NONE; held_word[p] = 0  /* the delivery is used up either way */
  }
}

proctype consumer(byte p; bit may_crash; bit may_leave) {
  byte me, i, n, s, f, nx, st, af, anx, ahd, rf, rnx, rs, oc, q;
  short w, w2, lw, aw, rw, hw;
  bit ok, ready, got, odead, rok;
#ifdef RUN
  byte rn;
  short rlw;
#endif
  byte i1n, i1p, i1q;
#ifdef ORDERED
  byte k, blk, kn, kh;
#endif

  atomic { held_seq[p] = NONE; held_word[p] = 0; myidx[p] = NONE; alive[p] = 1 };

  /* join_consumer: a free entry (CAS free -> claiming), then active; if
   * none, release an entry whose process is dead, and look again. */
join:
  i = 0; got = 0;
  do
  :: i < NIDX ->
#ifdef BROKEN_JOIN_NO_CAS
     if
     :: ctl[i] == E_FREE -> ctl[i] = E_CLAIMING + 4 * p; me = i; got = 1
     :: else -> skip
     fi;
#else
     atomic {
       if
       :: ctl[i] == E_FREE -> ctl[i] = E_CLAIMING + 4 * p; me = i; got = 1
       :: else -> skip
       fi
     };
#endif
     if :: got -> break :: else -> i++ fi
  :: else -> break
  od;
  if
  :: !got ->
     i = 0;
     do
     :: i < NIDX ->
        q = ctl[i];
        if
        :: CST(q) != E_FREE && !alive[CPID(q)] -> release_consumer(i, q); goto join
        :: else -> i++
        fi
     :: else ->
        if
        :: p == 1 -> goto join   /* table_full: the worker that must stay tries again */
        :: else -> goto done     /* table_full */
        fi
     od
  :: else -> skip
  fi;
  atomic { ctl[me] = E_ACTIVE + 4 * p; myidx[p] = me; check_i1(0); i = 0; got = 0; q = 0 };

  do
  :: floor == NMSG && pub_done -> break
  :: may_leave ->
     /* ~ConsumerCore: release what it holds, then free the entry */
     release_leases_of(me);
     atomic {
       if :: ctl[me] == E_ACTIVE + 4 * p -> ctl[me] = E_FREE :: else -> skip fi;
       myidx[p] = NONE; held_seq[p] = NONE; held_word[p] = 0
     };
     goto done
  :: may_crash && crashes < MAXCRASH ->        /* kill -9 between calls */
     atomic { crashes++; alive[p] = 0; held_seq[p] = NONE; held_word[p] = 0 };
     goto done
  :: held_seq[p] == NONE && (floor < next || next < head) ->
     /* receive(): due redeliveries first, then a new message. (With
      * floor == next == head a receive reads and changes nothing: such
      * idle polls are left out.) */
     got = 0;
#ifdef ORDERED
     take_ordered();
#else
     take_due();
     if :: !got -> take_new() :: else -> skip fi;
#endif
     got = 0; ok = 0; lw = 0
  :: held_seq[p] != NONE ->
     q = held_seq[p];
     hw = held_word[p];
     if
     :: WST(hw) == L_LEASED ->
        if
        :: finish(MK(L_ACKED, WATT(hw), me, LAP(q)), F_ACKED);     /* G3: ack */
           if
           :: ok -> crash_point(); advance_floor()
           :: else -> skip
           fi
#ifdef OLD_FINAL_NACK
        :: finish(MK(L_DUE, WATT(hw), me, LAP(q)), F_NONE)         /* G4: nack, also of the last attempt (before) */
#else
        :: WATT(hw) < MAXDEL -> finish(MK(L_DUE, WATT(hw), me, LAP(q)), F_NONE)   /* G4: nack */
        :: WATT(hw) >= MAXDEL ->                                    /* G4f: the last attempt's nack */
           finish(MK(L_DEADLETTERING, WATT(hw), me, LAP(q)), F_NONE);
           if
           :: ok -> send_to_dlq(q, MK(L_DEADLETTERING, WATT(hw), me, LAP(q)), 1)
           :: else -> skip
           fi
#endif
#ifdef WITH_EXTEND
        :: finish(hw, F_NONE);                                      /* G5: extend */
           if :: ok -> atomic { held_seq[p] = q; held_word[p] = hw } :: else -> skip fi
#endif
        :: finish(MK(L_DEADLETTERING, WATT(hw), me, LAP(q)), F_NONE);   /* G6: dead_letter */
           if
           :: ok -> send_to_dlq(q, MK(L_DEADLETTERING, WATT(hw), me, LAP(q)), 0)
           :: else -> skip
           fi
        :: atomic { held_seq[p] = NONE; held_word[p] = 0 }          /* forgotten: it expires */
        fi;
     :: else -> held_seq[p] = NONE; held_word[p] = 0
     fi;
     q = 0; hw = 0; ok = 0
  od;
done:
  skip
}

/* A block publisher: claims sequence s only while s < floor + capacity. */
active proctype publisher() {
  byte s = 0;
  do
  :: s < NMSG ->
     atomic {
       s < floor + CAP;                       /* reserve: the gate */
       head = s + 1;
       if
       :: s >= CAP -> assert(fin[s - CAP] != F_NONE)   /* I3: the slot's message is finished */
       :: else -> skip
       fi
     };
     stamp[s % CAP] = MKS(s, S_WRITING);      /* T1 */
     if
     :: atomic { stamp[s % CAP] = MKS(s, S_COMMITTED); committed[s] = 1 }   /* T2 */
     :: stamp[s % CAP] = MKS(s, S_ABANDONED)                                   /* T3 */
     fi;
     s++
  :: else -> break
  od;
  pub_done = 1
}

#ifdef MOVER
/* dead_letter_due (Channel::dead_letter_due, shmbus gc): a participant that
 * is no consumer moves the messages due for the DLQ -- out of deliveries and
 * nobody working on them -- with G8x, then send_to_dlq (a refusal turns the
 * word due again). Its leases carry owner NOOWN: only their deadline ends
 * them. It may crash too (pid 3, never a consumer's). To bound the search it
 * makes MOVES looks, each at one sequence of [floor, next) it picks (the
 * code's sweep visits each in turn; which one it reaches first, and when, is
 * the scheduler's choice either way). */
#ifndef MOVES
#define MOVES 2
#endif
proctype mover(byte p; bit may_crash) {
  byte s, f, nx, af, anx, ahd, oc, o, moves;
  short w, lw, aw;
  bit ok, ready;
  byte i1n, i1p, i1q;
#ifdef ORDERED
  byte kn, kh;
#endif
  atomic { held_seq[p] = NONE; held_word[p] = 0; myidx[p] = NONE; alive[p] = 1 };
  do
  :: moves < MOVES && !(floor == NMSG && pub_done) ->
     moves++;
     atomic { f = floor; nx = next };
     if :: nx > f && nx - f > CAP -> f = nx - CAP :: else -> skip fi;
     if :: f >= nx -> goto mv_next :: else -> skip fi;
     s = f;
     do                                   /* pick one sequence of [f, nx) */
     :: s + 1 < nx -> s++
     :: break
     od;
     w = lease[s % CAP];
     ready = 0;
     if
     :: w == 0 || WLAP(w) != LAP(s) -> skip
     :: w != 0 && WLAP(w) == LAP(s) && WST(w) == L_DUE && WATT(w) >= MAXDEL -> ready = 1
     :: w != 0 && WLAP(w) == LAP(s) &&
        ((WST(w) == L_LEASED && WATT(w) >= MAXDEL) || WST(w) == L_DEADLETTERING) ->
        if
        :: ready = 1       /* the deadline was reached */
        :: skip            /* not yet */
        :: WOWN(w) != NOOWN ->
           o = WOWN(w); oc = ctl[o];   /* owner gone: entry not active, or its process dead */
           if
           :: CST(oc) != E_ACTIVE || !alive[CPID(oc)] -> ready = 1
           :: else -> skip
           fi
        fi
     :: else -> skip
     fi;
     if
     :: ready ->
        lw = MK(L_DEADLETTERING, WATT(w), NOOWN, LAP(s));
        atomic {
          if
          :: lease[s % CAP] == w -> lease[s % CAP] = lw; check_i1(s); ok = 1    /* G8x */
          :: else -> ok = 0
          fi
        };
        if
        :: ok -> send_to_dlq(s, lw, 1)
        :: else -> skip
        fi
     :: else -> skip
     fi;
mv_next:
     s = 0; f = 0; nx = 0; w = 0; lw = 0; o = 0; oc = 0; ready = 0; ok = 0
  :: else -> break
  od;
done:
  skip
}
#endif

/* I2, once the floor has passed everything. */
active proctype end_check() {
  byte q = 0;
  (floor == NMSG && pub_done);
  do
  :: q < NMSG ->
     if
     :: committed[q] ->
        assert(fin[q] == F_ACKED || fin[q] == F_DEADLETTERED);
        assert(fin[q] != F_ACKED || (acks[q] == 1 && delivered[q] >= 1));
        assert(fin[q] != F_DEADLETTERED || dlq[q] >= 1)
     :: else -> assert(fin[q] == F_G2)
     fi;
     q++
  :: else -> break
  od
}

init {
  atomic {
    run consumer(1, 0, 0);   /* never crashes, never leaves: someone finishes the work */
#ifndef SOLO
    run consumer(2, 1, 1);   /* may crash or leave */
#endif
#if REJOIN
    run consumer(3, 1, 0);   /* joins late, may reuse a freed index */
#endif
#ifdef MOVER
    run mover(3, 1);         /* dead_letter_due, with no consumer entry (use with REJOIN 0) */
#endif
  }
}
