/* shmbus C API: channels, publishers, subscribers and consumer groups of the
 * shared-memory bus, for C and for other languages through their C FFI
 * (Rust, Go cgo, Python ctypes/cffi). Valid C99 and C++.
 *
 * Conventions (docs/c_api.md says more):
 *   - Handles are opaque pointers. A handle made by a *_new / *_create /
 *     *_open / *_join function is released by the matching *_free / *_close
 *     function, exactly once. Publishers, subscribers and consumers keep
 *     their channel's mapping alive: the channel handle may be closed first.
 *   - Functions that can fail return an int status: SHMBUS_OK (0) or one of
 *     enum shmbus_status. Setup functions (create, open, subscribe, join,
 *     remove, stats) then leave a message with the context of the failure in
 *     shmbus_last_error() of the calling thread. Hot-path functions (publish,
 *     poll, receive, ack, nack) return results such as SHMBUS_EMPTY,
 *     SHMBUS_FULL or SHMBUS_TIMEOUT without touching the last error; they set
 *     it only when they reject their arguments.
 *   - No C++ exception crosses this interface: an unexpected one becomes
 *     SHMBUS_INTERNAL (or SHMBUS_OUT_OF_MEMORY) with its text in the last
 *     error.
 *   - Options structs start with `struct_size`. Fill them with their
 *     *_init(&opts, sizeof opts) function, then change the fields you need:
 *     a program built against this header keeps working with a later
 *     library whose structs have grown (the library reads only struct_size
 *     bytes and uses defaults for the rest). Stats functions take the size of
 *     the caller's struct the same way. shmbus_message, shmbus_message_meta
 *     and shmbus_delivery are fixed for each SHMBUS_C_ABI_VERSION (version 2
 *     added the message id to them).
 *   - Threading: each function states its contract. "Thread-safe" means any
 *     thread may call it at any time; "one thread at a time per handle" means
 *     calls on one handle must not overlap (different handles may be used by
 *     different threads at once).
 *   - Strings are NUL-terminated UTF-8. A NULL bus means "default". Names of
 *     buses, channels, subscribers and groups are 1..63 of [A-Za-z0-9_-].
 */
#ifndef SHMBUS_SHMBUS_H
#define SHMBUS_SHMBUS_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define SHMBUS_API __attribute__((visibility("default")))
#else
#define SHMBUS_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/** Version of the C ABI described by this header (structs, enums, signatures). */
#define SHMBUS_C_ABI_VERSION 2

/** Default bound on how long shmbus_publish waits on a `block` channel (1 s). */
#define SHMBUS_DEFAULT_PUBLISH_TIMEOUT_NS 1000000000ULL

/** Default bound on how long shmbus_channel_open waits for a concurrent creator (2 s). */
#define SHMBUS_DEFAULT_INIT_WAIT_NS 2000000000ULL

/* ------------------------------------------------------------------------ */
/* Status codes                                                              */
/* ------------------------------------------------------------------------ */

/** Results of every function that returns int. Codes 1..12 are the C++
 *  shmbus::ErrorCode values (setup errors); the others are hot-path results. */
enum shmbus_status {
  SHMBUS_OK = 0,
  /* Setup errors (shmbus::ErrorCode). */
  SHMBUS_INVALID_ARGUMENT = 1,   /**< a parameter is out of range or malformed (or NULL) */
  SHMBUS_NOT_FOUND = 2,          /**< the named channel, subscriber or group does not exist */
  SHMBUS_ALREADY_EXISTS = 3,     /**< exclusive create found an existing channel */
  SHMBUS_PERMISSION_DENIED = 4,  /**< the OS refused access to the segment */
  SHMBUS_NO_SPACE = 5,           /**< /dev/shm (or memory) cannot hold the segment */
  SHMBUS_PARAMETER_MISMATCH = 6, /**< opened with parameters that differ from the channel's */
  SHMBUS_VERSION_MISMATCH = 7,   /**< the segment has another layout version */
  SHMBUS_CORRUPTED = 8,          /**< a value read from shared memory is out of range */
  SHMBUS_TIMEOUT = 9,            /**< a bounded wait expired (open, publish on `block`, poll_wait) */
  SHMBUS_TABLE_FULL = 10,        /**< no free publisher, subscriber, group or consumer entry */
  SHMBUS_BUSY = 11,              /**< the named entry is in use by a live process */
  SHMBUS_SYSTEM = 12,            /**< another system call failed; see shmbus_last_errno() */
  /* Hot-path results. */
  SHMBUS_EMPTY = 32,  /**< nothing to read yet */
  SHMBUS_LAPPED = 33, /**< messages were lost (overwritten or evicted) and counted; call again */
  SHMBUS_BUFFER_TOO_SMALL =
      34,                 /**< the payload is larger than the buffer; the size needed is reported, the message kept */
  SHMBUS_FULL = 35,       /**< `reject` channel: the ring holds unread data; nothing was published */
  SHMBUS_TOO_LARGE = 36,  /**< the payload does not fit the channel's slot */
  SHMBUS_ABANDONED = 37,  /**< a claim was taken away (the writer stalled) */
  SHMBUS_LEASE_LOST = 38, /**< the lease expired or was already ended: the ack/nack did nothing */
  SHMBUS_DLQ_UNAVAILABLE = 39, /**< the dead-letter channel cannot take the message now; it stays with the group */
  SHMBUS_INVALID = 40,         /**< the handle or delivery is not usable here (not this consumer's) */
  SHMBUS_REMOVED = 41,         /**< the channel was removed (rm, gc, or its file unlinked): reopen it by name */
  SHMBUS_SEGMENT_LOST = 42,    /**< the channel's file shrank under this process: the handle is dead */
  /* Failures of the interface itself. */
  SHMBUS_OUT_OF_MEMORY = 48, /**< an allocation failed */
  SHMBUS_INTERNAL = 49       /**< an unexpected internal error (a bug): see shmbus_last_error() */
};

