"""The shared queue's verbs (stores/base.py), run against every store that has one.

Each verb is atomic; these tests pin what a manager relies on: claim order, leases,
reaping, release, cross-manager cancel and the finished notices."""

import pickle
import threading
import time

from test_store_contract import make_store  # noqa: F401  (the fixture: every store)

from jobengine import Query, State
from jobengine.records import QueueEntry

NOW = 1_700_000_000 * 10**9
LEASE = NOW + 30 * 10**9
MS = 10**6  # offsets in ms: Redis compares times as doubles (256 ns steps today)


def entry(uuid, priority=0, due=NOW, kind="k", origin="producer", payload=b"J[[1],{}]", **kw):
    return QueueEntry(uuid, kind, priority, due, payload=payload, origin=origin,
                      created_ns=due, options={"r": 2, "t": 1.5, "b": None}, **kw)  # fmt: skip


def row(uuid, state=State.SCHEDULED, kind="k", outcome=None):
    return (uuid, kind, int(state), 0, 0, NOW, NOW, None,
            NOW if int(state) >= int(State.COMPLETED) else None, outcome)  # fmt: skip


def test_enqueue_then_claim_in_priority_due_fifo_order(make_store):
    s = make_store()
    entries = [entry("low"), entry("high", priority=5), entry("early", due=NOW - 10),
               entry("fifo-1"), entry("fifo-2"), entry("later", due=NOW + 10**9)]  # fmt: skip
    assert s.enqueue(entries) == 6
    assert s.queue_length() == 6
    got = s.claim("A", 10, NOW, LEASE)
    assert [e.uuid for e in got] == ["high", "early", "low", "fifo-1", "fifo-2"]
    e = got[0]
    assert (e.kind, e.priority, e.payload, e.owner, e.origin) == ("k", 5, b"J[[1],{}]", "A",
                                                                  "producer")  # fmt: skip
    assert e.options == {"r": 2, "t": 1.5, "b": None}
    assert not e.reaped and not e.canceled
    assert s.claim("A", 10, NOW, LEASE) == []  # all taken; "later" is not due yet
    assert [e.uuid for e in s.claim("B", 10, NOW + 10**9, LEASE)] == ["later"]


def test_claim_takes_at_most_limit(make_store):
    s = make_store()
    s.enqueue([entry(f"u{i}") for i in range(10)])
    assert len(s.claim("A", 3, NOW, LEASE)) == 3
    assert len(s.claim("B", 0, NOW, LEASE)) == 0
    assert len(s.claim("B", 100, NOW, LEASE)) == 7


def created(*uuids):
    return [(u, "k", int(State.CREATED), NOW, 0, None, 0, None) for u in uuids]


def test_enqueue_skips_known_uuids_with_their_records(make_store):
    s = make_store()
    first = [entry("a"), entry("b")]
    assert s.enqueue(first, [row("a"), row("b")], created("a", "b")) == 2
    # a retried call: nothing doubles, the new one goes in
    assert s.enqueue([entry("a"), entry("c")], [row("a"), row("c")], created("a", "c")) == 1
    assert s.queue_length() == 3
    assert len(s.lookup_history("a")) == 1
    assert {r.uuid for r in s.lookup_instances(Query())} == {"a", "b", "c"}
    # an instance the store knows as finished is not queued again
    s.write_batch([row("d", State.COMPLETED, outcome=None)], [], [])
    assert s.enqueue([entry("d")]) == 0


def test_a_lapsed_lease_is_reaped_and_claimed_again(make_store):
    s = make_store()
    s.enqueue([entry("a"), entry("b")])
    assert len(s.claim("A", 10, NOW, NOW + 10 * MS)) == 2
    assert s.claim("B", 10, NOW + 5 * MS, LEASE) == []  # A's lease holds
    got = s.claim("B", 10, NOW + 11 * MS, LEASE)  # A's lapsed
    assert sorted(e.uuid for e in got) == ["a", "b"]
    assert all(e.reaped and e.owner == "B" for e in got)


def test_claim_and_renew_extend_every_claim_of_the_owner(make_store):
    s = make_store()
    s.enqueue([entry("a"), entry("b")])
    s.claim("A", 1, NOW, NOW + 10 * MS)
    s.claim("A", 1, NOW, NOW + 100 * MS)  # the first one's lease goes to NOW + 100 too
    assert s.claim("B", 10, NOW + 50 * MS, LEASE) == []
    assert s.renew_claims("A", NOW + 1000 * MS) == 2
    assert s.claim("B", 10, NOW + 500 * MS, LEASE) == []
    assert len(s.claim("B", 10, NOW + 1001 * MS, LEASE)) == 2


def test_reap_makes_lapsed_claims_claimable(make_store):
    s = make_store()
    s.enqueue([entry("a")])
    s.claim("A", 1, NOW, NOW + 10 * MS)
    assert s.reap(NOW + 5 * MS) == []
    assert s.reap(NOW + 11 * MS) == ["a"]
    got = s.claim("B", 1, NOW + 12 * MS, LEASE)
    assert [e.uuid for e in got] == ["a"] and got[0].reaped


