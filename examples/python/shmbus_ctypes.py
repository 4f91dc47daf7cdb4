"""shmbus from Python through ctypes: a thin layer over the C API
(include/shmbus/shmbus.h, docs/c_api.md) of libshmbus.so. Standard library
only.

    import shmbus_ctypes as sb
    lib = sb.load()                       # or sb.load("/path/to/libshmbus.so")
    with sb.Channel.open_or_create(lib, "orders", capacity=1024) as ch:
        with ch.publisher() as pub:
            pub.publish(b"hello", key=42, id=0x5eed)   # key: what it is about; id: which event

Every handle is closed by close() or by leaving its `with` block. Threading is
that of the C API: a Channel may be shared by threads; a Publisher,
Subscriber or Consumer is used by one thread at a time. ctypes releases the
GIL during each call, so a waiting poll does not stall other Python threads.

Setup calls raise ShmbusError (with the library's message and context). Hot
paths return results instead: publish() returns a status (OK, FULL, TIMEOUT),
poll()/receive() return None when nothing came.
"""

import ctypes
import ctypes.util
import os
from dataclasses import dataclass

ABI_VERSION = 2

# enum shmbus_status (the values the C header defines)
OK = 0
INVALID_ARGUMENT = 1
NOT_FOUND = 2
ALREADY_EXISTS = 3
PARAMETER_MISMATCH = 6
TIMEOUT = 9
BUSY = 11
EMPTY = 32
LAPPED = 33
BUFFER_TOO_SMALL = 34
FULL = 35
TOO_LARGE = 36
ABANDONED = 37
LEASE_LOST = 38
DLQ_UNAVAILABLE = 39
INVALID = 40
REMOVED = 41
SEGMENT_LOST = 42

POLICY = {"block": 1, "drop_oldest": 2, "reject": 3}
WAIT = {"busy_spin": 0, "yield": 1, "backoff": 2, "block": 3}
START = {"earliest": 0, "latest": 1, "sequence": 2, "timestamp": 3}

DEFAULT_PUBLISH_TIMEOUT_NS = 1_000_000_000
DEFAULT_INIT_WAIT_NS = 2_000_000_000

_u32 = ctypes.c_uint32
_u64 = ctypes.c_uint64


class ChannelOptions(ctypes.Structure):
    _fields_ = [("struct_size", _u32), ("slot_size", _u32), ("capacity", _u32), ("policy", _u32),
                ("max_subscribers", _u32), ("max_publishers", _u32), ("max_groups", _u32),
                ("max_consumers", _u32), ("mode", _u32), ("timestamps", _u32),
                ("unblock_timeout_ns", _u64), ("eviction_timeout_ns", _u64)]


class SubscribeOptions(ctypes.Structure):
    _fields_ = [("struct_size", _u32), ("start", _u32), ("start_value", _u64),
                ("name", ctypes.c_char_p), ("wait", _u32), ("reserved0", _u32)]


class GroupOptions(ctypes.Structure):
    _fields_ = [("struct_size", _u32), ("start", _u32), ("start_value", _u64),
                ("visibility_timeout_ns", _u64), ("backoff_base_ns", _u64), ("backoff_cap_ns", _u64),
                ("max_deliveries", _u32), ("jitter_permille", _u32), ("dlq", ctypes.c_char_p),
                ("wait", _u32), ("reserved0", _u32)]


class MessageMeta(ctypes.Structure):
    _fields_ = [("key", _u64), ("correlation_id", _u64), ("timestamp_ns", _u64), ("type", _u32),
                ("reserved0", _u32), ("id", _u64)]


class CMessage(ctypes.Structure):
    _fields_ = [("sequence", _u64), ("timestamp_ns", _u64), ("key", _u64), ("correlation_id", _u64),
                ("type", _u32), ("attempt", _u32), ("payload_size", _u64), ("id", _u64)]


class CDelivery(ctypes.Structure):
    _fields_ = [("message", CMessage), ("sequence", _u64), ("deadline_ns", _u64), ("lease", _u64),
                ("group", _u32), ("attempt", _u32)]


class ChannelStats(ctypes.Structure):
    _fields_ = [("head", _u64), ("oldest", _u64), ("depth", _u64), ("published", _u64),
                ("abandoned", _u64), ("evictions", _u64), ("capacity", _u32), ("slot_size", _u32),
                ("max_payload", _u32), ("policy", _u32), ("subscribers", _u32), ("publishers", _u32),
                ("groups", _u32), ("reserved0", _u32)]


