/* An outside C program on the C API: a publisher, a consumer group with ack,
 * the group's stats. Usage: consumer_c BUS CHANNEL. Exits 0 when every check
 * holds. */
#include <shmbus/shmbus.h>

#include <stdio.h>
#include <string.h>

static int failures = 0;

static void check(int ok, const char* what) {
  if (!ok) {
    fprintf(stderr, "FAIL: %s (last error: %s)\n", what, shmbus_last_error());
    ++failures;
  }
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s BUS CHANNEL\n", argv[0]);
    return 2;
  }
  const char* bus = argv[1];
  const char* name = argv[2];
  shmbus_channel_options opts;
  shmbus_channel* ch = NULL;
  shmbus_channel_options_init(&opts, sizeof opts);
  opts.capacity = 64;
  if (shmbus_channel_create(bus, name, &opts, &ch) != SHMBUS_OK) {
    fprintf(stderr, "create: %s\n", shmbus_last_error());
    return 1;
  }
  shmbus_consumer* consumer = NULL;
  shmbus_publisher* pub = NULL;
  check(shmbus_group_join(ch, "workers", NULL, &consumer) == SHMBUS_OK, "join");
  check(shmbus_publisher_new(ch, &pub) == SHMBUS_OK, "publisher");
  if (failures != 0) return 1;

  for (int i = 0; i < 5; ++i) {
    char text[32];
    const int n = snprintf(text, sizeof text, "task-%d", i);
    shmbus_message_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.key = (uint64_t)i;
    check(shmbus_publish(pub, text, (size_t)n, &meta, SHMBUS_DEFAULT_PUBLISH_TIMEOUT_NS) == SHMBUS_OK, "publish");
  }
  for (int i = 0; i < 5; ++i) {
    char buf[64];
    char want[32];
    shmbus_delivery d;
    const int n = snprintf(want, sizeof want, "task-%d", i);
    check(shmbus_consumer_receive(consumer, &d, buf, sizeof buf) == SHMBUS_OK, "receive");
    check(d.message.key == (uint64_t)i && d.message.payload_size == (uint64_t)n && memcmp(buf, want, (size_t)n) == 0,
          "the group delivers every task in order");
    check(shmbus_consumer_ack(consumer, &d) == SHMBUS_OK, "ack");
  }
  shmbus_group_stats gs;
  check(shmbus_channel_get_group_stats(ch, "workers", &gs, sizeof gs) == SHMBUS_OK, "group stats");
  check(gs.acked == 5 && gs.unfinished == 0, "stats: 5 acked, nothing unfinished");

  shmbus_consumer_free(consumer);
  shmbus_publisher_free(pub);
  shmbus_channel_close(ch);
  char dlq[96];
  snprintf(dlq, sizeof dlq, "%s-dlq", name);
  check(shmbus_channel_remove(bus, name) == SHMBUS_OK, "remove");
  (void)shmbus_channel_remove(bus, dlq);
  if (failures != 0) return 1;
  printf("C consumer ok: 5 tasks through a group (shmbus %s)\n", shmbus_version());
  return 0;
}