/** Backpressure policy of a channel (shmbus::Policy). */
enum shmbus_policy {
  SHMBUS_POLICY_BLOCK = 1,       /**< publishers wait (bounded) for the slowest gating reader */
  SHMBUS_POLICY_DROP_OLDEST = 2, /**< publishers never wait; lapped readers skip and count */
  SHMBUS_POLICY_REJECT = 3       /**< a publish that would overwrite unread data returns SHMBUS_FULL */
};

/** How a waiting call waits (shmbus::WaitStrategy). */
enum shmbus_wait {
  SHMBUS_WAIT_BUSY_SPIN = 0, /**< spin: lowest latency, burns a core */
  SHMBUS_WAIT_YIELD = 1,     /**< spin, then sched_yield */
  SHMBUS_WAIT_BACKOFF = 2,   /**< spin, yield, then sleeps growing to 1 ms */
  SHMBUS_WAIT_BLOCK = 3      /**< spin briefly, then sleep on the channel's futex */
};

/** Where a new subscriber or group starts reading (shmbus::StartAt). */
enum shmbus_start {
  SHMBUS_START_EARLIEST = 0, /**< the oldest message still in the ring */
  SHMBUS_START_LATEST = 1,   /**< only messages published from now on */
  SHMBUS_START_SEQUENCE = 2, /**< the sequence in start_value */
  SHMBUS_START_TIMESTAMP = 3 /**< the first message stamped at or after start_value (CLOCK_REALTIME ns) */
};

/* ------------------------------------------------------------------------ */
/* Handles                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct shmbus_channel shmbus_channel;       /**< an open channel */
typedef struct shmbus_publisher shmbus_publisher;   /**< appends to a channel */
typedef struct shmbus_subscriber shmbus_subscriber; /**< an independent cursor (fan-out) */
typedef struct shmbus_consumer shmbus_consumer;     /**< one member of a consumer group */

/* ------------------------------------------------------------------------ */
/* Options and value types                                                   */
/* ------------------------------------------------------------------------ */

/** Parameters fixed when a channel is created (shmbus::ChannelOptions). */
typedef struct shmbus_channel_options {
  uint32_t struct_size;         /**< sizeof the caller's struct; set by shmbus_channel_options_init */
  uint32_t slot_size;           /**< bytes per slot, header included; multiple of 64, 64..16 MiB (256) */
  uint32_t capacity;            /**< slots; a power of two, 2..2^30 (1024) */
  uint32_t policy;              /**< enum shmbus_policy (SHMBUS_POLICY_BLOCK) */
  uint32_t max_subscribers;     /**< subscriber table entries, 1..4096 (32) */
  uint32_t max_publishers;      /**< publisher table entries, 1..4096 (32) */
  uint32_t max_groups;          /**< consumer groups, 0..256 (4) */
  uint32_t max_consumers;       /**< consumers per group, 1..255 (16) */
  uint32_t mode;                /**< permission bits of the segment (0600) */
  uint32_t timestamps;          /**< enum shmbus_timestamps; 0 means SHMBUS_TIMESTAMPS_TSC (the default) */
  uint64_t unblock_timeout_ns;  /**< an uncommitted claim is abandoned after this (2 s) */
  uint64_t eviction_timeout_ns; /**< `block` only: evict a subscriber a full ring behind this long; 0 = never (0) */
} shmbus_channel_options;

/** Options of shmbus_subscriber_new (shmbus::SubscribeOptions). */
typedef struct shmbus_subscribe_options {
  uint32_t struct_size; /**< set by shmbus_subscribe_options_init */
  uint32_t start;       /**< enum shmbus_start (SHMBUS_START_LATEST); ignored when a durable cursor resumes */
  uint64_t start_value; /**< the sequence or timestamp for SEQUENCE / TIMESTAMP starts */
  const char* name;     /**< NULL or "": anonymous (freed with its process); else durable, resumed by name */
  uint32_t wait;        /**< enum shmbus_wait for poll_wait (SHMBUS_WAIT_BLOCK) */
  uint32_t reserved0;   /**< must be 0 */
} shmbus_subscribe_options;