class GroupStats(ctypes.Structure):
    _fields_ = [("next", _u64), ("floor", _u64), ("pending", _u64), ("unfinished", _u64),
                ("in_flight", _u64), ("due", _u64), ("oldest_unacked_age_ns", _u64),
                ("delivered", _u64), ("acked", _u64), ("nacked", _u64), ("redelivered", _u64),
                ("expired", _u64), ("dead_lettered", _u64), ("lost", _u64), ("consumers", _u32),
                ("max_deliveries", _u32)]


class SubscriberCounters(ctypes.Structure):
    _fields_ = [("cursor", _u64), ("lag", _u64), ("delivered", _u64), ("lost", _u64),
                ("lapped_events", _u64)]


# The fixed layouts of ABI version 2 (api/c_api.cpp asserts the same sizes).
assert ctypes.sizeof(MessageMeta) == 40 and ctypes.sizeof(CMessage) == 56
assert ctypes.sizeof(CDelivery) == 88 and ctypes.sizeof(ChannelOptions) == 56
assert ctypes.sizeof(SubscribeOptions) == 32 and ctypes.sizeof(GroupOptions) == 64


class ShmbusError(Exception):
    """A failed setup call: status code, its name, and the library's message."""

    def __init__(self, code, name, message):
        super().__init__(f"{name}: {message}")
        self.code = code
        self.name = name
        self.message = message


@dataclass
class Message:
    sequence: int
    timestamp_ns: int
    key: int
    id: int  # the publisher's message id (0 = none): dedup on it, not on the key
    correlation_id: int
    type: int
    attempt: int
    payload: bytes


@dataclass
class Delivery:
    message: Message
    attempt: int
    deadline_ns: int
    token: CDelivery  # what ack/nack/extend pass back


_P = ctypes.c_void_p
_PP = ctypes.POINTER(ctypes.c_void_p)
_SIGNATURES = {
    "shmbus_strerror": (ctypes.c_char_p, [ctypes.c_int]),
    "shmbus_last_error": (ctypes.c_char_p, []),
    "shmbus_last_errno": (ctypes.c_int, []),
    "shmbus_version": (ctypes.c_char_p, []),
    "shmbus_abi_version": (ctypes.c_int, []),
    "shmbus_channel_options_init": (ctypes.c_int, [ctypes.POINTER(ChannelOptions), ctypes.c_size_t]),
    "shmbus_subscribe_options_init": (ctypes.c_int, [ctypes.POINTER(SubscribeOptions), ctypes.c_size_t]),
    "shmbus_group_options_init": (ctypes.c_int, [ctypes.POINTER(GroupOptions), ctypes.c_size_t]),
    "shmbus_channel_create": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p,
                                             ctypes.POINTER(ChannelOptions), _PP]),
    "shmbus_channel_open": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p, _u64, _PP]),
    "shmbus_channel_open_or_create": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p,
                                                     ctypes.POINTER(ChannelOptions), _PP]),
    "shmbus_channel_close": (None, [_P]),
    "shmbus_channel_remove": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p]),
    "shmbus_channel_name": (ctypes.c_char_p, [_P]),
    "shmbus_channel_max_payload": (_u64, [_P]),
    "shmbus_channel_get_options": (ctypes.c_int, [_P, ctypes.POINTER(ChannelOptions), ctypes.c_size_t]),
    "shmbus_channel_get_stats": (ctypes.c_int, [_P, ctypes.POINTER(ChannelStats), ctypes.c_size_t]),
    "shmbus_channel_get_group_stats": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.POINTER(GroupStats),
                                                      ctypes.c_size_t]),
    "shmbus_channel_remove_subscriber": (ctypes.c_int, [_P, ctypes.c_char_p]),
    "shmbus_channel_remove_group": (ctypes.c_int, [_P, ctypes.c_char_p]),
    "shmbus_publisher_new": (ctypes.c_int, [_P, _PP]),
    "shmbus_publisher_free": (None, [_P]),
    "shmbus_publish": (ctypes.c_int, [_P, ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(MessageMeta),
                                      _u64]),
    "shmbus_publisher_max_payload": (_u64, [_P]),
    "shmbus_subscriber_new": (ctypes.c_int, [_P, ctypes.POINTER(SubscribeOptions), _PP]),
    "shmbus_subscriber_free": (None, [_P]),
    "shmbus_subscriber_poll": (ctypes.c_int, [_P, ctypes.POINTER(CMessage), ctypes.c_void_p,
                                              ctypes.c_size_t]),
    "shmbus_subscriber_poll_wait": (ctypes.c_int, [_P, ctypes.POINTER(CMessage), ctypes.c_void_p,
                                                   ctypes.c_size_t, _u64]),
    "shmbus_subscriber_seek": (ctypes.c_int, [_P, _u64]),
    "shmbus_subscriber_resumed": (ctypes.c_int, [_P]),
    "shmbus_subscriber_get_counters": (ctypes.c_int, [_P, ctypes.POINTER(SubscriberCounters),
                                                      ctypes.c_size_t]),
    "shmbus_group_join": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.POINTER(GroupOptions), _PP]),
    "shmbus_consumer_free": (None, [_P]),
    "shmbus_consumer_receive": (ctypes.c_int, [_P, ctypes.POINTER(CDelivery), ctypes.c_void_p,
                                               ctypes.c_size_t]),
    "shmbus_consumer_receive_wait": (ctypes.c_int, [_P, ctypes.POINTER(CDelivery), ctypes.c_void_p,
                                                    ctypes.c_size_t, _u64]),
    "shmbus_consumer_ack": (ctypes.c_int, [_P, ctypes.POINTER(CDelivery)]),
    "shmbus_consumer_nack": (ctypes.c_int, [_P, ctypes.POINTER(CDelivery), _u64]),
    "shmbus_consumer_nack_backoff": (ctypes.c_int, [_P, ctypes.POINTER(CDelivery)]),
    "shmbus_consumer_extend": (ctypes.c_int, [_P, ctypes.POINTER(CDelivery), _u64]),
    "shmbus_consumer_dead_letter": (ctypes.c_int, [_P, ctypes.POINTER(CDelivery)]),
}


