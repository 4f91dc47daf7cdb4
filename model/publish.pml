/*
 * publish.pml -- the multi-producer publish protocol and the subscriber's
 * read of docs/protocol.md §4-§6 (bus/ring/publisher_core.cpp,
 * bus/ring/subscriber_core.cpp, bus/ring/slots.cpp), for Spin.
 *
 * What is modelled, by the code's names:
 *   the slot's words: SlotHeader::stamp and SlotHeader::writer (the first
 *   16 bytes of the slot), one word of SlotMeta (the key) and one payload
 *   word; the slot holds no sequence field, the stamp carries it;
 *   publishers: PublisherCore::reserve of n sequences with one update of
 *   `head` (drop_oldest: fetch_add n; block: the cached gate `gate_`,
 *   `gate_cache`, refresh_gate / gating_minimum over the subscriber's
 *   cursor, wait_for_space or `timeout`, then the CAS of head to head + n,
 *   taken only if the newest of the n fits under the gate); the inline claim
 *   of the fused PublisherCore::publish is that same reserve for n = 1;
 *   take_slot (the ready test, the writer word store, T1, and T4 for a claim
 *   in the way); write_message, the fused publish of one reserved sequence
 *   (writer word, T1, the SlotMeta and payload stores, T2, with no check in
 *   between: a claim taken away fails at T2); publish_batch (reserve k, then
 *   write_message for each in order); and the claim path, claim
 *   (claim_batch of one) with the caller's payload copy, then commit (the
 *   check, the SlotMeta stores, T2) or abort (T3);
 *   one subscriber: SubscriberCore::poll (the fused copy-out poll: the stamp
 *   acquire, read_meta, the payload copy, the seqlock re-check of the
 *   stamp) and poll_general (begin_read / finish_read: the same reads and
 *   re-check, skipping abandoned sequences, on_lapped with its loss count),
 *   publish_cursor, and the stall watch StallWatch::check (T5a, T5b), whose
 *   CAS goes through ChannelState::cas_stamp.
 *   Publishers may be killed (-9) at the marked points: before each take
 *   (after the reservation, or after the previous commit of a batch), after
 *   the writer word store, after T1, and after the stores (before T2 or T3).
 *
 * Abstractions:
 *   - Timeouts are nondeterministic: a waiting publisher may time out at any
 *     moment, and a claim that is in the way may be taken away (T4, T5a) at
 *     any moment provided that the process responsible for it is dead -- the
 *     unblock timeout is assumed longer than any live writer's claim.
 *     -DLIVE_TIMEOUTS drops that assumption (any stuck claim may be taken
 *     away): then a late writer can store into a slot it no longer owns,
 *     the known limit of docs/protocol.md §11.2, and the checks fail.
 *   - A slot holds two words of data: SlotMeta::key, which the model's
 *     writers set to the sequence they write, and a payload word naming the
 *     sequence whose bytes it holds. A torn read is a key or payload word
 *     that differs from the sequence read. Sizes are not modelled: writers
 *     store valid ones only, so begin_read's size test (a corrupted slot)
 *     never fires here; torn reads are caught by the stamp re-check alone.
 *   - poll's fast path (a committed stamp at the cursor) and poll_general
 *     make the same reads in the same order; the model's one read loop is
 *     both. write_message's inline test (the stamp is exactly the previous
 *     lap's commit, or empty) is take_slot's ready test with the expected
 *     stamp known, so the model's take_slot covers it.
 *   - ChannelState::cas_stamp may fail (no page could be mapped): that is a
 *     CAS that does nothing, which the model's reader already may do by not
 *     acting.
 *   - The counters, the wake of sleepers (after T2) and the clock read
 *     (before the claim) carry no data the protocol depends on; futexes
 *     are abstracted as waiting until something changes.
 *   - Memory is sequentially consistent (docs/protocol.md §9 argues the
 *     fences); eviction, durable cursors and several subscribers are not
 *     modelled.
 *
 * Invariants:
 *   P1 (block) no lost committed message: every committed message is
 *      delivered to the subscriber, which is never lapped.
 *   P2 (drop_oldest) every committed message below the final cursor is
 *      either delivered or counted lost, never both.
 *   P3 every delivered message is intact: its key and payload are the ones
 *      its writer committed (the seqlock re-check rejects torn reads).
 *   Deadlock freedom: no process waits forever (Spin's end-state check).
 *
 * Deliberately broken variants (the tests expect a violation):
 *   -DBROKEN_NO_RECHECK  poll / finish_read do not re-check the stamp (P3).
 *   -DBROKEN_NO_GATE     block publishers do not consult the gate (P1).
 *   -DLIVE_TIMEOUTS      the §11.2 limit above (P1 or P3).
 *   -DBROKEN_BATCH_GATE  a batch checks the gate for its first sequence
 *                        only (P1, with -DBATCH under block).
 *
 * Bounds: CAP slots, NPUB publishers, MSGS messages each, MAXCRASH kills.
 * Policy: -DDROP_OLDEST, else block.
 * -DBATCH: publisher 1 publishes BMSGS messages (default MSGS) with
 * publish_batch, K at a time (K defaults to 2, must divide BMSGS and be at
 * most CAP); the others publish MSGS messages one at a time, each by the
 * fused publish or by claim + commit / abort.
 */