/** Settings of a consumer group, fixed when the group is first created
 *  (shmbus::GroupOptions). Joining an existing group with other settings
 *  fails with SHMBUS_PARAMETER_MISMATCH. */
typedef struct shmbus_group_options {
  uint32_t struct_size;           /**< set by shmbus_group_options_init */
  uint32_t start;                 /**< enum shmbus_start for a new group (SHMBUS_START_EARLIEST) */
  uint64_t start_value;           /**< the sequence or timestamp for SEQUENCE / TIMESTAMP starts */
  uint64_t visibility_timeout_ns; /**< lease length (30 s) */
  uint64_t backoff_base_ns;       /**< nack-with-backoff delay after the first attempt (100 ms) */
  uint64_t backoff_cap_ns;        /**< the backoff never exceeds this (30 s) */
  uint32_t max_deliveries;        /**< attempts before the dead-letter channel, 1..255 (5) */
  uint32_t jitter_permille;       /**< random spread of each backoff, in 1/1000 (200) */
  const char* dlq;                /**< dead-letter channel on the same bus; NULL or "": "<channel>-dlq" */
  uint32_t wait;                  /**< enum shmbus_wait for receive_wait (SHMBUS_WAIT_BLOCK) */
  uint32_t ordering;              /**< enum shmbus_ordering (SHMBUS_ORDERING_NONE); was reserved0 (0) */
  /* Since version 2 of the struct (72 bytes): */
  uint32_t order_window; /**< per_key: sequences past the floor a receive looks at; 0: min(capacity, 4096) */
  uint32_t reserved1;    /**< must be 0 */
} shmbus_group_options;

/** How a consumer group hands out messages (shmbus::GroupOrdering). */
enum shmbus_ordering {
  SHMBUS_ORDERING_NONE = 0,   /**< competing consumers: any message to any consumer, in parallel */
  SHMBUS_ORDERING_PER_KEY = 1 /**< a key's messages one at a time, in sequence order */
};

/** What publishers stamp messages with (shmbus::TimestampSource); every
 *  source reads back as CLOCK_REALTIME ns. */
enum shmbus_timestamps {
  SHMBUS_TIMESTAMPS_REALTIME = 1, /**< CLOCK_REALTIME read at publish (~20-30 ns) */
  SHMBUS_TIMESTAMPS_TSC =
      2, /**< the CPU's invariant counter, converted on read (realtime where the kernel does not trust it) */
  SHMBUS_TIMESTAMPS_NONE = 3 /**< 0 unless the publisher sets one */
};

/** Metadata a publisher attaches to a message (shmbus::MessageMeta). Fixed layout. */
typedef struct shmbus_message_meta {
  uint64_t key;            /**< user key (partitioning, per-key order); many messages share it */
  uint64_t correlation_id; /**< request/response pairing */
  uint64_t timestamp_ns;   /**< CLOCK_REALTIME ns; 0: stamped at commit */
  uint32_t type;           /**< user message type */
  uint32_t reserved0;      /**< must be 0 */
  uint64_t id;             /**< message id, unique per event: dedup on it, not on the key; 0 = none
                                (ABI version 2) */
} shmbus_message_meta;

/** A message as a reader receives it; the payload is in the caller's buffer,
 *  from its first byte. Fixed layout. */
typedef struct shmbus_message {
  uint64_t sequence;     /**< position in the channel */
  uint64_t timestamp_ns; /**< CLOCK_REALTIME ns at commit (or as published) */
  uint64_t key;
  uint64_t correlation_id;
  uint32_t type;
  uint32_t attempt;      /**< delivery attempt (groups: 1 on first delivery; subscribers: 0) */
  uint64_t payload_size; /**< bytes copied; with SHMBUS_BUFFER_TOO_SMALL, the bytes needed */
  uint64_t id;           /**< the publisher's message id (0 = none; ABI version 2) */
} shmbus_message;

/** A message delivered to one consumer of a group, with its lease: the token
 *  that ack / nack / extend take. Fixed layout. */
typedef struct shmbus_delivery {
  shmbus_message message;
  uint64_t sequence;    /**< the leased sequence (equals message.sequence) */
  uint64_t deadline_ns; /**< CLOCK_MONOTONIC ns after which the lease expires (redelivery) */
  uint64_t lease;       /**< the lease word held (opaque) */
  uint32_t group;       /**< group index (opaque) */
  uint32_t attempt;     /**< 1 on first delivery, +1 on each redelivery */
} shmbus_delivery;