class Library:
    """libshmbus.so with every function's signature declared."""

    def __init__(self, path):
        self.path = path
        self.dll = ctypes.CDLL(path)
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(self.dll, name)
            fn.restype = restype
            fn.argtypes = argtypes
        abi = self.dll.shmbus_abi_version()
        if abi != ABI_VERSION:
            raise ShmbusError(INVALID, "invalid", f"{path} has C ABI version {abi}; this module needs {ABI_VERSION}")

    def version(self):
        return self.dll.shmbus_version().decode()

    def strerror(self, code):
        return self.dll.shmbus_strerror(code).decode()

    def check(self, code):
        """Raises ShmbusError for a failed setup call."""
        if code != OK:
            raise ShmbusError(code, self.strerror(code), self.dll.shmbus_last_error().decode())


def load(path=None):
    """Loads libshmbus: `path`, else $SHMBUS_LIBRARY, else the system's search."""
    path = path or os.environ.get("SHMBUS_LIBRARY") or ctypes.util.find_library("shmbus") or "libshmbus.so"
    return Library(path)


def _b(s):
    return None if s is None else s.encode()


def _channel_options(lib, **kw):
    o = ChannelOptions()
    lib.check(lib.dll.shmbus_channel_options_init(ctypes.byref(o), ctypes.sizeof(o)))
    for k, v in kw.items():
        if k == "policy" and isinstance(v, str):
            v = POLICY[v]
        if not hasattr(o, k) or k in ("struct_size", "reserved0"):
            raise TypeError(f"unknown channel option {k!r}")
        setattr(o, k, v)
    return o


