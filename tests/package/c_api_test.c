/* Tests of the C API (include/shmbus/shmbus.h), written in C11 so that they
 * also prove the header is valid C. Each case runs in its own process:
 *   shmbus_c_api_test "<case name>"   runs one case
 *   shmbus_c_api_test                 runs them all
 * Multi-process cases use real fork()ed peers, pipes to synchronise, and a
 * real SIGKILL. Channels live on the test bus under unique names and are
 * removed at exit. */
#define _GNU_SOURCE
#include <shmbus/shmbus.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define BUS "shmbustest"
#define TEN_SECONDS_NS 10000000000ULL

/* From header_c99_check.c: the struct sizes as a C99 compiler sees them. */
size_t shmbus_test_c99_sizeof(int which);

/* --- a small harness --------------------------------------------------------- */

static int in_child = 0;
static char names[32][64];
static int name_count = 0;

static void remove_names(void) {
  for (int i = 0; i < name_count; ++i) {
    char dlq[80];
    (void)shmbus_channel_remove(BUS, names[i]);
    snprintf(dlq, sizeof dlq, "%.63s-dlq", names[i]);
    (void)shmbus_channel_remove(BUS, dlq);
  }
}

static void fail_now(void) {
  if (in_child) _exit(2);
  exit(1);
}