/** Basics of a channel (a snapshot; see shmbus_channel_get_stats). */
typedef struct shmbus_channel_stats {
  uint64_t head;      /**< next sequence to be claimed */
  uint64_t oldest;    /**< oldest sequence possibly still in the ring */
  uint64_t depth;     /**< head - slowest gating cursor: unread by someone */
  uint64_t published; /**< messages published on the channel (never goes back) */
  uint64_t abandoned; /**< claims marked abandoned by others */
  uint64_t evictions; /**< subscribers evicted for staying a full ring behind */
  uint32_t capacity;
  uint32_t slot_size;
  uint32_t max_payload;
  uint32_t policy;      /**< enum shmbus_policy */
  uint32_t subscribers; /**< subscriber entries in use (anonymous and durable) */
  uint32_t publishers;  /**< publisher entries in use */
  uint32_t groups;      /**< consumer groups */
  uint32_t reserved0;
} shmbus_channel_stats;

/** A consumer group's position and counters (a snapshot; see shmbus_channel_get_group_stats). */
typedef struct shmbus_group_stats {
  uint64_t next;                  /**< next sequence not yet taken by any consumer */
  uint64_t floor;                 /**< every sequence below is finished */
  uint64_t pending;               /**< head - next (+ held_messages, per_key): not yet delivered (the group's lag) */
  uint64_t unfinished;            /**< head - floor: not yet acked or dead-lettered */
  uint64_t in_flight;             /**< leases held now */
  uint64_t due;                   /**< nacked, waiting for their retry time */
  uint64_t oldest_unacked_age_ns; /**< now - publish time of the message at floor */
  uint64_t delivered;
  uint64_t acked;
  uint64_t nacked;
  uint64_t redelivered;
  uint64_t expired; /**< leases that ran out (crash, hang) */
  uint64_t dead_lettered;
  uint64_t lost;      /**< `drop_oldest`: overwritten before delivery */
  uint32_t consumers; /**< member entries in use */
  uint32_t max_deliveries;
  uint64_t dlq_due; /**< out of deliveries, nobody working on them: due for the DLQ */
  /* Appended after dlq_due: a caller built against an older header passes a
   * smaller size and gets none of these. */
  uint32_t ordering;           /**< enum shmbus_ordering */
  uint32_t order_window;       /**< per_key: sequences past the floor a receive looks at; 0 for none */
  uint64_t held_keys;          /**< per_key: keys whose next message waits behind an unfinished one */
  uint64_t held_messages;      /**< per_key: messages held back so */
  uint64_t held_oldest_age_ns; /**< per_key: now - publish time of the oldest held-back message */
} shmbus_group_stats;

/** One subscriber's cursor and counters, as its owner sees them. */
typedef struct shmbus_subscriber_counters {
  uint64_t cursor; /**< next sequence this subscriber reads */
  uint64_t lag;    /**< head - cursor (0 if none): claimed or committed, not yet read */
  uint64_t delivered;
  uint64_t lost; /**< messages lost to laps or eviction */
  uint64_t lapped_events;
} shmbus_subscriber_counters;

/** Why a message went to a dead-letter channel (shmbus::DeadLetterReason). */
enum shmbus_dlq_reason {
  SHMBUS_DLQ_MAX_DELIVERIES = 1, /**< delivered max_deliveries times without an ack */
  SHMBUS_DLQ_REJECTED = 2        /**< a consumer called shmbus_consumer_dead_letter on it */
};

/** The record at the start of every payload on a dead-letter channel; the
 *  original payload follows it (key, message id, correlation id and type are
 *  kept in the message itself). Part of the channel layout: 160 bytes, fixed. */
typedef struct shmbus_dlq_record {
  uint64_t original_sequence;     /**< its sequence on the source channel */
  uint64_t original_timestamp_ns; /**< its CLOCK_REALTIME publish time */
  uint32_t attempts;              /**< deliveries made */
  uint32_t reason;                /**< enum shmbus_dlq_reason */
  uint32_t payload_length;        /**< bytes of the original payload that follow */
  uint32_t reserved;
  char group[64];  /**< the group, NUL-terminated */
  char source[64]; /**< the source channel, NUL-terminated */
} shmbus_dlq_record;

/* ------------------------------------------------------------------------ */
/* Errors and versions                                                       */
/* ------------------------------------------------------------------------ */

/** A static, readable name for a status ("parameter_mismatch"); "unknown"
 *  for a value that is not a status. Never NULL. Thread-safe. */
SHMBUS_API const char* shmbus_strerror(int status);

/** The message of the last failure of this thread ("shmbus_channel_create:
 *  channel 'orders' exists with slot_size 256; asked for 512"), or "" if
 *  none yet. Successful calls leave it unchanged. The string belongs to the
 *  thread and stays valid until its next failing call. Thread-safe (one
 *  record per thread). */
SHMBUS_API const char* shmbus_last_error(void);

/** The errno captured at the system call behind this thread's last failure
 *  (0 if none). Thread-safe (one record per thread). */
SHMBUS_API int shmbus_last_errno(void);

/** The library's version, "MAJOR.MINOR.PATCH". Thread-safe. */
SHMBUS_API const char* shmbus_version(void);