#ifndef CAP
#define CAP 2
#endif
#ifndef NPUB
#define NPUB 2
#endif
#ifndef MSGS
#define MSGS 2
#endif
#ifndef MAXCRASH
#define MAXCRASH 1
#endif
#ifdef BATCH
#ifndef K
#define K 2
#endif
#ifndef BMSGS
#define BMSGS MSGS
#endif
#define NSEQ ((NPUB - 1) * MSGS + BMSGS)
#else
#define NSEQ (NPUB * MSGS)
#endif
#define NONE 255        /* a key or payload word no message has */

#define S_EMPTY 0
#define S_WRITING 1
#define S_COMMITTED 2
#define S_ABANDONED 3
#define MKS(q, st) ((q) * 4 + (st))
#define SSEQ(s) ((s) / 4)
#define SST(s) ((s) % 4)

/* how a single message is written */
#define W_PUBLISH 0     /* the fused publish (write_message) */
#define W_COMMIT 1      /* claim, the caller's copy, commit */
#define W_ABORT 2       /* claim, the caller's copy, abort */

byte stamp[CAP];        /* SlotHeader::stamp */
byte wseq[CAP];         /* SlotHeader::writer: the sequence half ... */
byte wpid[CAP];         /* ... and the pid half (publisher id, 0 none) */
byte key[CAP];          /* SlotMeta::key: the writer's sequence */
byte pay[CAP];          /* the payload: whose bytes */
byte head = 0;          /* ProducerBlock::head */
byte gate_cache = 0;    /* ProducerBlock::gate_cache */
byte cursor = 0;        /* SubscriberEntry::cursor (published) */

/* ghosts */
byte owner[NSEQ];       /* the publisher that reserved each sequence */
bit dead[NPUB + 1];
bit committed[NSEQ];
bit delivered[NSEQ];
bit lostpos[NSEQ];
byte finished_pubs = 0;
byte crashes = 0;

/* The claim that blocks position q (stamp st in q's slot) belongs to a dead
 * process: its writer if it is `writing`, else whoever reserved q. */
#ifdef LIVE_TIMEOUTS
#define STUCK(st, q) (1)
#else
#define STUCK(st, q) ((SST(st) == S_WRITING && dead[owner[SSEQ(st)]]) || \
                      (SST(st) != S_WRITING && dead[owner[q]]))
#endif

/* kill -9 of this publisher, within the crash budget */
inline crash_point() {
  if
  :: skip
  :: crashes < MAXCRASH ->
     atomic { crashes++; dead[id] = 1; finished_pubs++ };
     goto done
  fi
}

