#!/usr/bin/env python3
"""etcd v3 compatibility through a Python gRPC client: the `etcd3` package's
idioms, as an application would use them, against one member.

    python3 test_etcd3.py HOST PORT [NODES]

NODES (default 1) is how many members `members` must list. Plain asserts; the
first failure ends the run with a traceback and exit code 1. Every key lives
under a fresh prefix, so the test may run again on the same cluster.

etcd3 0.12 has no stubs for etcd's Lock and Election services (its lock is a
recipe over KV and Watch), so the last section calls those services through
grpcio directly, with their few messages encoded by hand (see `Pb`).
Install the pinned versions with `pip install -r requirements.txt`.
"""

import faulthandler
import sys
import threading
import time
import uuid

import etcd3
import grpc

HOST, PORT = sys.argv[1], int(sys.argv[2])
NODES = int(sys.argv[3]) if len(sys.argv) > 3 else 1
P = "/compat-py-%s/" % uuid.uuid4().hex[:8]  # this run's key prefix
WAIT = 10  # seconds for anything that should happen promptly

# A test that hangs (a watch that never fires, a lock never granted) fails
# instead, with every thread's stack.
faulthandler.dump_traceback_later(240, exit=True)

client = etcd3.client(HOST, PORT, timeout=WAIT)


def section(name):
    print("==== " + name, flush=True)


def wait_for(what, pred, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.05)


def test_kv():
    section("put / get / delete")
    k = P + "kv/a"
    client.put(k, "1")
    value, meta = client.get(k)
    assert value == b"1", value
    assert meta.key == k.encode(), meta.key
    assert meta.version == 1 and meta.create_revision == meta.mod_revision, meta
    first = meta.mod_revision
    prev = client.put(k, "2", prev_kv=True)
    assert prev.prev_kv.value == b"1", prev
    value, meta = client.get(k)
    assert value == b"2" and meta.version == 2, (value, meta)
    assert meta.create_revision == first and meta.mod_revision > first, meta
    assert client.get(P + "kv/missing") == (None, None)

    client.put(P + "kv/b", "2")
    client.put(P + "kv/c", "3")
    got = [(m.key.decode(), v.decode()) for v, m in client.get_prefix(P + "kv/")]
    assert got == [(P + "kv/a", "2"), (P + "kv/b", "2"), (P + "kv/c", "3")], got
    got = [m.key.decode() for _, m in client.get_range(P + "kv/a", P + "kv/c")]
    assert got == [P + "kv/a", P + "kv/b"], got
    got = [m.key.decode() for _, m in client.get_prefix(P + "kv/", sort_order="descend")]
    assert got == [P + "kv/c", P + "kv/b", P + "kv/a"], got

    assert client.replace(P + "kv/b", "2", "22") is True
    assert client.replace(P + "kv/b", "2", "222") is False
    assert client.get(P + "kv/b")[0] == b"22"
    assert client.put_if_not_exists(P + "kv/d", "4") is True
    assert client.put_if_not_exists(P + "kv/d", "5") is False
    assert client.get(P + "kv/d")[0] == b"4"

    assert client.delete(P + "kv/a") is True
    assert client.delete(P + "kv/a") is False
    assert client.delete_prefix(P + "kv/").deleted == 3
    assert list(client.get_prefix(P + "kv/")) == []


def test_transactions():
    section("transactions")
    k = P + "txn/k"
    client.put(k, "v")
    _, meta = client.get(k)
    t = client.transactions
    ok, responses = client.transaction(
        compare=[t.value(k) == "v", t.version(k) > 0,
                 t.create(k) == meta.create_revision, t.mod(k) == meta.mod_revision],
        success=[t.put(P + "txn/branch", "success"), t.get(k)],
        failure=[t.put(P + "txn/branch", "failure")],
    )
    assert ok is True, responses
    assert client.get(P + "txn/branch")[0] == b"success"
    # A get in a transaction answers (value, metadata) pairs.
    assert [v for v, _ in responses[1]] == [b"v"], responses

    for compare in ([t.value(k) == "other"], [t.version(k) > 1],
                    [t.mod(k) > meta.mod_revision], [t.create(P + "txn/none") > 0]):
        ok, responses = client.transaction(
            compare=compare,
            success=[t.put(P + "txn/branch", "success")],
            failure=[t.put(P + "txn/branch", "failure"), t.get(k)],
        )
        assert ok is False, compare
        assert client.get(P + "txn/branch")[0] == b"failure", compare
        assert [v for v, _ in responses[1]] == [b"v"], responses
        client.put(P + "txn/branch", "reset")

    # A delete in a transaction, and its count.
    ok, responses = client.transaction(
        compare=[t.version(k) == 1], success=[t.delete(k)], failure=[])
    assert ok is True and responses[0].response_delete_range.deleted == 1, responses
    assert client.get(k) == (None, None)