/** The library's SHMBUS_C_ABI_VERSION; a caller built against another value
 *  should not use it. Thread-safe. */
SHMBUS_API int shmbus_abi_version(void);

/* ------------------------------------------------------------------------ */
/* Option initialisers                                                       */
/* ------------------------------------------------------------------------ */

/** Fills *opts with the defaults for a struct of `size` bytes (pass sizeof
 *  *opts) and sets struct_size. SHMBUS_INVALID_ARGUMENT if opts is NULL or
 *  size is smaller than the first version of the struct. Thread-safe. */
SHMBUS_API int shmbus_channel_options_init(shmbus_channel_options* opts, size_t size);

/** As shmbus_channel_options_init, for subscriber options. Thread-safe. */
SHMBUS_API int shmbus_subscribe_options_init(shmbus_subscribe_options* opts, size_t size);

/** As shmbus_channel_options_init, for group options. Thread-safe. */
SHMBUS_API int shmbus_group_options_init(shmbus_group_options* opts, size_t size);

/* ------------------------------------------------------------------------ */
/* Channels                                                                  */
/* ------------------------------------------------------------------------ */

/** Creates channel `name` on `bus` exclusively (SHMBUS_ALREADY_EXISTS if it
 *  exists), reserving its whole size in /dev/shm now (SHMBUS_NO_SPACE if it
 *  does not fit). opts NULL: defaults. On success *out is a new handle for
 *  shmbus_channel_close. Thread-safe. */
SHMBUS_API int shmbus_channel_create(const char* bus, const char* name, const shmbus_channel_options* opts,
                                     shmbus_channel** out);

/** Opens an existing channel. A channel is visible under its name only once
 *  fully created, so there is no creator to wait for: init_wait_ns bounds
 *  only the wait while a remover holds the segment exclusively for its
 *  unlink (SHMBUS_DEFAULT_INIT_WAIT_NS is a good bound; then SHMBUS_BUSY).
 *  Refuses another layout version or a corrupted header with a message
 *  naming the field; a FIFO or symlink under the name
 *  (SHMBUS_INVALID_ARGUMENT); a segment owned by a uid other than this
 *  process's or root's (SHMBUS_PERMISSION_DENIED, naming owner, mode and
 *  path). Thread-safe. */
SHMBUS_API int shmbus_channel_open(const char* bus, const char* name, uint64_t init_wait_ns, shmbus_channel** out);

/** Opens the channel if it exists (its parameters must equal opts:
 *  SHMBUS_PARAMETER_MISMATCH names both values) or creates it. opts NULL:
 *  defaults. Thread-safe. */
SHMBUS_API int shmbus_channel_open_or_create(const char* bus, const char* name, const shmbus_channel_options* opts,
                                             shmbus_channel** out);

/** Releases a channel handle (NULL is ignored). Publishers, subscribers and
 *  consumers made from it keep working. Not thread-safe with other calls on
 *  the same handle: no call on it may run or follow. */
SHMBUS_API void shmbus_channel_close(shmbus_channel* channel);

/** Removes a channel's name from the bus; processes that have it open keep
 *  working, the memory goes with the last of them. SHMBUS_NOT_FOUND if it
 *  does not exist. Thread-safe. */
SHMBUS_API int shmbus_channel_remove(const char* bus, const char* name);

/** The channel's name (owned by the handle, valid until it is closed).
 *  NULL for a NULL handle. Thread-safe. */
SHMBUS_API const char* shmbus_channel_name(const shmbus_channel* channel);

/** The largest payload a message on this channel may carry (0 for a NULL
 *  handle). Thread-safe. */
SHMBUS_API uint64_t shmbus_channel_max_payload(const shmbus_channel* channel);

/** The options the channel was created with (mode reads 0). `size` is
 *  sizeof *out; struct_size is set to it. Thread-safe. */
SHMBUS_API int shmbus_channel_get_options(const shmbus_channel* channel, shmbus_channel_options* out, size_t size);

/** A snapshot of the channel's basics into *out (`size`: sizeof *out; the
 *  library writes at most that many bytes). Makes liveness system calls and
 *  allocates: not for the hot path. Thread-safe. */
SHMBUS_API int shmbus_channel_get_stats(const shmbus_channel* channel, shmbus_channel_stats* out, size_t size);

/** A snapshot of consumer group `group` of the channel into *out (`size`:
 *  sizeof *out). SHMBUS_NOT_FOUND if the channel has no such group. Not for
 *  the hot path. Thread-safe. */
SHMBUS_API int shmbus_channel_get_group_stats(const shmbus_channel* channel, const char* group, shmbus_group_stats* out,
                                              size_t size);

/** Forgets durable subscriber `name`'s cursor. SHMBUS_BUSY while a live
 *  process holds it, SHMBUS_NOT_FOUND if there is none. Thread-safe. */
SHMBUS_API int shmbus_channel_remove_subscriber(shmbus_channel* channel, const char* name);