#define CHECK(cond)                                                                                                   \
  do {                                                                                                                \
    if (!(cond)) {                                                                                                    \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n  last error: %s\n", __FILE__, __LINE__, #cond, shmbus_last_error()); \
      fail_now();                                                                                                     \
    }                                                                                                                 \
  } while (0)

#define CHECK_RC(expr, want)                                                                                         \
  do {                                                                                                               \
    const int rc_ = (expr);                                                                                          \
    if (rc_ != (want)) {                                                                                             \
      fprintf(stderr, "%s:%d: %s returned %d (%s), expected %s\n  last error: %s\n", __FILE__, __LINE__, #expr, rc_, \
              shmbus_strerror(rc_), #want, shmbus_last_error());                                                     \
      fail_now();                                                                                                    \
    }                                                                                                                \
  } while (0)

#define CHECK_CONTAINS(text, part)                                                                    \
  do {                                                                                                \
    if (strstr((text), (part)) == NULL) {                                                             \
      fprintf(stderr, "%s:%d: \"%s\" does not contain \"%s\"\n", __FILE__, __LINE__, (text), (part)); \
      fail_now();                                                                                     \
    }                                                                                                 \
  } while (0)

/* A unique channel name, removed (with its DLQ) when the test exits. */
static const char* unique_name(const char* stem) {
  CHECK(name_count < (int)(sizeof names / sizeof names[0]));
  snprintf(names[name_count], sizeof names[0], "%s-%ld-%d", stem, (long)getpid(), name_count);
  (void)shmbus_channel_remove(BUS, names[name_count]);
  return names[name_count++];
}

static shmbus_channel* make_channel(const char* name, uint32_t capacity, uint32_t policy) {
  shmbus_channel_options o;
  shmbus_channel* ch = NULL;
  CHECK_RC(shmbus_channel_options_init(&o, sizeof o), SHMBUS_OK);
  o.capacity = capacity;
  o.policy = policy;
  CHECK_RC(shmbus_channel_create(BUS, name, &o, &ch), SHMBUS_OK);
  CHECK(ch != NULL);
  return ch;
}

/* Opens the existing channel `name`. */
static shmbus_channel* open_channel(const char* name) {
  shmbus_channel* ch = NULL;
  CHECK_RC(shmbus_channel_open(BUS, name, SHMBUS_DEFAULT_INIT_WAIT_NS, &ch), SHMBUS_OK);
  return ch;
}

/* A publisher on `ch`. */
static shmbus_publisher* make_publisher(shmbus_channel* ch) {
  shmbus_publisher* p = NULL;
  CHECK_RC(shmbus_publisher_new(ch, &p), SHMBUS_OK);
  return p;
}

/* An anonymous subscriber of `ch` that starts at the earliest message. */
static shmbus_subscriber* subscribe_earliest(shmbus_channel* ch) {
  shmbus_subscribe_options so;
  shmbus_subscriber* sub = NULL;
  CHECK_RC(shmbus_subscribe_options_init(&so, sizeof so), SHMBUS_OK);
  so.start = SHMBUS_START_EARLIEST;
  CHECK_RC(shmbus_subscriber_new(ch, &so, &sub), SHMBUS_OK);
  return sub;
}

/* Group options with the defaults shmbus_group_options_init sets. */
static shmbus_group_options group_options(void) {
  shmbus_group_options go;
  CHECK_RC(shmbus_group_options_init(&go, sizeof go), SHMBUS_OK);
  return go;
}

/* A consumer of group "workers" on `ch`; `go` NULL takes the defaults. */
static shmbus_consumer* join_workers(shmbus_channel* ch, const shmbus_group_options* go) {
  shmbus_consumer* c = NULL;
  CHECK_RC(shmbus_group_join(ch, "workers", go, &c), SHMBUS_OK);
  return c;
}

/* Releases what a case made, consumer first and channel last; any may be NULL. */
static void release(shmbus_consumer* consumer, shmbus_subscriber* subscriber, shmbus_publisher* publisher,
                    shmbus_channel* channel) {
  shmbus_consumer_free(consumer);
  shmbus_subscriber_free(subscriber);
  shmbus_publisher_free(publisher);
  shmbus_channel_close(channel);
}

/* Publishes `text` with `key` and the message id key + ID_OFFSET, so that
 * tests can check that the id travels apart from the key. */
#define ID_OFFSET 0x7700000000000000ULL
static void publish_text(shmbus_publisher* p, const char* text, uint64_t key) {
  shmbus_message_meta meta;
  memset(&meta, 0, sizeof meta);
  meta.key = key;
  meta.id = key + ID_OFFSET;
  CHECK_RC(shmbus_publish(p, text, strlen(text), &meta, SHMBUS_DEFAULT_PUBLISH_TIMEOUT_NS), SHMBUS_OK);
}

/* Reads one 64-bit value from a pipe, waiting at most 10 s. */
static int read_u64(int fd, uint64_t* value) {
  struct pollfd p = {fd, POLLIN, 0};
  if (poll(&p, 1, 10000) != 1) return 0;
  return read(fd, value, sizeof *value) == (ssize_t)sizeof *value;
}

static void write_u64(int fd, uint64_t value) { CHECK(write(fd, &value, sizeof value) == (ssize_t)sizeof value); }

/* Called first in a fork()ed child: its failed checks _exit, and it dies
 * with the test process, so it never outlives a failed test. */
static void become_child(void) {
  in_child = 1;
  (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
}

/* --- cases --------------------------------------------------------------------- */

static void test_status_names(void) {
  const int codes[] = {SHMBUS_OK,
                       SHMBUS_INVALID_ARGUMENT,
                       SHMBUS_NOT_FOUND,
                       SHMBUS_ALREADY_EXISTS,
                       SHMBUS_PERMISSION_DENIED,
                       SHMBUS_NO_SPACE,
                       SHMBUS_PARAMETER_MISMATCH,
                       SHMBUS_VERSION_MISMATCH,
                       SHMBUS_CORRUPTED,
                       SHMBUS_TIMEOUT,
                       SHMBUS_TABLE_FULL,
                       SHMBUS_BUSY,
                       SHMBUS_SYSTEM,
                       SHMBUS_EMPTY,
                       SHMBUS_LAPPED,
                       SHMBUS_BUFFER_TOO_SMALL,
                       SHMBUS_FULL,
                       SHMBUS_TOO_LARGE,
                       SHMBUS_ABANDONED,
                       SHMBUS_LEASE_LOST,
                       SHMBUS_DLQ_UNAVAILABLE,
                       SHMBUS_INVALID,
                       SHMBUS_REMOVED,
                       SHMBUS_SEGMENT_LOST,
                       SHMBUS_OUT_OF_MEMORY,
                       SHMBUS_INTERNAL};
  const size_t n = sizeof codes / sizeof codes[0];
  for (size_t i = 0; i < n; ++i) {
    const char* a = shmbus_strerror(codes[i]);
    CHECK(a != NULL && a[0] != '\0');
    CHECK(strcmp(a, "unknown") != 0);
    for (size_t j = 0; j < i; ++j) CHECK(strcmp(a, shmbus_strerror(codes[j])) != 0);
  }
  CHECK(strcmp(shmbus_strerror(SHMBUS_PARAMETER_MISMATCH), "parameter_mismatch") == 0);
  CHECK(strcmp(shmbus_strerror(-1), "unknown") == 0);
  CHECK(strcmp(shmbus_strerror(1000), "unknown") == 0);
  CHECK(shmbus_abi_version() == SHMBUS_C_ABI_VERSION);
  CHECK(strchr(shmbus_version(), '.') != NULL);
}

static void test_options_init(void) {
  shmbus_channel_options o;
  memset(&o, 0xff, sizeof o);
  CHECK_RC(shmbus_channel_options_init(&o, sizeof o), SHMBUS_OK);
  CHECK(o.struct_size == sizeof o);
  CHECK(o.slot_size == 256 && o.capacity == 1024 && o.policy == SHMBUS_POLICY_BLOCK);
  CHECK(o.mode == 0600 && o.timestamps == SHMBUS_TIMESTAMPS_TSC && o.eviction_timeout_ns == 0);

  shmbus_subscribe_options s;
  CHECK_RC(shmbus_subscribe_options_init(&s, sizeof s), SHMBUS_OK);
  CHECK(s.start == SHMBUS_START_LATEST && s.name == NULL && s.wait == SHMBUS_WAIT_BLOCK);

  shmbus_group_options g;
  CHECK_RC(shmbus_group_options_init(&g, sizeof g), SHMBUS_OK);
  CHECK(g.start == SHMBUS_START_EARLIEST && g.max_deliveries == 5 && g.dlq == NULL);
  CHECK(g.visibility_timeout_ns == 30000000000ULL);

  CHECK_RC(shmbus_channel_options_init(&o, 8), SHMBUS_INVALID_ARGUMENT);
  CHECK_CONTAINS(shmbus_last_error(), "smaller than this struct's first version");
  CHECK_RC(shmbus_channel_options_init(NULL, sizeof o), SHMBUS_INVALID_ARGUMENT);
  CHECK_CONTAINS(shmbus_last_error(), "opts is NULL");
}

/* A caller built against a later header passes a larger struct: a zero tail
 * is accepted, a tail that asks for something unknown is refused. */
static void test_options_from_a_newer_caller(void) {
  struct {
    shmbus_channel_options base;
    uint64_t later_field;
  } newer;
  const char* name = unique_name("capi-newer");
  shmbus_channel* ch = NULL;
  CHECK_RC(shmbus_channel_options_init(&newer.base, sizeof newer), SHMBUS_OK);
  CHECK(newer.base.struct_size == sizeof newer && newer.later_field == 0);
  newer.base.capacity = 64;
  CHECK_RC(shmbus_channel_create(BUS, name, &newer.base, &ch), SHMBUS_OK);
  shmbus_channel_close(ch);
  CHECK_RC(shmbus_channel_remove(BUS, name), SHMBUS_OK);

  newer.later_field = 7;
  CHECK_RC(shmbus_channel_create(BUS, name, &newer.base, &ch), SHMBUS_INVALID_ARGUMENT);
  CHECK(ch == NULL);
  CHECK_CONTAINS(shmbus_last_error(), "knows only the first");

  shmbus_channel_options zeroed;
  memset(&zeroed, 0, sizeof zeroed);
  CHECK_RC(shmbus_channel_create(BUS, name, &zeroed, &ch), SHMBUS_INVALID_ARGUMENT);
  CHECK_CONTAINS(shmbus_last_error(), "_init function");
}

static void test_create_open_errors(void) {
  const char* name = unique_name("capi-open");
  shmbus_channel* ch = make_channel(name, 64, SHMBUS_POLICY_BLOCK);
  CHECK(strcmp(shmbus_channel_name(ch), name) == 0);
  CHECK(shmbus_channel_max_payload(ch) > 0 && shmbus_channel_max_payload(ch) < 256);

  shmbus_channel_options got;
  CHECK_RC(shmbus_channel_get_options(ch, &got, sizeof got), SHMBUS_OK);
  CHECK(got.capacity == 64 && got.slot_size == 256 && got.policy == SHMBUS_POLICY_BLOCK);

  shmbus_channel* again = NULL;
  CHECK_RC(shmbus_channel_create(BUS, name, NULL, &again), SHMBUS_ALREADY_EXISTS);
  CHECK(again == NULL);
  CHECK_CONTAINS(shmbus_last_error(), "shmbus_channel_create: ");
  CHECK_CONTAINS(shmbus_last_error(), name);

  shmbus_channel* opened = NULL;
  CHECK_RC(shmbus_channel_open(BUS, name, SHMBUS_DEFAULT_INIT_WAIT_NS, &opened), SHMBUS_OK);
  CHECK(shmbus_channel_max_payload(opened) == shmbus_channel_max_payload(ch));
  shmbus_channel_close(opened);

  shmbus_channel_options other;
  CHECK_RC(shmbus_channel_options_init(&other, sizeof other), SHMBUS_OK);
  other.capacity = 64;
  other.slot_size = 512;
  CHECK_RC(shmbus_channel_open_or_create(BUS, name, &other, &opened), SHMBUS_PARAMETER_MISMATCH);
  CHECK_CONTAINS(shmbus_last_error(), "slot_size");
  CHECK_CONTAINS(shmbus_last_error(), "512");
  other.slot_size = 256;
  CHECK_RC(shmbus_channel_open_or_create(BUS, name, &other, &opened), SHMBUS_OK);
  shmbus_channel_close(opened);

  char missing[80];
  snprintf(missing, sizeof missing, "%s-missing", name);
  CHECK_RC(shmbus_channel_open(BUS, missing, 0, &opened), SHMBUS_NOT_FOUND);
  CHECK_CONTAINS(shmbus_last_error(), missing);
  CHECK_RC(shmbus_channel_create(BUS, "bad name!", NULL, &opened), SHMBUS_INVALID_ARGUMENT);
  CHECK_CONTAINS(shmbus_last_error(), "bad name!");

  shmbus_channel_options bad;
  CHECK_RC(shmbus_channel_options_init(&bad, sizeof bad), SHMBUS_OK);
  bad.policy = 9;
  CHECK_RC(shmbus_channel_create(BUS, missing, &bad, &opened), SHMBUS_INVALID_ARGUMENT);
  CHECK_CONTAINS(shmbus_last_error(), "policy is 9");
  CHECK_RC(shmbus_channel_open(BUS, NULL, 0, &opened), SHMBUS_INVALID_ARGUMENT);
  CHECK_CONTAINS(shmbus_last_error(), "name is NULL");

  shmbus_channel_close(ch);
  CHECK_RC(shmbus_channel_remove(BUS, name), SHMBUS_OK);
  CHECK_RC(shmbus_channel_remove(BUS, name), SHMBUS_NOT_FOUND);
}

static void test_publish_and_poll(void) {
  const char* name = unique_name("capi-pubsub");
  shmbus_channel* ch = make_channel(name, 64, SHMBUS_POLICY_BLOCK);
  shmbus_subscriber* sub = subscribe_earliest(ch);
  shmbus_publisher* pub = make_publisher(ch);
  CHECK(shmbus_publisher_max_payload(pub) == shmbus_channel_max_payload(ch));

  shmbus_message_meta meta;
  memset(&meta, 0, sizeof meta);
  meta.key = 42;
  meta.correlation_id = 7;
  meta.type = 3;
  meta.id = 0x1d0000000000beefULL;
  CHECK_RC(shmbus_publish(pub, "hello", 5, &meta, SHMBUS_DEFAULT_PUBLISH_TIMEOUT_NS), SHMBUS_OK);
  CHECK_RC(shmbus_publish(pub, NULL, 0, NULL, 0), SHMBUS_OK); /* an empty message */

  char buf[256];
  shmbus_message m;
  CHECK_RC(shmbus_subscriber_poll(sub, &m, buf, sizeof buf), SHMBUS_OK);
  CHECK(m.sequence == 0 && m.payload_size == 5 && memcmp(buf, "hello", 5) == 0);
  CHECK(m.key == 42 && m.correlation_id == 7 && m.type == 3 && m.timestamp_ns > 0);
  CHECK(m.id == 0x1d0000000000beefULL);
  CHECK_RC(shmbus_subscriber_poll_wait(sub, &m, buf, sizeof buf, TEN_SECONDS_NS), SHMBUS_OK);
  CHECK(m.sequence == 1 && m.payload_size == 0 && m.key == 0 && m.id == 0);
  CHECK_RC(shmbus_subscriber_poll(sub, &m, buf, sizeof buf), SHMBUS_EMPTY);
  CHECK_RC(shmbus_subscriber_poll_wait(sub, &m, buf, sizeof buf, 1000000), SHMBUS_TIMEOUT);

  /* Replay: seek back to the first message. */
  CHECK_RC(shmbus_subscriber_seek(sub, 0), SHMBUS_OK);
  CHECK_RC(shmbus_subscriber_poll(sub, &m, buf, sizeof buf), SHMBUS_OK);
  CHECK(m.sequence == 0 && memcmp(buf, "hello", 5) == 0);

  release(NULL, sub, pub, ch);
}

static void test_removed_channel(void) {
  const char* name = unique_name("capi-removed");
  shmbus_channel* ch = make_channel(name, 64, SHMBUS_POLICY_BLOCK);
  shmbus_subscriber* sub = subscribe_earliest(ch);
  shmbus_publisher* pub = make_publisher(ch);
  publish_text(pub, "before", 1);
  CHECK_RC(shmbus_channel_remove(BUS, name), SHMBUS_OK);
  /* Handles learn it: never `ok` into a channel nobody can read. */
  CHECK_RC(shmbus_publish(pub, "after", 5, NULL, 0), SHMBUS_REMOVED);
  char buf[256];
  shmbus_message m;
  CHECK_RC(shmbus_subscriber_poll(sub, &m, buf, sizeof buf), SHMBUS_OK); /* committed before */
  /* A poll that finds nothing checks for removal every 64 empty polls. */
  int rc = SHMBUS_EMPTY;
  for (int i = 0; i < 64 && rc == SHMBUS_EMPTY; ++i) rc = shmbus_subscriber_poll(sub, &m, buf, sizeof buf);
  CHECK_RC(rc, SHMBUS_REMOVED);
  CHECK_RC(shmbus_subscriber_poll_wait(sub, &m, buf, sizeof buf, TEN_SECONDS_NS), SHMBUS_REMOVED);
  release(NULL, sub, pub, ch);
}

static void test_buffer_too_small(void) {
  const char* name = unique_name("capi-small");
  shmbus_channel* ch = make_channel(name, 64, SHMBUS_POLICY_BLOCK);
  shmbus_subscriber* sub = subscribe_earliest(ch);
  shmbus_publisher* pub = make_publisher(ch);
  publish_text(pub, "a message of 27 bytes total", 1);

  char buf[64];
  shmbus_message m;
  CHECK_RC(shmbus_subscriber_poll(sub, &m, buf, 4), SHMBUS_BUFFER_TOO_SMALL);
  CHECK(m.payload_size == 27);
  CHECK_RC(shmbus_subscriber_poll(sub, &m, NULL, 0), SHMBUS_BUFFER_TOO_SMALL);
  CHECK(m.payload_size == 27 && m.sequence == 0);
  CHECK_RC(shmbus_subscriber_poll(sub, &m, buf, (size_t)m.payload_size), SHMBUS_OK);
  CHECK(m.sequence == 0 && memcmp(buf, "a message of 27 bytes total", 27) == 0);

  /* Groups keep the message too. */
  shmbus_consumer* c = join_workers(ch, NULL);
  shmbus_delivery d;
  CHECK_RC(shmbus_consumer_receive(c, &d, buf, 3), SHMBUS_BUFFER_TOO_SMALL);
  CHECK(d.message.payload_size == 27);
  /* The retry gets it at once, as the same attempt. */
  CHECK_RC(shmbus_consumer_receive(c, &d, buf, sizeof buf), SHMBUS_OK);
  CHECK(d.sequence == 0 && d.attempt == 1 && memcmp(buf, "a message of 27 bytes total", 27) == 0);
  CHECK_RC(shmbus_consumer_ack(c, &d), SHMBUS_OK);

  release(c, sub, pub, ch);
}

static void test_too_large(void) {
  const char* name = unique_name("capi-large");
  shmbus_channel* ch = make_channel(name, 64, SHMBUS_POLICY_BLOCK);
  shmbus_publisher* pub = make_publisher(ch);
  char big[1024];
  memset(big, 'x', sizeof big);
  CHECK_RC(shmbus_publish(pub, big, sizeof big, NULL, 0), SHMBUS_TOO_LARGE);
  CHECK_CONTAINS(shmbus_last_error(), "payload of 1024 bytes");
  char max_text[32];
  snprintf(max_text, sizeof max_text, "%llu bytes", (unsigned long long)shmbus_channel_max_payload(ch));
  CHECK_CONTAINS(shmbus_last_error(), max_text);
  CHECK_RC(shmbus_publish(pub, big, (size_t)shmbus_channel_max_payload(ch), NULL, 0), SHMBUS_OK);
  release(NULL, NULL, pub, ch);
}

static void test_publish_batch_and_timestamps(void) {
  const char* name = unique_name("capi-batch");
  shmbus_channel_options o;
  shmbus_channel* ch = NULL;
  CHECK_RC(shmbus_channel_options_init(&o, sizeof o), SHMBUS_OK);
  o.capacity = 4;
  o.policy = SHMBUS_POLICY_REJECT;
  o.timestamps = SHMBUS_TIMESTAMPS_NONE;
  CHECK_RC(shmbus_channel_create(BUS, name, &o, &ch), SHMBUS_OK);
  shmbus_channel_options got;
  CHECK_RC(shmbus_channel_get_options(ch, &got, sizeof got), SHMBUS_OK);
  CHECK(got.timestamps == SHMBUS_TIMESTAMPS_NONE);
  shmbus_subscriber* sub = subscribe_earliest(ch);
  shmbus_publisher* pub = make_publisher(ch);

  shmbus_out_message batch[3];
  memset(batch, 0, sizeof batch);
  const char* texts[3] = {"one", "two", "three"};
  for (int i = 0; i < 3; ++i) {
    batch[i].data = texts[i];
    batch[i].size = strlen(texts[i]);
    batch[i].meta.key = (uint64_t)(10 + i);
    batch[i].meta.id = (uint64_t)(100 + i);
  }
  CHECK_RC(shmbus_publish_batch(pub, batch, 3, 0), SHMBUS_OK);
  /* One slot left: a batch of two is refused whole, a batch of five never fits. */
  CHECK_RC(shmbus_publish_batch(pub, batch, 2, 0), SHMBUS_FULL);
  shmbus_out_message five[5];
  memset(five, 0, sizeof five);
  CHECK_RC(shmbus_publish_batch(pub, five, 5, 0), SHMBUS_TOO_LARGE);
  CHECK_CONTAINS(shmbus_last_error(), "batch of 5 messages");
  batch[0].data = NULL;
  CHECK_RC(shmbus_publish_batch(pub, batch, 1, 0), SHMBUS_INVALID_ARGUMENT);
  CHECK_CONTAINS(shmbus_last_error(), "msgs[0].data is NULL");

  char buf[64];
  shmbus_message m;
  for (int i = 0; i < 3; ++i) {
    CHECK_RC(shmbus_subscriber_poll(sub, &m, buf, sizeof buf), SHMBUS_OK);
    CHECK(m.sequence == (uint64_t)i && m.key == (uint64_t)(10 + i) && m.id == (uint64_t)(100 + i));
    CHECK(m.payload_size == strlen(texts[i]) && memcmp(buf, texts[i], m.payload_size) == 0);
    CHECK(m.timestamp_ns == 0); /* a `none` channel stamps nothing */
  }
  CHECK_RC(shmbus_subscriber_poll(sub, &m, buf, sizeof buf), SHMBUS_EMPTY);
  release(NULL, sub, pub, ch);
}

static void test_reject_full_and_stats(void) {
  const char* name = unique_name("capi-reject");
  shmbus_channel* ch = make_channel(name, 2, SHMBUS_POLICY_REJECT);
  shmbus_subscriber* sub = subscribe_earliest(ch);
  shmbus_publisher* pub = make_publisher(ch);
  publish_text(pub, "one", 1);
  publish_text(pub, "two", 2);
  CHECK_RC(shmbus_publish(pub, "three", 5, NULL, 0), SHMBUS_FULL);

  shmbus_channel_stats st;
  CHECK_RC(shmbus_channel_get_stats(ch, &st, sizeof st), SHMBUS_OK);
  CHECK(st.head == 2 && st.depth == 2 && st.capacity == 2 && st.policy == SHMBUS_POLICY_REJECT);
  CHECK(st.subscribers == 1 && st.publishers == 1 && st.groups == 0 && st.published == 2);

  shmbus_subscriber_counters k;
  CHECK_RC(shmbus_subscriber_get_counters(sub, &k, sizeof k), SHMBUS_OK);
  CHECK(k.cursor == 0 && k.lag == 2 && k.delivered == 0);
  char buf[16];
  shmbus_message m;
  CHECK_RC(shmbus_subscriber_poll(sub, &m, buf, sizeof buf), SHMBUS_OK);
  CHECK_RC(shmbus_subscriber_get_counters(sub, &k, sizeof k), SHMBUS_OK);
  CHECK(k.cursor == 1 && k.lag == 1 && k.delivered == 1 && k.lost == 0);
  CHECK_RC(shmbus_channel_get_stats(ch, &st, sizeof st), SHMBUS_OK);
  CHECK(st.depth == 1);
  CHECK_RC(shmbus_publish(pub, "three", 5, NULL, 0), SHMBUS_OK);

  /* A smaller (older) stats struct gets only its prefix. */
  uint64_t prefix[2] = {0, 0xdeadbeef};
  CHECK_RC(shmbus_channel_get_stats(ch, (shmbus_channel_stats*)(void*)prefix, sizeof prefix[0]), SHMBUS_OK);
  CHECK(prefix[0] == 3 && prefix[1] == 0xdeadbeef);

  release(NULL, sub, pub, ch);
}

static void test_durable_resume(void) {
  const char* name = unique_name("capi-durable");
  shmbus_channel* ch = make_channel(name, 64, SHMBUS_POLICY_BLOCK);
  shmbus_publisher* pub = make_publisher(ch);
  shmbus_subscribe_options so;
  CHECK_RC(shmbus_subscribe_options_init(&so, sizeof so), SHMBUS_OK);
  so.start = SHMBUS_START_EARLIEST;
  so.name = "audit";
  shmbus_subscriber* sub = NULL;
  CHECK_RC(shmbus_subscriber_new(ch, &so, &sub), SHMBUS_OK);
  CHECK(shmbus_subscriber_resumed(sub) == 0);
  publish_text(pub, "m0", 0);
  publish_text(pub, "m1", 1);
  publish_text(pub, "m2", 2);
  char buf[16];
  shmbus_message m;
  CHECK_RC(shmbus_subscriber_poll(sub, &m, buf, sizeof buf), SHMBUS_OK);
  CHECK(m.sequence == 0);

  shmbus_subscriber* twin = NULL;
  CHECK_RC(shmbus_subscriber_new(ch, &so, &twin), SHMBUS_BUSY);
  CHECK_CONTAINS(shmbus_last_error(), "audit");
  CHECK_RC(shmbus_channel_remove_subscriber(ch, "audit"), SHMBUS_BUSY);
  shmbus_subscriber_free(sub);

  so.start = SHMBUS_START_LATEST; /* ignored: the cursor resumes */
  CHECK_RC(shmbus_subscriber_new(ch, &so, &sub), SHMBUS_OK);
  CHECK(shmbus_subscriber_resumed(sub) == 1);
  CHECK_RC(shmbus_subscriber_poll(sub, &m, buf, sizeof buf), SHMBUS_OK);
  CHECK(m.sequence == 1 && m.key == 1 && memcmp(buf, "m1", 2) == 0);
  shmbus_subscriber_free(sub);
  CHECK_RC(shmbus_channel_remove_subscriber(ch, "audit"), SHMBUS_OK);
  CHECK_RC(shmbus_channel_remove_subscriber(ch, "audit"), SHMBUS_NOT_FOUND);

  release(NULL, NULL, pub, ch);
}

static void test_group_nack_ack_dead_letter(void) {
  const char* name = unique_name("capi-group");
  shmbus_channel* ch = make_channel(name, 64, SHMBUS_POLICY_BLOCK);
  shmbus_group_options go = group_options();
  go.max_deliveries = 3;
  shmbus_consumer* c = join_workers(ch, &go);
  shmbus_publisher* pub = make_publisher(ch);
  publish_text(pub, "job-a", 10);
  publish_text(pub, "job-b", 11);

  char buf[64];
  shmbus_delivery d;
  CHECK_RC(shmbus_consumer_receive(c, &d, buf, sizeof buf), SHMBUS_OK);
  CHECK(d.sequence == 0 && d.attempt == 1 && d.message.key == 10 && memcmp(buf, "job-a", 5) == 0);
  CHECK(d.message.id == 10 + ID_OFFSET);
  CHECK(d.deadline_ns > 0);
  CHECK_RC(shmbus_consumer_nack(c, &d, 0), SHMBUS_OK);
  CHECK_RC(shmbus_consumer_ack(c, &d), SHMBUS_LEASE_LOST); /* the nack ended this lease */

  shmbus_delivery again;
  CHECK_RC(shmbus_consumer_receive_wait(c, &again, buf, sizeof buf, TEN_SECONDS_NS), SHMBUS_OK);
  CHECK(again.sequence == 0 && again.attempt == 2 && again.message.attempt == 2);
  CHECK(memcmp(buf, "job-a", 5) == 0);
  CHECK_RC(shmbus_consumer_ack(c, &again), SHMBUS_OK);
  CHECK_RC(shmbus_consumer_ack(c, &again), SHMBUS_LEASE_LOST);

  CHECK_RC(shmbus_consumer_receive(c, &d, buf, sizeof buf), SHMBUS_OK);
  CHECK(d.sequence == 1 && d.attempt == 1 && memcmp(buf, "job-b", 5) == 0);
  const uint64_t first_deadline = d.deadline_ns;
  CHECK_RC(shmbus_consumer_extend(c, &d, 60000000000ULL), SHMBUS_OK);
  CHECK(d.deadline_ns > first_deadline);
  CHECK_RC(shmbus_consumer_dead_letter(c, &d), SHMBUS_OK);
  CHECK_RC(shmbus_consumer_receive(c, &d, buf, sizeof buf), SHMBUS_EMPTY);

  shmbus_group_stats gs;
  CHECK_RC(shmbus_channel_get_group_stats(ch, "workers", &gs, sizeof gs), SHMBUS_OK);
  CHECK(gs.acked == 1 && gs.nacked == 1 && gs.dead_lettered == 1 && gs.redelivered == 1);
  CHECK(gs.unfinished == 0 && gs.pending == 0 && gs.in_flight == 0 && gs.floor == 2);
  CHECK(gs.consumers == 1 && gs.max_deliveries == 3);
  CHECK_RC(shmbus_channel_get_group_stats(ch, "nobody", &gs, sizeof gs), SHMBUS_NOT_FOUND);
  CHECK_CONTAINS(shmbus_last_error(), "nobody");

  /* The dead letter: a record, then the original payload. */
  char dlq_name[80];
  snprintf(dlq_name, sizeof dlq_name, "%s-dlq", name);
  shmbus_channel* dlq = open_channel(dlq_name);
  shmbus_subscriber* dsub = subscribe_earliest(dlq);
  unsigned char rec_buf[512];
  shmbus_message m;
  CHECK_RC(shmbus_subscriber_poll(dsub, &m, rec_buf, sizeof rec_buf), SHMBUS_OK);
  CHECK(m.payload_size == sizeof(shmbus_dlq_record) + 5 && m.key == 11);
  CHECK(m.id == 11 + ID_OFFSET); /* the dead letter keeps the message id */
  shmbus_dlq_record rec;
  memcpy(&rec, rec_buf, sizeof rec);
  CHECK(rec.original_sequence == 1 && rec.reason == SHMBUS_DLQ_REJECTED && rec.attempts == 1);
  CHECK(rec.payload_length == 5 && strcmp(rec.group, "workers") == 0 && strcmp(rec.source, name) == 0);
  CHECK(memcmp(rec_buf + sizeof rec, "job-b", 5) == 0);

  /* A group of other settings is refused; removing a live group is busy. */
  go.max_deliveries = 4;
  shmbus_consumer* other = NULL;
  CHECK_RC(shmbus_group_join(ch, "workers", &go, &other), SHMBUS_PARAMETER_MISMATCH);
  CHECK_CONTAINS(shmbus_last_error(), "max_deliveries");
  CHECK_RC(shmbus_channel_remove_group(ch, "workers"), SHMBUS_BUSY);
  shmbus_consumer_free(c);
  CHECK_RC(shmbus_channel_remove_group(ch, "workers"), SHMBUS_OK);

  release(NULL, dsub, NULL, dlq);
  release(NULL, NULL, pub, ch);
}

static void test_foreign_delivery(void) {
  const char* name = unique_name("capi-foreign");
  shmbus_channel* ch = make_channel(name, 64, SHMBUS_POLICY_BLOCK);
  shmbus_consumer* a = join_workers(ch, NULL);
  shmbus_consumer* b = join_workers(ch, NULL);
  shmbus_publisher* pub = make_publisher(ch);
  publish_text(pub, "only one", 1);
  char buf[64];
  shmbus_delivery d;
  CHECK_RC(shmbus_consumer_receive(a, &d, buf, sizeof buf), SHMBUS_OK);
  shmbus_delivery none;
  CHECK_RC(shmbus_consumer_receive(b, &none, buf, sizeof buf), SHMBUS_EMPTY);
  CHECK_RC(shmbus_consumer_ack(b, &d), SHMBUS_INVALID);
  CHECK_RC(shmbus_consumer_nack(b, &d, 0), SHMBUS_INVALID);
  CHECK_RC(shmbus_consumer_ack(a, &d), SHMBUS_OK);
  shmbus_consumer_free(a);
  release(b, NULL, pub, ch);
}

/* A child consumer takes a message, reports its sequence and is SIGKILLed
 * before acking; the parent, in the same group, gets it again (attempt 2). */
static void test_killed_consumer_redelivers(void) {
  const char* name = unique_name("capi-kill");
  shmbus_channel* ch = make_channel(name, 64, SHMBUS_POLICY_BLOCK);
  shmbus_group_options go = group_options();
  go.visibility_timeout_ns = 200000000ULL; /* 200 ms leases */
  shmbus_consumer* c = join_workers(ch, &go);
  shmbus_publisher* pub = make_publisher(ch);
  publish_text(pub, "work", 99);

  int report[2];
  CHECK(pipe(report) == 0);
  const pid_t child = fork();
  CHECK(child >= 0);
  if (child == 0) {
    become_child();
    shmbus_consumer* cc = join_workers(open_channel(name), &go);
    char cbuf[64];
    shmbus_delivery cd;
    CHECK_RC(shmbus_consumer_receive_wait(cc, &cd, cbuf, sizeof cbuf, TEN_SECONDS_NS), SHMBUS_OK);
    write_u64(report[1], cd.sequence + 1);
    for (;;) pause(); /* holds the lease until killed */
  }
  uint64_t got = 0;
  const int reported = read_u64(report[0], &got);
  if (!reported) kill(child, SIGKILL);
  CHECK(reported);
  CHECK(got == 1); /* the child holds sequence 0 */
  CHECK(kill(child, SIGKILL) == 0);
  int status = 0;
  CHECK(waitpid(child, &status, 0) == child);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

  char buf[64];
  shmbus_delivery d;
  CHECK_RC(shmbus_consumer_receive_wait(c, &d, buf, sizeof buf, TEN_SECONDS_NS), SHMBUS_OK);
  CHECK(d.sequence == 0 && d.attempt == 2 && d.message.key == 99 && memcmp(buf, "work", 4) == 0);
  CHECK_RC(shmbus_consumer_ack(c, &d), SHMBUS_OK);
  shmbus_group_stats gs;
  CHECK_RC(shmbus_channel_get_group_stats(ch, "workers", &gs, sizeof gs), SHMBUS_OK);
  CHECK(gs.redelivered == 1 && gs.acked == 1 && gs.unfinished == 0);

  close(report[0]);
  close(report[1]);
  release(c, NULL, pub, ch);
}

/* A forked publisher (its own channel handle) sends 200 messages; the parent's
 * subscriber, made before the fork, reads them all in order. */
static void test_forked_publisher(void) {
  const char* name = unique_name("capi-fork");
  shmbus_channel* ch = make_channel(name, 16, SHMBUS_POLICY_BLOCK);
  shmbus_subscriber* sub = subscribe_earliest(ch);
  enum { kCount = 200 };

  const pid_t child = fork();
  CHECK(child >= 0);
  if (child == 0) {
    become_child();
    shmbus_channel* cch = open_channel(name);
    shmbus_publisher* p = make_publisher(cch);
    for (uint64_t i = 0; i < kCount; ++i) {
      char text[32];
      const int n = snprintf(text, sizeof text, "msg-%llu", (unsigned long long)i);
      shmbus_message_meta meta;
      memset(&meta, 0, sizeof meta);
      meta.key = i;
      CHECK_RC(shmbus_publish(p, text, (size_t)n, &meta, TEN_SECONDS_NS), SHMBUS_OK);
    }
    release(NULL, NULL, p, cch);
    _exit(0);
  }
  for (uint64_t i = 0; i < kCount; ++i) {
    char buf[64];
    char want[32];
    shmbus_message m;
    const int rc = shmbus_subscriber_poll_wait(sub, &m, buf, sizeof buf, TEN_SECONDS_NS);
    if (rc != SHMBUS_OK) kill(child, SIGKILL);
    CHECK_RC(rc, SHMBUS_OK);
    const int n = snprintf(want, sizeof want, "msg-%llu", (unsigned long long)i);
    CHECK(m.sequence == i && m.key == i && m.payload_size == (uint64_t)n);
    CHECK(memcmp(buf, want, (size_t)n) == 0);
  }
  int status = 0;
  CHECK(waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  release(NULL, sub, NULL, ch);
}

static void* fail_in_thread(void* arg) {
  char* seen = arg;
  shmbus_channel* ch = NULL;
  if (shmbus_channel_open(BUS, "no-such-channel-in-thread", 0, &ch) != SHMBUS_NOT_FOUND) return NULL;
  snprintf(seen, 256, "%s", shmbus_last_error());
  return seen;
}

static void test_last_error_per_thread(void) {
  const char* name = unique_name("capi-tls"); /* its remove of a stale name may set the last error */
  shmbus_channel* ch = NULL;
  CHECK_RC(shmbus_channel_open(BUS, "bad name!", 0, &ch), SHMBUS_INVALID_ARGUMENT);
  char mine[256];
  snprintf(mine, sizeof mine, "%s", shmbus_last_error());
  CHECK_CONTAINS(mine, "bad name!");

  char theirs[256] = {0};
  pthread_t t;
  void* result = NULL;
  CHECK(pthread_create(&t, NULL, fail_in_thread, theirs) == 0);
  CHECK(pthread_join(t, &result) == 0);
  CHECK(result == theirs);
  CHECK_CONTAINS(theirs, "no-such-channel-in-thread");
  CHECK(strcmp(shmbus_last_error(), mine) == 0); /* untouched by the other thread */

  /* Successful calls leave it unchanged. */
  CHECK(shmbus_strerror(SHMBUS_OK) != NULL);
  shmbus_channel* ok = make_channel(name, 64, SHMBUS_POLICY_BLOCK);
  CHECK(strcmp(shmbus_last_error(), mine) == 0);
  shmbus_channel_close(ok);
}

static void test_null_arguments(void) {
  shmbus_message m;
  shmbus_delivery d;
  char buf[8];
  memset(&d, 0, sizeof d);
  CHECK_RC(shmbus_publish(NULL, "x", 1, NULL, 0), SHMBUS_INVALID_ARGUMENT);
  CHECK_CONTAINS(shmbus_last_error(), "shmbus_publish: publisher is NULL");
  CHECK_RC(shmbus_subscriber_poll(NULL, &m, buf, sizeof buf), SHMBUS_INVALID_ARGUMENT);
  CHECK_RC(shmbus_consumer_receive(NULL, &d, buf, sizeof buf), SHMBUS_INVALID_ARGUMENT);
  CHECK_RC(shmbus_consumer_ack(NULL, &d), SHMBUS_INVALID_ARGUMENT);
  CHECK_RC(shmbus_channel_create(BUS, "x", NULL, NULL), SHMBUS_INVALID_ARGUMENT);
  CHECK_CONTAINS(shmbus_last_error(), "out is NULL");
  CHECK_RC(shmbus_publisher_new(NULL, NULL), SHMBUS_INVALID_ARGUMENT);
  CHECK_RC(shmbus_channel_get_stats(NULL, NULL, 0), SHMBUS_INVALID_ARGUMENT);

  const char* name = unique_name("capi-null");
  shmbus_channel* ch = make_channel(name, 64, SHMBUS_POLICY_BLOCK);
  shmbus_publisher* pub = make_publisher(ch);
  CHECK_RC(shmbus_publish(pub, NULL, 4, NULL, 0), SHMBUS_INVALID_ARGUMENT);
  CHECK_CONTAINS(shmbus_last_error(), "data");
  shmbus_subscriber* sub = NULL;
  CHECK_RC(shmbus_subscriber_new(ch, NULL, &sub), SHMBUS_OK);
  CHECK_RC(shmbus_subscriber_poll(sub, NULL, buf, sizeof buf), SHMBUS_INVALID_ARGUMENT);
  CHECK_RC(shmbus_subscriber_poll(sub, &m, NULL, 8), SHMBUS_INVALID_ARGUMENT);
  CHECK_RC(shmbus_channel_get_stats(ch, NULL, 0), SHMBUS_INVALID_ARGUMENT);
  shmbus_channel_stats st;
  CHECK_RC(shmbus_channel_get_stats(ch, &st, 0), SHMBUS_INVALID_ARGUMENT);
  CHECK(shmbus_channel_name(NULL) == NULL && shmbus_channel_max_payload(NULL) == 0);

  /* Releasing NULL is a no-op. */
  shmbus_subscriber_free(NULL);
  shmbus_publisher_free(NULL);
  shmbus_consumer_free(NULL);
  shmbus_channel_close(NULL);
  release(NULL, sub, pub, ch);
}

static void test_c99_layout(void) {
  CHECK(shmbus_test_c99_sizeof(0) == sizeof(shmbus_channel_options));
  CHECK(shmbus_test_c99_sizeof(1) == sizeof(shmbus_subscribe_options));
  CHECK(shmbus_test_c99_sizeof(2) == sizeof(shmbus_group_options));
  CHECK(shmbus_test_c99_sizeof(3) == sizeof(shmbus_message));
  CHECK(shmbus_test_c99_sizeof(4) == sizeof(shmbus_delivery));
  CHECK(shmbus_test_c99_sizeof(5) == sizeof(shmbus_dlq_record));
  CHECK(sizeof(shmbus_message) == 56 && sizeof(shmbus_delivery) == 88);
  CHECK(sizeof(shmbus_message_meta) == 40 && sizeof(shmbus_dlq_record) == 160);
  CHECK(offsetof(shmbus_message, id) == 48 && offsetof(shmbus_message_meta, id) == 32);
}

/* --- the table; tests/package/CMakeLists.txt reads the names from it ------------ */

struct test_case {
  const char* name;
  void (*run)(void);
};

static const struct test_case cases[] = {
    {"status names are distinct and every status has one", test_status_names},
    {"options init fills the defaults and refuses a short struct", test_options_init},
    {"options from a newer caller are accepted only with a zero tail", test_options_from_a_newer_caller},
    {"create open and open_or_create report errors with context", test_create_open_errors},
    {"a message published from C is polled back with its metadata", test_publish_and_poll},
    {"a removed channel makes publish and poll return removed", test_removed_channel},
    {"a too small buffer reports the size needed and keeps the message", test_buffer_too_small},
    {"publishing more than the max payload is refused with both sizes", test_too_large},
    {"a batch is published whole or refused and a none channel stamps nothing", test_publish_batch_and_timestamps},
    {"a reject channel returns full and stats show depth and lag", test_reject_full_and_stats},
    {"a durable subscriber resumes its cursor by name", test_durable_resume},
    {"a group redelivers a nacked message then acks and dead-letters", test_group_nack_ack_dead_letter},
    {"a delivery of another consumer is refused as invalid", test_foreign_delivery},
    {"a consumer killed before its ack has the message redelivered", test_killed_consumer_redelivers},
    {"messages of a forked publisher reach a subscriber in order", test_forked_publisher},
    {"the last error is kept per thread", test_last_error_per_thread},
    {"NULL arguments are refused with a message", test_null_arguments},
    {"a C99 compiler sees the same struct layout", test_c99_layout},
};

int main(int argc, char** argv) {
  const size_t n = sizeof cases / sizeof cases[0];
  atexit(remove_names);
  int ran = 0;
  for (size_t i = 0; i < n; ++i) {
    if (argc > 1 && strcmp(argv[1], cases[i].name) != 0) continue;
    cases[i].run();
    printf("ok - %s\n", cases[i].name);
    fflush(stdout);
    ++ran;
  }
  if (ran == 0) {
    fprintf(stderr, "no test case named \"%s\"\n", argc > 1 ? argv[1] : "");
    return 1;
  }
  return 0;
}
