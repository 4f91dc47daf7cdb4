/*
 * publish.pml -- the multi-producer publish protocol and the subscriber's
 * read of docs/protocol.md §4-§6 (bus/src/publisher_core.cpp,
 * bus/src/subscriber_core.cpp, bus/src/slots.cpp), for Spin.
 *
 * What is modelled, by the code's names:
 *   publishers: PublisherCore::reserve (drop_oldest: fetch_add on `head`;
 *   block: the cached gate `gate_`, `gate_cache`, refresh_gate /
 *   gating_minimum over the subscriber's cursor, wait_for_space or
 *   `timeout`, then the CAS on `head`), take_slot (the ready test, the
 *   writer word, T1, and T4 for a claim in the way), the payload copy,
 *   commit (the check, the SlotHeader write, T2) and abort (T3);
 *   one subscriber: SubscriberCore::begin_read / finish_read (the seqlock
 *   re-check of the stamp), the corrupted-slot path, skipping abandoned
 *   sequences, on_lapped with its loss count, publish_cursor, and the stall
 *   watch (T5a, T5b). Publishers may be killed (-9) at the marked points.
 *
 * Abstractions:
 *   - Timeouts are nondeterministic: a waiting publisher may time out at any
 *     moment, and a claim that is in the way may be taken away (T4, T5a) at
 *     any moment provided that the process responsible for it is dead -- the
 *     unblock timeout is assumed longer than any live writer's claim.
 *     -DLIVE_TIMEOUTS drops that assumption (any stuck claim may be taken
 *     away): then a late writer can store into a slot it no longer owns,
 *     the known limit of docs/protocol.md §11.2, and the checks fail.
 *   - A slot holds two words of data: the SlotHeader's sequence and a
 *     payload word naming the sequence whose bytes it holds; a torn read is
 *     a payload word that differs from the sequence read.
 *   - Memory is sequentially consistent (docs/protocol.md §9 argues the
 *     fences); eviction, durable cursors and several subscribers are not
 *     modelled.
 *
 * Invariants:
 *   P1 (block) no lost committed message: every committed message is
 *      delivered to the subscriber, which is never lapped.
 *   P2 (drop_oldest) every committed message below the final cursor is
 *      either delivered or counted lost, never both.
 *   P3 every delivered message is intact: its header and payload are the
 *      ones its writer committed (the seqlock re-check rejects torn reads).
 *   Deadlock freedom: no process waits forever (Spin's end-state check).
 *
 * Deliberately broken variants (the tests expect a violation):
 *   -DBROKEN_NO_RECHECK  finish_read does not re-check the stamp (P3).
 *   -DBROKEN_NO_GATE     block publishers do not consult the gate (P1).
 *   -DLIVE_TIMEOUTS      the §11.2 limit above (P1 or P3).
 *
 * Bounds: CAP slots, NPUB publishers, MSGS messages each, MAXCRASH kills.
 * Policy: -DDROP_OLDEST, else block.
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
#define NSEQ (NPUB * MSGS)

#define S_EMPTY 0
#define S_WRITING 1
#define S_COMMITTED 2
#define S_ABANDONED 3
#define MKS(q, st) ((q) * 4 + (st))
#define SSEQ(s) ((s) / 4)
#define SST(s) ((s) % 4)

byte stamp[CAP];        /* SlotControl::stamp */
byte wseq[CAP];         /* SlotControl::writer: the sequence half ... */
byte wpid[CAP];         /* ... and the pid half (publisher id, 0 none) */
byte hdr[CAP];          /* SlotHeader::sequence */
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
  byte m = 0, seq, st, gate = 0, h, prev;
  bit first, abort_it;

  do
  :: m < MSGS ->
#ifdef DROP_OLDEST
     atomic { seq = head; head++; owner[seq] = id };         /* reserve */
#else
reserve:
     h = head;
#ifndef BROKEN_NO_GATE
     if
     :: h >= gate + CAP ->                                     /* the cached gate says full */
        if :: gate_cache > gate -> gate = gate_cache :: else -> skip fi;
        if
        :: h >= gate + CAP ->
           atomic { if :: cursor < h -> gate = cursor :: else -> gate = h fi };   /* gating_minimum */
           gate_cache = gate;                                  /* refresh_gate publishes it */
           if
           :: h >= gate + CAP ->
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
     atomic {                                                  /* head.compare_exchange */
       if
       :: head == h -> head = h + 1; seq = h; owner[seq] = id
       :: else -> goto reserve
       fi
     };