/** Removes consumer group `group` and its leases. SHMBUS_BUSY while a live
 *  consumer is a member. Thread-safe. */
SHMBUS_API int shmbus_channel_remove_group(shmbus_channel* channel, const char* group);

/* ------------------------------------------------------------------------ */
/* Publishing                                                                */
/* ------------------------------------------------------------------------ */

/** A new publisher on the channel (one publisher-table entry;
 *  SHMBUS_TABLE_FULL if none is free). Free it with shmbus_publisher_free.
 *  Thread-safe. */
SHMBUS_API int shmbus_publisher_new(shmbus_channel* channel, shmbus_publisher** out);

/** Releases a publisher (NULL is ignored). Not thread-safe: no other call on
 *  this publisher may run or follow. */
SHMBUS_API void shmbus_publisher_free(shmbus_publisher* publisher);

/** Copies `size` bytes of `data` into the next slot and commits it, with
 *  `meta` (NULL: none). On a `block` channel waits up to timeout_ns for the
 *  slowest reader, then returns SHMBUS_TIMEOUT; `reject` returns SHMBUS_FULL
 *  at once; `drop_oldest` never waits. SHMBUS_TOO_LARGE if size exceeds the
 *  channel's max payload. No allocation; no system call unless a reader
 *  sleeps or the ring is full. Not thread-safe: one thread at a time per
 *  publisher. */
SHMBUS_API int shmbus_publish(shmbus_publisher* publisher, const void* data, size_t size,
                              const shmbus_message_meta* meta, uint64_t timeout_ns);

/** One message of shmbus_publish_batch. Fixed layout. */
typedef struct shmbus_out_message {
  const void* data;         /**< payload (may be NULL when size is 0) */
  uint64_t size;            /**< payload bytes */
  shmbus_message_meta meta; /**< metadata; timestamp_ns 0: stamped at publish */
} shmbus_out_message;

/** Publishes `count` messages in order under consecutive sequences with one
 *  claim-counter update, one space check and one reader wake-up. All or
 *  nothing while it waits: SHMBUS_TIMEOUT (`block`) or SHMBUS_FULL (`reject`)
 *  publish none; SHMBUS_TOO_LARGE if a payload exceeds the max payload or
 *  count exceeds the channel's capacity. SHMBUS_ABANDONED / SHMBUS_REMOVED /
 *  SHMBUS_SEGMENT_LOST after room was taken: some messages may not have
 *  reached readers. No allocation. Not thread-safe: one thread at a time per
 *  publisher. */
SHMBUS_API int shmbus_publish_batch(shmbus_publisher* publisher, const shmbus_out_message* msgs, size_t count,
                                    uint64_t timeout_ns);

/** The largest payload this publisher may send. Thread-safe. */
SHMBUS_API uint64_t shmbus_publisher_max_payload(const shmbus_publisher* publisher);

/* ------------------------------------------------------------------------ */
/* Subscribers (fan-out: each subscriber sees every message)                 */
/* ------------------------------------------------------------------------ */

/** A new subscriber: anonymous, or durable when opts->name is set (it
 *  resumes the cursor of that name; SHMBUS_BUSY if a live process holds it).
 *  opts NULL: anonymous, from the latest message. SHMBUS_TABLE_FULL if no
 *  entry is free. Free it with shmbus_subscriber_free. Thread-safe. */
SHMBUS_API int shmbus_subscriber_new(shmbus_channel* channel, const shmbus_subscribe_options* opts,
                                     shmbus_subscriber** out);

/** Releases a subscriber (NULL is ignored): an anonymous entry is freed, a
 *  durable cursor stays for the next subscriber of that name. Not
 *  thread-safe: no other call on this subscriber may run or follow. */
SHMBUS_API void shmbus_subscriber_free(shmbus_subscriber* subscriber);

/** Copies the next message's payload into buffer[0..capacity) and fills
 *  *out. Returns SHMBUS_OK; SHMBUS_EMPTY when nothing is committed yet;
 *  SHMBUS_LAPPED after counting lost messages (call again);
 *  SHMBUS_BUFFER_TOO_SMALL with out->payload_size the bytes needed (the
 *  message is kept: poll again with a larger buffer); SHMBUS_CORRUPTED for a
 *  slot with an impossible value (skipped, counted). *out is written only on
 *  SHMBUS_OK and SHMBUS_BUFFER_TOO_SMALL; after any other result buffer may
 *  hold part of a message that was overwritten while it was copied. buffer
 *  may be NULL when capacity is 0. Never blocks, never allocates. Not
 *  thread-safe: one thread at a time per subscriber. */
SHMBUS_API int shmbus_subscriber_poll(shmbus_subscriber* subscriber, shmbus_message* out, void* buffer,
                                      size_t capacity);

/** shmbus_subscriber_poll, waiting up to timeout_ns (with the subscriber's
 *  wait strategy) while nothing is committed; SHMBUS_TIMEOUT if nothing came.
 *  Not thread-safe: one thread at a time per subscriber. */