proctype publisher(byte id) {
  byte m = 0, n, i, seq, st, gate = 0, h, last, prev, how;
  bit first;

  do
#ifdef BATCH
  :: m < (id == 1 -> BMSGS : MSGS) ->
     n = (id == 1 -> K : 1);                                   /* publish_batch for publisher 1 */
#else
  :: m < MSGS ->
     n = 1;
#endif
#ifdef DROP_OLDEST
     atomic {                                                  /* reserve: fetch_add n */
       seq = head; head = head + n;
       i = 0;
       do :: i < n -> owner[seq + i] = id; i++ :: else -> break od;
       i = 0
     };
#else
reserve:
     h = head;
#ifdef BROKEN_BATCH_GATE
     last = h;                                                 /* only the first sequence */
#else
     last = h + n - 1;                                         /* the newest sequence it takes */
#endif
#ifndef BROKEN_NO_GATE
     if
     :: last >= gate + CAP ->                                  /* the cached gate says full */
        if :: gate_cache > gate -> gate = gate_cache :: else -> skip fi;
        if
        :: last >= gate + CAP ->
           atomic { if :: cursor < h -> gate = cursor :: else -> gate = h fi };   /* gating_minimum */
           gate_cache = gate;                                  /* refresh_gate publishes it */
           if
           :: last >= gate + CAP ->
              if
              :: cursor != gate -> goto reserve                /* wait_for_space: a reader moved */
              :: goto next_msg                                 /* timeout: nothing published */
              fi
           :: else -> skip
           fi
        :: else -> skip
        fi
     :: else -> skip
     fi;
#endif
     atomic {                                                  /* head.compare_exchange: head + n */
       if
       :: head == h ->
          head = h + n; seq = h;
          i = 0;
          do :: i < n -> owner[seq + i] = id; i++ :: else -> break od;
          i = 0
       :: else -> goto reserve
       fi
     };
#endif

     /* write_message (or claim + commit / abort) for each sequence, in order */
     i = 0;
     do
     :: i < n ->
        crash_point();                                         /* after the reservation or a commit */

        /* take_slot(seq) */
        first = (seq < CAP);
        if :: !first -> prev = seq - CAP :: else -> prev = 0 fi;
        st = stamp[seq % CAP];
take:
        if
        :: SST(st) != S_EMPTY && SSEQ(st) >= seq -> goto next_seq   /* taken away: abandoned */
        :: else -> skip
        fi;
        if
        :: (first && (SST(st) == S_EMPTY || (SSEQ(st) < seq && SST(st) >= S_COMMITTED))) ||
           (!first && SSEQ(st) == prev && SST(st) >= S_COMMITTED) ->
           atomic { wseq[seq % CAP] = seq; wpid[seq % CAP] = id };   /* the writer word */
           crash_point();
           atomic {
             if
             :: stamp[seq % CAP] == st -> stamp[seq % CAP] = MKS(seq, S_WRITING)   /* T1 */
             :: else -> st = stamp[seq % CAP]; goto take
             fi
           }
        :: else ->
           /* the previous lap's writer has not finished: wait, or take it away */
           if
           :: stamp[seq % CAP] != st -> st = stamp[seq % CAP]; goto take
           :: STUCK(st, prev) ->
              atomic {
                if
                :: stamp[seq % CAP] == st ->
                   if
                   :: first -> stamp[seq % CAP] = MKS(SSEQ(st), S_ABANDONED)
                   :: else -> stamp[seq % CAP] = MKS(prev, S_ABANDONED)      /* T4 */
                   fi
                :: else -> skip
                fi;
                st = stamp[seq % CAP]
              };
              goto take
           fi
        fi;
        crash_point();                                         /* holding the claim (writing) */

        if
        :: how = W_PUBLISH
        :: n == 1 -> how = W_COMMIT
        :: n == 1 -> how = W_ABORT
        fi;
        if
        :: how == W_PUBLISH ->
           /* write_message: the SlotMeta and payload stores, then T2 */
           key[seq % CAP] = seq;
           pay[seq % CAP] = seq;
           crash_point();
           atomic {
             if
             :: stamp[seq % CAP] == MKS(seq, S_WRITING) ->
                stamp[seq % CAP] = MKS(seq, S_COMMITTED);      /* T2 */
                committed[seq] = 1
             :: else -> skip                                   /* abandoned */
             fi
           }
        :: else ->
           pay[seq % CAP] = seq;                               /* the caller writes the payload */
           crash_point();
           if
           :: how == W_COMMIT ->                               /* commit */
              if
              :: stamp[seq % CAP] != MKS(seq, S_WRITING) -> goto next_seq   /* taken away */
              :: else -> skip
              fi;
              key[seq % CAP] = seq;                            /* the SlotMeta */
              atomic {
                if
                :: stamp[seq % CAP] == MKS(seq, S_WRITING) ->
                   stamp[seq % CAP] = MKS(seq, S_COMMITTED);   /* T2 */
                   committed[seq] = 1
                :: else -> skip                                /* abandoned */
                fi
              }
           :: else ->                                          /* abort */
              atomic {
                if
                :: stamp[seq % CAP] == MKS(seq, S_WRITING) -> stamp[seq % CAP] = MKS(seq, S_ABANDONED)  /* T3 */
                :: else -> skip
                fi
              }
           fi
        fi;
next_seq:
        atomic { seq++; i++; st = 0; prev = 0; first = 0; how = 0 }
     :: else -> break
     od;
next_msg:
     atomic { m = m + n; n = 0; i = 0; seq = 0; st = 0; h = 0; last = 0; prev = 0; first = 0; how = 0 }
  :: else -> break
  od;
  finished_pubs++;
done:
  skip
}