class _Handle:
    _free = None

    def __init__(self, lib, ptr):
        self._lib = lib
        self._ptr = ptr

    def close(self):
        if self._ptr:
            getattr(self._lib.dll, self._free)(self._ptr)
            self._ptr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Channel(_Handle):
    """An open channel. Thread-safe."""

    _free = "shmbus_channel_close"

    @classmethod
    def create(cls, lib, name, bus=None, **options):
        out = ctypes.c_void_p()
        o = _channel_options(lib, **options)
        lib.check(lib.dll.shmbus_channel_create(_b(bus), _b(name), ctypes.byref(o), ctypes.byref(out)))
        return cls(lib, out)

    @classmethod
    def open(cls, lib, name, bus=None, init_wait_ns=DEFAULT_INIT_WAIT_NS):
        out = ctypes.c_void_p()
        lib.check(lib.dll.shmbus_channel_open(_b(bus), _b(name), init_wait_ns, ctypes.byref(out)))
        return cls(lib, out)

    @classmethod
    def open_or_create(cls, lib, name, bus=None, **options):
        out = ctypes.c_void_p()
        o = _channel_options(lib, **options)
        lib.check(lib.dll.shmbus_channel_open_or_create(_b(bus), _b(name), ctypes.byref(o), ctypes.byref(out)))
        return cls(lib, out)

    @staticmethod
    def remove(lib, name, bus=None, missing_ok=False):
        rc = lib.dll.shmbus_channel_remove(_b(bus), _b(name))
        if rc == NOT_FOUND and missing_ok:
            return
        lib.check(rc)

    @property
    def name(self):
        return self._lib.dll.shmbus_channel_name(self._ptr).decode()

    @property
    def max_payload(self):
        return self._lib.dll.shmbus_channel_max_payload(self._ptr)

    def options(self):
        o = ChannelOptions()
        self._lib.check(self._lib.dll.shmbus_channel_get_options(self._ptr, ctypes.byref(o), ctypes.sizeof(o)))
        return o

    def stats(self):
        s = ChannelStats()
        self._lib.check(self._lib.dll.shmbus_channel_get_stats(self._ptr, ctypes.byref(s), ctypes.sizeof(s)))
        return s

    def group_stats(self, group):
        s = GroupStats()
        self._lib.check(self._lib.dll.shmbus_channel_get_group_stats(self._ptr, _b(group), ctypes.byref(s),
                                                                     ctypes.sizeof(s)))
        return s

    def remove_group(self, group):
        self._lib.check(self._lib.dll.shmbus_channel_remove_group(self._ptr, _b(group)))

    def publisher(self):
        out = ctypes.c_void_p()
        self._lib.check(self._lib.dll.shmbus_publisher_new(self._ptr, ctypes.byref(out)))
        return Publisher(self._lib, out)

    def subscribe(self, start="latest", start_value=0, name=None, wait="block"):
        o = SubscribeOptions()
        self._lib.check(self._lib.dll.shmbus_subscribe_options_init(ctypes.byref(o), ctypes.sizeof(o)))
        o.start = START[start]
        o.start_value = start_value
        o.name = _b(name)
        o.wait = WAIT[wait]
        out = ctypes.c_void_p()
        self._lib.check(self._lib.dll.shmbus_subscriber_new(self._ptr, ctypes.byref(o), ctypes.byref(out)))
        return Subscriber(self._lib, out, self.max_payload)

    def join_group(self, group, start="earliest", start_value=0, visibility_timeout_ns=None,
                   max_deliveries=None, backoff_base_ns=None, backoff_cap_ns=None, jitter_permille=None,
                   dlq=None, wait="block"):
        o = GroupOptions()
        self._lib.check(self._lib.dll.shmbus_group_options_init(ctypes.byref(o), ctypes.sizeof(o)))
        o.start = START[start]
        o.start_value = start_value
        for k, v in (("visibility_timeout_ns", visibility_timeout_ns), ("max_deliveries", max_deliveries),
                     ("backoff_base_ns", backoff_base_ns), ("backoff_cap_ns", backoff_cap_ns),
                     ("jitter_permille", jitter_permille)):
            if v is not None:
                setattr(o, k, v)
        o.dlq = _b(dlq)
        o.wait = WAIT[wait]
        out = ctypes.c_void_p()
        self._lib.check(self._lib.dll.shmbus_group_join(self._ptr, _b(group), ctypes.byref(o), ctypes.byref(out)))
        return Consumer(self._lib, out, self.max_payload)


class Publisher(_Handle):
    """Appends to a channel. One thread at a time."""

    _free = "shmbus_publisher_free"

    def publish(self, data, key=0, correlation_id=0, type=0, timeout_ns=DEFAULT_PUBLISH_TIMEOUT_NS, id=0):
        """Returns OK, or the backpressure result (FULL, TIMEOUT). Raises on misuse (TOO_LARGE...).
        `key` says what the message is about (ordering, partitioning); `id` says which event it is
        (unique per event, 0 = none): consumers deduplicate on the id."""
        meta = MessageMeta(key=key, correlation_id=correlation_id, type=type, id=id)
        data = bytes(data)
        rc = self._lib.dll.shmbus_publish(self._ptr, data, len(data), ctypes.byref(meta), timeout_ns)
        if rc in (OK, FULL, TIMEOUT):
            return rc
        self._lib.check(rc)
        return rc

    @property
    def max_payload(self):
        return self._lib.dll.shmbus_publisher_max_payload(self._ptr)


def _message(m, buf):
    return Message(m.sequence, m.timestamp_ns, m.key, m.id, m.correlation_id, m.type, m.attempt,
                   bytes(buf[:m.payload_size]))