SHMBUS_API int shmbus_subscriber_poll_wait(shmbus_subscriber* subscriber, shmbus_message* out, void* buffer,
                                           size_t capacity, uint64_t timeout_ns);

/** Moves the cursor so that the next message read is `sequence` (replay).
 *  Not thread-safe: one thread at a time per subscriber. */
SHMBUS_API int shmbus_subscriber_seek(shmbus_subscriber* subscriber, uint64_t sequence);

/** The subscriber's cursor, lag and counters into *out (`size`: sizeof
 *  *out). No system call. Not thread-safe with polls of this subscriber. */
SHMBUS_API int shmbus_subscriber_get_counters(const shmbus_subscriber* subscriber, shmbus_subscriber_counters* out,
                                              size_t size);

/** 1 if this durable subscriber resumed an existing cursor, else 0.
 *  Thread-safe. */
SHMBUS_API int shmbus_subscriber_resumed(const shmbus_subscriber* subscriber);

/* ------------------------------------------------------------------------ */
/* Consumer groups (competing consumers, at-least-once)                      */
/* ------------------------------------------------------------------------ */

/** Joins consumer group `group` of the channel, creating it with opts
 *  (NULL: defaults) if it does not exist; an existing group must have the
 *  same settings (SHMBUS_PARAMETER_MISMATCH). Also creates the group's
 *  dead-letter channel if needed. SHMBUS_TABLE_FULL if no group or consumer
 *  entry is free. Free it with shmbus_consumer_free. Thread-safe. */
SHMBUS_API int shmbus_group_join(shmbus_channel* channel, const char* group, const shmbus_group_options* opts,
                                 shmbus_consumer** out);

/** Leaves the group (NULL is ignored). Messages this consumer still holds
 *  become due at once for the other members. Not thread-safe: no other call
 *  on this consumer may run or follow. */
SHMBUS_API void shmbus_consumer_free(shmbus_consumer* consumer);

/** Takes the next message for this group (a due redelivery first, else the
 *  next new one), copying its payload into buffer[0..capacity); *out holds
 *  the lease to ack. Returns SHMBUS_OK; SHMBUS_EMPTY if nothing is ready;
 *  SHMBUS_BUFFER_TOO_SMALL with out->message.payload_size the bytes needed
 *  (the message stays with the group, due again at once; receive looks for
 *  due messages at most every visibility/4, clamped to 0.1..10 ms, so retry
 *  with receive_wait); SHMBUS_LAPPED if a `drop_oldest`
 *  channel overwrote it (counted). Never blocks. Not thread-safe: one thread
 *  at a time per consumer. */
SHMBUS_API int shmbus_consumer_receive(shmbus_consumer* consumer, shmbus_delivery* out, void* buffer, size_t capacity);

/** shmbus_consumer_receive, waiting up to timeout_ns (with the group's wait
 *  strategy); SHMBUS_TIMEOUT if nothing came. Not thread-safe: one thread at
 *  a time per consumer. */
SHMBUS_API int shmbus_consumer_receive_wait(shmbus_consumer* consumer, shmbus_delivery* out, void* buffer,
                                            size_t capacity, uint64_t timeout_ns);

/** Ends the lease: the message is done. SHMBUS_LEASE_LOST if the lease had
 *  expired or been ended (the message may have gone to another consumer; the
 *  work may be done twice); SHMBUS_INVALID if it is not a delivery of this
 *  consumer. Not thread-safe: one thread at a time per consumer. */
SHMBUS_API int shmbus_consumer_ack(shmbus_consumer* consumer, const shmbus_delivery* delivery);

/** Gives the message back, due again after delay_ns (0: at once); the next
 *  delivery has attempt + 1, and after max_deliveries attempts it goes to
 *  the dead-letter channel. Results as for ack. Not thread-safe: one thread
 *  at a time per consumer. */
SHMBUS_API int shmbus_consumer_nack(shmbus_consumer* consumer, const shmbus_delivery* delivery, uint64_t delay_ns);

/** Gives the message back, due after the group's backoff for its attempt
 *  (exponential from backoff_base_ns, capped, with jitter). Results as for
 *  ack. Not thread-safe: one thread at a time per consumer. */
SHMBUS_API int shmbus_consumer_nack_backoff(shmbus_consumer* consumer, const shmbus_delivery* delivery);

/** Extends the lease to visibility_ns from now (a heartbeat for long work)
 *  and updates delivery->deadline_ns and lease. Results as for ack. Not
 *  thread-safe: one thread at a time per consumer. */
SHMBUS_API int shmbus_consumer_extend(shmbus_consumer* consumer, shmbus_delivery* delivery, uint64_t visibility_ns);