def test_watch_callback():
    section("watch callbacks")
    k = P + "watch/cb"
    got, fired = [], threading.Event()

    def callback(response):
        # Called on the client's watch thread with a WatchResponse, or with
        # an exception if the watch broke.
        got.append(response)
        fired.set()

    watch_id = client.add_watch_callback(k, callback)
    client.put(k, "1")
    assert fired.wait(WAIT), "no watch event within %d s" % WAIT
    assert not isinstance(got[0], Exception), got[0]
    event = got[0].events[0]
    assert isinstance(event, etcd3.events.PutEvent), event
    assert (event.key, event.value) == (k.encode(), b"1"), event
    put_rev = event.mod_revision
    client.cancel_watch(watch_id)

    # A prefix callback sees puts and deletes, in order.
    events, done = [], threading.Event()

    def collect(response):
        assert not isinstance(response, Exception), response
        events.extend(response.events)
        if len(events) >= 3:
            done.set()

    watch_id = client.add_watch_prefix_callback(P + "watch/p/", collect)
    client.put(P + "watch/p/x", "1")
    client.put(P + "watch/other", "not under the prefix")
    client.put(P + "watch/p/y", "2")
    client.delete(P + "watch/p/x")
    assert done.wait(WAIT), "only %d of 3 events" % len(events)
    client.cancel_watch(watch_id)
    got = [(type(e).__name__, e.key.decode()) for e in events]
    assert got == [("PutEvent", P + "watch/p/x"), ("PutEvent", P + "watch/p/y"),
                   ("DeleteEvent", P + "watch/p/x")], got

    # start_revision replays history: the first put above, seen again.
    replay, done = [], threading.Event()

    def on_replay(response):
        replay.extend(response.events)
        done.set()

    watch_id = client.add_watch_callback(k, on_replay, start_revision=put_rev)
    assert done.wait(WAIT), "no replayed event"
    client.cancel_watch(watch_id)
    assert (replay[0].value, replay[0].mod_revision) == (b"1", put_rev), replay


def test_watch_iterator():
    section("watch_prefix iterator")
    events_iterator, cancel = client.watch_prefix(P + "iter/")
    got = []

    def consume():
        # The iterator blocks until the next event: read it on a thread.
        for event in events_iterator:
            got.append(event)
            if len(got) == 3:
                cancel()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    client.put(P + "iter/a", "1")
    client.put(P + "iter/a", "2")
    client.delete(P + "iter/a")
    reader.join(WAIT)
    assert not reader.is_alive(), "only %d of 3 events" % len(got)
    got = [(type(e).__name__, e.value) for e in got]
    assert got == [("PutEvent", b"1"), ("PutEvent", b"2"), ("DeleteEvent", b"")], got


def test_leases():
    section("leases")
    lease = client.lease(60)
    assert lease.id > 0 and lease.ttl == 60, (lease.id, lease.ttl)
    client.put(P + "lease/a", "1", lease=lease)
    client.put(P + "lease/b", "2", lease=lease.id)
    assert 0 < lease.remaining_ttl <= 60, lease.remaining_ttl
    assert lease.granted_ttl == 60
    assert sorted(lease.keys) == [(P + "lease/a").encode(), (P + "lease/b").encode()]
    refreshed = lease.refresh()
    assert [r.TTL for r in refreshed] == [60], refreshed
    _, meta = client.get(P + "lease/a")
    assert meta.lease_id == lease.id, meta.lease_id
    lease.revoke()
    assert list(client.get_prefix(P + "lease/")) == []
    assert lease.remaining_ttl == -1  # etcd's answer for a lease that is gone

    # A lease that is not refreshed expires, and its key with it.
    short = client.lease(2)
    client.put(P + "lease/short", "1", lease=short)
    wait_for("the key of a 2 s lease to vanish",
             lambda: client.get(P + "lease/short") == (None, None), timeout=20)