#endif
     crash_point();

     /* take_slot(seq) */
     first = (seq < CAP);
     if :: !first -> prev = seq - CAP :: else -> prev = 0 fi;
     st = stamp[seq % CAP];
take:
     if
     :: SST(st) != S_EMPTY && SSEQ(st) >= seq -> goto next_msg   /* taken away: abandoned */
     :: else -> skip
     fi;
     if
     :: (first && (SST(st) == S_EMPTY || (SSEQ(st) < seq && SST(st) >= S_COMMITTED))) ||
        (!first && SSEQ(st) == prev && SST(st) >= S_COMMITTED) ->
        atomic { wseq[seq % CAP] = seq; wpid[seq % CAP] = id };    /* the writer word */
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
                :: else -> stamp[seq % CAP] = MKS(prev, S_ABANDONED)     /* T4 */
                fi
             :: else -> skip
             fi;
             st = stamp[seq % CAP]
           };
           goto take
        fi
     fi;
     crash_point();
     pay[seq % CAP] = seq;                                     /* write the payload */
     crash_point();
     if
     :: abort_it = 0
     :: abort_it = 1
     fi;
     if
     :: !abort_it ->                                           /* commit */
        if
        :: stamp[seq % CAP] != MKS(seq, S_WRITING) -> goto next_msg   /* taken away: abandoned */
        :: else -> skip
        fi;
        hdr[seq % CAP] = seq;                                  /* the SlotHeader */
        atomic {
          if
          :: stamp[seq % CAP] == MKS(seq, S_WRITING) ->
             stamp[seq % CAP] = MKS(seq, S_COMMITTED);         /* T2 */
             committed[seq] = 1
          :: else -> skip                                      /* abandoned */
          fi
        }
     :: else ->                                                /* abort */
        atomic {
          if
          :: stamp[seq % CAP] == MKS(seq, S_WRITING) -> stamp[seq % CAP] = MKS(seq, S_ABANDONED)  /* T3 */
          :: else -> skip
          fi
        }
     fi;
next_msg:
     atomic { m++; seq = 0; st = 0; h = 0; prev = 0; first = 0; abort_it = 0 }
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
  byte c = 0, st, hs, p, h, nxt, now, k;

  do
  :: st = stamp[c % CAP];
     if
     :: st == MKS(c, S_COMMITTED) ->                          /* begin_read */
        hs = hdr[c % CAP];                                     /* racy copy of the header */
        if
        :: hs != c ->
           now = stamp[c % CAP];
           if
           :: now != st -> on_lapped()                         /* torn by a lapping writer */
           :: else -> atomic { assert(!delivered[c]); lostpos[c] = 1; c++; cursor = c }  /* corrupted */
           fi
        :: else ->
           p = pay[c % CAP];                                   /* copy the payload */
#ifndef BROKEN_NO_RECHECK
           now = stamp[c % CAP];                               /* finish_read: validate */
#else
           now = st;
#endif
           if
           :: now != st -> on_lapped()
           :: else ->
              atomic {
                assert(p == c);                                /* P3: intact */
                assert(!lostpos[c]);
                delivered[c] = 1; c++; cursor = c              /* publish_cursor */
              }
           fi
        fi
     :: SST(st) == S_ABANDONED && SSEQ(st) == c ->
        atomic { c++; cursor = c }                             /* skip: not a message */
     :: SST(st) != S_EMPTY && SSEQ(st) > c -> on_lapped()
     :: else ->
        /* nothing to read at c yet */
        if
        :: finished_pubs == NPUB && c >= head -> break
        :: head > c && STUCK(st, c) ->                         /* StallWatch: T5a */
           atomic { if :: stamp[c % CAP] == st -> stamp[c % CAP] = MKS(c, S_ABANDONED) :: else -> skip fi }
        :: head > c && SST(st) == S_WRITING && wseq[c % CAP] == SSEQ(st) && dead[wpid[c % CAP]] ->
           atomic {                                            /* StallWatch: T5b */
             if :: stamp[c % CAP] == st -> stamp[c % CAP] = MKS(SSEQ(st), S_ABANDONED) :: else -> skip fi
           }
        :: stamp[c % CAP] != st -> skip                        /* something changed */
        fi
     fi;
     atomic { st = 0; hs = 0; p = 0; now = 0 }
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
  byte i = 1;
  atomic {
    do
    :: i <= NPUB -> run publisher(i); i++
    :: else -> break
    od
  }
}