/** Sends the message to the group's dead-letter channel now (a poison
 *  message) and finishes it for the group. SHMBUS_DLQ_UNAVAILABLE if the
 *  dead-letter channel cannot take it now: the group retries after the
 *  lease deadline, and this delivery can no longer be acked. Not
 *  thread-safe: one thread at a time per consumer. */
SHMBUS_API int shmbus_consumer_dead_letter(shmbus_consumer* consumer, const shmbus_delivery* delivery);

/* ------------------------------------------------------------------------ */
/* Archiver (docs/protocol.md section 13; C++: <shmbus/archive.hpp>)         */
/* ------------------------------------------------------------------------ */

typedef struct shmbus_archiver shmbus_archiver; /**< writes a channel's disk archive */

/** When archived records are made durable (shmbus::ArchiveFsync). */
enum shmbus_archive_fsync {
  SHMBUS_ARCHIVE_FSYNC_NEVER = 0,    /**< the kernel writes back when it likes */
  SHMBUS_ARCHIVE_FSYNC_INTERVAL = 1, /**< at most fsync_interval_ns after a record was written */
  SHMBUS_ARCHIVE_FSYNC_BATCH = 2     /**< before the archiver's cursor moves past a batch */
};

/** Options of shmbus_archiver_open (shmbus::ArchiverOptions). */
typedef struct shmbus_archiver_options {
  uint32_t struct_size;       /**< set by shmbus_archiver_options_init */
  uint32_t fsync;             /**< enum shmbus_archive_fsync (SHMBUS_ARCHIVE_FSYNC_INTERVAL) */
  const char* dir;            /**< NULL or "": the channel's archive_dir */
  uint64_t fsync_interval_ns; /**< for SHMBUS_ARCHIVE_FSYNC_INTERVAL (100 ms) */
  uint64_t segment_bytes;     /**< a file rolls before it would exceed this (64 MiB) */
  uint64_t max_age_ns;        /**< retention by age (0: none) */
  uint64_t max_bytes;         /**< retention by total size (0: none) */
  uint32_t batch;             /**< messages per append, at most (1024) */
  uint32_t wait;              /**< enum shmbus_wait of the archiver's thread (SHMBUS_WAIT_BLOCK) */
} shmbus_archiver_options;

/** What an archiver did since it was opened (shmbus::ArchiverCounters). */
typedef struct shmbus_archiver_counters {
  uint64_t archived;               /**< records appended */
  uint64_t bytes;                  /**< record bytes appended */
  uint64_t lost;                   /**< sequences the ring lost before they were archived */
  uint64_t gaps;                   /**< how many gaps those make */
  uint64_t abandoned;              /**< abandoned claims skipped (no message) */
  uint64_t recovered_bytes;        /**< torn tail cut off at open */
  uint64_t last_fsync_realtime_ns; /**< CLOCK_REALTIME of the last fdatasync (0: none) */
  uint64_t next_sequence;          /**< one past the last archived record */
  uint64_t no_space_errors;        /**< appends that found the disk full */
} shmbus_archiver_counters;

/** Fills opts with the defaults. Thread-safe. */
SHMBUS_API int shmbus_archiver_options_init(shmbus_archiver_options* opts, size_t size);

/** Opens the archive directory and attaches the channel's archiver (the
 *  durable subscriber "shmbus-archiver"), its cursor where the archive ends.
 *  opts may be NULL (defaults). SHMBUS_BUSY if another archiver runs;
 *  SHMBUS_INVALID_ARGUMENT if there is no archive directory. Thread-safe. */
SHMBUS_API int shmbus_archiver_open(shmbus_channel* channel, const shmbus_archiver_options* opts,
                                    shmbus_archiver** out);

/** Stops its thread (if started), syncs and detaches. NULL is allowed. */
SHMBUS_API void shmbus_archiver_close(shmbus_archiver* archiver);

/** Archives one batch of what the ring holds; *archived (may be NULL) gets
 *  how many. SHMBUS_NO_SPACE on a full disk (the cursor stays where the
 *  archive ends; call again to retry). One thread at a time per archiver. */
SHMBUS_API int shmbus_archiver_poll_once(shmbus_archiver* archiver, uint64_t* archived);

/** Runs the archiver on a thread of its own until shmbus_archiver_stop.
 *  One thread at a time per archiver. */
SHMBUS_API int shmbus_archiver_start(shmbus_archiver* archiver);

/** Stops the thread and returns the status it ended with (SHMBUS_OK after a
 *  final sync). One thread at a time per archiver. */
SHMBUS_API int shmbus_archiver_stop(shmbus_archiver* archiver);

/** fdatasync of the archive's newest file and fsync of its directory. One
 *  thread at a time per archiver (not while its thread runs). */
SHMBUS_API int shmbus_archiver_sync(shmbus_archiver* archiver);

/** The archiver's counters. Thread-safe. */
SHMBUS_API int shmbus_archiver_get_counters(const shmbus_archiver* archiver, shmbus_archiver_counters* out,
                                            size_t size);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // SHMBUS_SHMBUS_H