def test_release_gives_back_unstarted_claims_at_once(make_store):
    s = make_store()
    s.enqueue([entry("a"), entry("b"), entry("c", priority=1)])
    s.claim("A", 3, NOW, LEASE)
    assert s.release("A", ["a", "zzz"]) == 1
    got = s.claim("B", 10, NOW, LEASE)
    assert [e.uuid for e in got] == ["a"] and not got[0].reaped
    assert s.release("A") == 2
    assert [e.uuid for e in s.claim("B", 10, NOW, LEASE)] == ["c", "b"]  # order holds
    assert s.release("nobody") == 0


def test_finish_removes_and_notifies_the_origin(make_store):
    s = make_store()
    s.enqueue([entry("a"), entry("b"), entry("mine", origin="A")], [row("a"), row("b")],
              created("a", "b"))  # fmt: skip
    s.claim("A", 3, NOW, LEASE)
    s.finish(["b", "mine"])  # "mine" was enqueued by its owner: no notice
    assert s.queue_length() == 1
    # a final record written by the owner finishes its entry in the same step
    s.write_batch([row("a", State.COMPLETED, outcome=("r", pickle.dumps(42)))], [], [])
    assert s.queue_length() == 0
    done = s.take_finished("producer")
    assert sorted(r.uuid for r in done) == ["a", "b"]
    a = next(r for r in done if r.uuid == "a")
    assert a.state == State.COMPLETED and a.result() == 42
    assert s.take_finished("producer") == []  # each notice once
    assert s.take_finished("A") == []


def test_take_finished_honours_its_limit(make_store):
    s = make_store()
    uuids = [f"u{i}" for i in range(5)]
    s.enqueue([entry(u) for u in uuids], [row(u) for u in uuids], created(*uuids))
    s.claim("A", 5, NOW, LEASE)
    s.write_batch([row(f"u{i}", State.COMPLETED) for i in range(5)], [], [])
    assert len(s.take_finished("producer", limit=2)) == 2
    assert len(s.take_finished("producer", limit=10)) == 3


def test_cancel_takes_unclaimed_and_flags_claimed_ones_once(make_store):
    s = make_store()
    s.enqueue([entry("queued"), entry("running"), entry("other", kind="x"),
               entry("future", due=NOW + 10**12)])  # fmt: skip
    s.claim("B", 1, NOW, LEASE)  # B holds "queued" (first enqueued)
    taken, flagged = s.cancel_queued(Query(kind="k"), "A", LEASE)
    assert sorted(e.uuid for e in taken) == ["future", "running"]
    assert all(e.owner == "A" and e.canceled for e in taken)
    assert flagged == ["queued"]
    assert s.cancel_requests("B") == ["queued"]
    assert s.cancel_requests("B") == []  # once
    assert s.cancel_queued(Query(kind="k"), "A", LEASE) == ([], [])  # nothing left to do
    assert [e.uuid for e in s.claim("C", 10, NOW, LEASE)] == ["other"]


def test_cancel_by_uuid_and_by_state(make_store):
    s = make_store()
    s.enqueue([entry("a"), entry("b")])
    assert s.cancel_queued(Query(state=State.COMPLETED), "A", LEASE) == ([], [])
    # an entry may be SCHEDULED or (claimed) PROCESSING: either filter reaches it
    taken, _ = s.cancel_queued(Query(uuid="a", state=State.PROCESSING), "A", LEASE)
    assert [e.uuid for e in taken] == ["a"]
    taken, flagged = s.cancel_queued(Query(uuid="b"), "A", LEASE)
    assert [e.uuid for e in taken] == ["b"] and flagged == []


def test_a_cancel_flag_survives_the_owner_dying(make_store):
    s = make_store()
    s.enqueue([entry("a")])
    s.claim("B", 1, NOW, NOW + 10 * MS)
    s.cancel_queued(Query(uuid="a"), "A", LEASE)
    got = s.claim("C", 1, NOW + 11 * MS, LEASE)
    assert [e.uuid for e in got] == ["a"] and got[0].canceled and got[0].reaped


def test_entries_carry_executor_and_target(make_store):
    s = make_store()
    blob = bytes(range(256))  # not text: must survive every store
    s.enqueue([entry("a", target="mod:fn"), entry("b", executor=blob, payload=b"P" + blob)])
    got = {e.uuid: e for e in s.claim("A", 2, NOW, LEASE)}
    assert got["a"].target == "mod:fn" and got["a"].executor is None
    assert got["b"].executor == blob and got["b"].payload == b"P" + blob


def test_two_claimers_never_share_an_entry(make_store):
    first = make_store()
    second = make_store()  # its own connection
    first.enqueue([entry(f"u{i:04d}") for i in range(400)])
    seen: dict[str, list[str]] = {"A": [], "B": []}

    def run(store, owner):
        while got := store.claim(owner, 7, NOW, LEASE):
            seen[owner] += [e.uuid for e in got]

    threads = [threading.Thread(target=run, args=(st, o))
               for st, o in ((first, "A"), (second, "B"))]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    everything = seen["A"] + seen["B"]
    assert len(everything) == 400 and len(set(everything)) == 400


def test_clear_empties_the_queue(make_store):
    s = make_store()
    s.enqueue([entry("a")])
    s.clear()
    assert s.queue_length() == 0
    assert s.claim("A", 10, time.time_ns(), LEASE) == []