def test_locks():
    section("locks")
    name = P.strip("/") + "-lock"
    first = client.lock(name, ttl=5)
    assert first.acquire(timeout=WAIT) is True
    assert first.is_acquired()
    # Another holder cannot take it meanwhile...
    other = client.lock(name, ttl=5)
    assert other.acquire(timeout=1) is False
    assert not other.is_acquired()
    # ...and gets it once it is released.
    order, acquired = [], threading.Event()

    def second():
        assert other.acquire(timeout=WAIT)
        order.append("second acquired")
        acquired.set()

    waiter = threading.Thread(target=second, daemon=True)
    waiter.start()
    time.sleep(1)
    order.append("first releasing")
    assert first.release() is True
    assert acquired.wait(WAIT), "the second lock was not granted"
    assert order == ["first releasing", "second acquired"], order
    assert other.release() is True
    # The context manager form, and the lease ending a lock nobody releases.
    with client.lock(name, ttl=5) as held:
        assert held.is_acquired()
    abandoned = client.lock(name, ttl=2)
    assert abandoned.acquire(timeout=WAIT)
    late = client.lock(name, ttl=5)
    assert late.acquire(timeout=20), "the expired lease did not free the lock"
    late.release()


def test_cluster():
    section("members / status")
    members = list(client.members)
    assert len(members) == NODES, [str(m) for m in members]
    for m in members:
        assert m.id and m.name and m.client_urls and m.peer_urls, str(m)
    status = client.status()
    # etcd3 finds the leader among the members by the id Status reports.
    assert status.leader is not None, "Status.leader is not a member id"
    assert status.leader.id in [m.id for m in members]
    assert status.version and status.raft_index > 0 and status.raft_term > 0, vars(status)
    assert status.db_size > 0


class Pb:
    """Just enough protobuf for etcd's v3lockpb and v3electionpb messages:
    varint (int64) and length-delimited (bytes, messages) fields."""

    @staticmethod
    def varint(n):
        n &= (1 << 64) - 1  # negative int64s are ten bytes
        out = bytearray()
        while True:
            b, n = n & 0x7F, n >> 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)

    @classmethod
    def encode(cls, *fields):
        """fields: (number, value); int as varint, bytes/str as bytes."""
        out = b""
        for num, value in fields:
            if isinstance(value, int):
                out += cls.varint(num << 3) + cls.varint(value)
            else:
                value = value.encode() if isinstance(value, str) else value
                out += cls.varint(num << 3 | 2) + cls.varint(len(value)) + value
        return out

    @staticmethod
    def decode(data):
        """{number: value}: int for varints, bytes otherwise (last wins)."""
        fields, i = {}, 0
        while i < len(data):
            key, i = Pb._read_varint(data, i)
            num, wire = key >> 3, key & 7
            if wire == 0:
                fields[num], i = Pb._read_varint(data, i)
            elif wire == 2:
                n, i = Pb._read_varint(data, i)
                fields[num], i = data[i:i + n], i + n
            else:
                raise ValueError("unexpected wire type %d" % wire)
        return fields

    @staticmethod
    def _read_varint(data, i):
        n = shift = 0
        while True:
            b = data[i]
            n |= (b & 0x7F) << shift
            i, shift = i + 1, shift + 7
            if not b & 0x80:
                return n, i


def rpc(method, stream=False):
    """A call of etcd's gRPC `method` taking and giving raw message bytes."""
    make = client.channel.unary_stream if stream else client.channel.unary_unary
    return make(method, request_serializer=lambda b: b, response_deserializer=Pb.decode)


def leader_key(campaign_response):
    """The LeaderKey of a CampaignResponse, as (encoded, fields)."""
    raw = campaign_response[2]
    return raw, Pb.decode(raw)