class Subscriber(_Handle):
    """A cursor over the channel that sees every message. One thread at a time."""

    _free = "shmbus_subscriber_free"

    def __init__(self, lib, ptr, max_payload):
        super().__init__(lib, ptr)
        self._buf = ctypes.create_string_buffer(max(int(max_payload), 1))

    def _read(self, call):
        m = CMessage()
        while True:
            rc = call(m)
            if rc == OK:
                return _message(m, self._buf)
            if rc == BUFFER_TOO_SMALL:  # cannot happen with a max_payload buffer; handled anyway
                self._buf = ctypes.create_string_buffer(int(m.payload_size))
                continue
            if rc == LAPPED:  # losses were counted (see counters()); read on
                continue
            if rc in (EMPTY, TIMEOUT):
                return None
            self._lib.check(rc)

    def poll(self):
        """The next message, or None if nothing is committed yet. Never blocks."""
        return self._read(lambda m: self._lib.dll.shmbus_subscriber_poll(
            self._ptr, ctypes.byref(m), self._buf, len(self._buf)))

    def poll_wait(self, timeout_ns):
        """The next message, waiting up to timeout_ns; None if none came."""
        return self._read(lambda m: self._lib.dll.shmbus_subscriber_poll_wait(
            self._ptr, ctypes.byref(m), self._buf, len(self._buf), timeout_ns))

    def seek(self, sequence):
        """The next message read is `sequence` (replay)."""
        self._lib.check(self._lib.dll.shmbus_subscriber_seek(self._ptr, sequence))

    @property
    def resumed(self):
        """True if this durable subscriber resumed an existing cursor."""
        return self._lib.dll.shmbus_subscriber_resumed(self._ptr) == 1

    def counters(self):
        c = SubscriberCounters()
        self._lib.check(self._lib.dll.shmbus_subscriber_get_counters(self._ptr, ctypes.byref(c), ctypes.sizeof(c)))
        return c


class Consumer(_Handle):
    """One member of a consumer group. One thread at a time."""

    _free = "shmbus_consumer_free"

    def __init__(self, lib, ptr, max_payload):
        super().__init__(lib, ptr)
        self._buf = ctypes.create_string_buffer(max(int(max_payload), 1))

    def _take(self, call):
        d = CDelivery()
        while True:
            rc = call(d)
            if rc == OK:
                return Delivery(_message(d.message, self._buf), d.attempt, d.deadline_ns, d)
            if rc == BUFFER_TOO_SMALL:
                self._buf = ctypes.create_string_buffer(int(d.message.payload_size))
                continue
            if rc == LAPPED:
                continue
            if rc in (EMPTY, TIMEOUT):
                return None
            self._lib.check(rc)

    def receive(self):
        """The next delivery (a lease to ack), or None. Never blocks."""
        return self._take(lambda d: self._lib.dll.shmbus_consumer_receive(
            self._ptr, ctypes.byref(d), self._buf, len(self._buf)))

    def receive_wait(self, timeout_ns):
        """The next delivery, waiting up to timeout_ns; None if none came."""
        return self._take(lambda d: self._lib.dll.shmbus_consumer_receive_wait(
            self._ptr, ctypes.byref(d), self._buf, len(self._buf), timeout_ns))

    def ack(self, delivery):
        """OK, or LEASE_LOST (the lease had expired: the work may be done twice)."""
        return self._lib.dll.shmbus_consumer_ack(self._ptr, ctypes.byref(delivery.token))

    def nack(self, delivery, delay_ns=0):
        """Gives the message back, due again after delay_ns. OK or LEASE_LOST."""
        return self._lib.dll.shmbus_consumer_nack(self._ptr, ctypes.byref(delivery.token), delay_ns)

    def nack_backoff(self, delivery):
        """Gives the message back, due after the group's backoff. OK or LEASE_LOST."""
        return self._lib.dll.shmbus_consumer_nack_backoff(self._ptr, ctypes.byref(delivery.token))

    def extend(self, delivery, visibility_ns):
        """Extends the lease (updates delivery). OK or LEASE_LOST."""
        rc = self._lib.dll.shmbus_consumer_extend(self._ptr, ctypes.byref(delivery.token), visibility_ns)
        delivery.deadline_ns = delivery.token.deadline_ns
        return rc

    def dead_letter(self, delivery):
        """Sends the message to the group's DLQ now. OK, LEASE_LOST or DLQ_UNAVAILABLE."""
        return self._lib.dll.shmbus_consumer_dead_letter(self._ptr, ctypes.byref(delivery.token))
