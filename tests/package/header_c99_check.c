/* Compiled as strict C99 (-std=c99 -Wpedantic): proves that shmbus.h is valid
 * C99, and reports the struct sizes a C99 compiler sees, which the C11 test
 * compares with its own. */
#include <shmbus/shmbus.h>

size_t shmbus_test_c99_sizeof(int which);

size_t shmbus_test_c99_sizeof(int which) {
  switch (which) {
    case 0: return sizeof(shmbus_channel_options);
    case 1: return sizeof(shmbus_subscribe_options);
    case 2: return sizeof(shmbus_group_options);
    case 3: return sizeof(shmbus_message);
    case 4: return sizeof(shmbus_delivery);
    case 5: return sizeof(shmbus_dlq_record);
    default: return 0;
  }
}