/* on_lapped(): skip to the oldest sequence still in the ring, count the loss */
inline on_lapped() {
  atomic {
    h = head;
    if :: h > CAP -> nxt = h - CAP :: else -> nxt = 0 fi;
    if :: nxt < c + 1 -> nxt = c + 1 :: else -> skip fi;
    do
    :: c < nxt -> assert(!delivered[c]); lostpos[c] = 1; c++
    :: else -> break
    od;
    cursor = c;
    h = 0; nxt = 0
  }
}

active proctype subscriber() {
  byte c = 0, st, hk, p, h, nxt, now, k;

  do
  :: st = stamp[c % CAP];                                      /* the stamp acquire */
     if
     :: st == MKS(c, S_COMMITTED) ->
        hk = key[c % CAP];                                     /* read_meta: a racy copy */
        p = pay[c % CAP];                                      /* racy_copy of the payload */
#ifndef BROKEN_NO_RECHECK
        now = stamp[c % CAP];                                  /* the seqlock re-check */
#else
        now = st;
#endif
        if
        :: now != st -> on_lapped()
        :: else ->
           atomic {
             assert(hk == c && p == c);                        /* P3: intact */
             assert(!lostpos[c]);
             delivered[c] = 1; c++; cursor = c                 /* publish_cursor */
           }
        fi
     :: SST(st) == S_ABANDONED && SSEQ(st) == c ->
        atomic { c++; cursor = c }                             /* skip: not a message */
     :: SST(st) != S_EMPTY && SSEQ(st) > c -> on_lapped()
     :: else ->
        /* nothing to read at c yet (empty, an older lap, or being written) */
        if
        :: finished_pubs == NPUB && c >= head -> break
        :: head > c && STUCK(st, c) ->                         /* StallWatch: T5a (cas_stamp) */
           atomic { if :: stamp[c % CAP] == st -> stamp[c % CAP] = MKS(c, S_ABANDONED) :: else -> skip fi }
        :: head > c && SST(st) == S_WRITING && wseq[c % CAP] == SSEQ(st) && dead[wpid[c % CAP]] ->
           atomic {                                            /* StallWatch: T5b (cas_stamp) */
             if :: stamp[c % CAP] == st -> stamp[c % CAP] = MKS(SSEQ(st), S_ABANDONED) :: else -> skip fi
           }
        :: stamp[c % CAP] != st -> skip                        /* something changed */
        fi
     fi;
     atomic { st = 0; hk = 0; p = 0; now = 0 }
  od;

  /* the end: every position below head was passed */
  k = 0;
  do
  :: k < NSEQ ->
     assert(!(delivered[k] && lostpos[k]));
#ifdef DROP_OLDEST
     assert(!committed[k] || delivered[k] || lostpos[k]);      /* P2 */
#else
     assert(!committed[k] || delivered[k]);                    /* P1 */
#endif
     k++
  :: else -> break
  od
}

init {
  byte i = 0;
  atomic {
    do                                                         /* no message in the slots yet */
    :: i < CAP -> key[i] = NONE; pay[i] = NONE; i++
    :: else -> break
    od;
    i = 1;
    do
    :: i <= NPUB -> run publisher(i); i++
    :: else -> break
    od
  }
}