def test_lock_service():
    section("Lock service (v3lockpb.Lock)")
    lock, unlock = rpc("/v3lockpb.Lock/Lock"), rpc("/v3lockpb.Lock/Unlock")
    name = P + "svc-lock"
    first_lease, second_lease = client.lease(30), client.lease(30)
    # LockRequest{name = 1, lease = 2} -> LockResponse{header = 1, key = 2}
    held = lock(Pb.encode((1, name), (2, first_lease.id)), timeout=WAIT)
    key = held[2]
    assert key.startswith(name.encode() + b"/"), key
    assert Pb.decode(held[1])[3] > 0, "no revision in the header"
    # The lock key is a key: it exists while held, on the holder's lease.
    _, meta = client.get(key)
    assert meta is not None and meta.lease_id == first_lease.id, meta

    granted = []
    waiter = threading.Thread(
        target=lambda: granted.append(
            lock(Pb.encode((1, name), (2, second_lease.id)), timeout=3 * WAIT)),
        daemon=True)
    waiter.start()
    time.sleep(1)
    assert not granted, "a second Lock was granted while the first held it"
    unlock(Pb.encode((1, key)), timeout=WAIT)  # UnlockRequest{key = 1}
    waiter.join(WAIT)
    assert granted, "the second Lock was not granted after Unlock"
    assert client.get(key) == (None, None), "Unlock left the key"
    second_key = granted[0][2]
    assert second_key.startswith(name.encode() + b"/") and second_key != key
    # Revoking the holder's lease releases the lock too.
    second_lease.revoke()
    assert client.get(second_key) == (None, None)
    first_lease.revoke()


def test_election_service():
    section("Election service (v3electionpb.Election)")
    campaign = rpc("/v3electionpb.Election/Campaign")
    proclaim = rpc("/v3electionpb.Election/Proclaim")
    leader = rpc("/v3electionpb.Election/Leader")
    resign = rpc("/v3electionpb.Election/Resign")
    observe = rpc("/v3electionpb.Election/Observe", stream=True)
    name = P + "svc-elect"
    lease1, lease2 = client.lease(30), client.lease(30)

    def current_value():
        # LeaderRequest{name = 1} -> LeaderResponse{header = 1, kv = 2}
        return Pb.decode(leader(Pb.encode((1, name)), timeout=WAIT)[2]).get(5, b"")

    # Observe streams the leader's key-value at each change.
    observed = []
    stream = observe(Pb.encode((1, name)), timeout=6 * WAIT)

    def watch_leaders():
        try:
            for response in stream:
                observed.append(Pb.decode(response[2]).get(5, b""))
        except grpc.RpcError:
            pass  # cancelled at the end

    threading.Thread(target=watch_leaders, daemon=True).start()

    # CampaignRequest{name = 1, lease = 2, value = 3}
    # -> CampaignResponse{header = 1, leader = 2: LeaderKey}
    raw1, lk1 = leader_key(campaign(Pb.encode((1, name), (2, lease1.id), (3, "one")), timeout=WAIT))
    # LeaderKey{name = 1, key = 2, rev = 3, lease = 4}
    assert lk1[1] == name.encode() and lk1[2].startswith(name.encode() + b"/"), lk1
    assert lk1[4] == lease1.id and lk1[3] > 0, lk1
    assert current_value() == b"one"
    wait_for("Observe to report the first leader", lambda: b"one" in observed)

    # ProclaimRequest{leader = 1, value = 2}: the leader changes its value.
    proclaim(Pb.encode((1, raw1), (2, "one-again")), timeout=WAIT)
    assert current_value() == b"one-again"

    won = []
    second = threading.Thread(
        target=lambda: won.append(campaign(
            Pb.encode((1, name), (2, lease2.id), (3, "two")), timeout=3 * WAIT)),
        daemon=True)
    second.start()
    time.sleep(1)
    assert not won, "a second candidate won while the first leads"
    resign(Pb.encode((1, raw1)), timeout=WAIT)  # ResignRequest{leader = 1}
    second.join(WAIT)
    assert won, "the second candidate did not win after the first resigned"
    raw2, lk2 = leader_key(won[0])
    assert lk2[2] != lk1[2] and lk2[3] > lk1[3], (lk1, lk2)
    assert current_value() == b"two"

    wait_for("Observe to report the second leader", lambda: b"two" in observed)
    assert observed == [b"one", b"one-again", b"two"], observed
    stream.cancel()
    resign(Pb.encode((1, raw2)), timeout=WAIT)
    lease1.revoke()
    lease2.revoke()


if __name__ == "__main__":
    print("etcd3 %s against %s:%d (%d nodes), prefix %s" % (etcd3.__version__, HOST, PORT, NODES, P))
    for test in (test_kv, test_transactions, test_watch_callback, test_watch_iterator,
                 test_leases, test_locks, test_cluster, test_lock_service,
                 test_election_service):
        test()
    print("all etcd3 checks passed")
