"""The pure core of missed-message recovery (gateway/core/recovery.py): positions, whether history covers a
gap, and the channel state machine that merges history reads with live messages. No sockets, no loop."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.recovery import (
    MAX_REFETCHES,
    MAX_SEQ,
    Channel,
    Stored,
    StreamState,
    epoch_of,
    history_covers,
    position_error,
    user_recovery,
)
from shared.frames import Position


def msg(seq: int, prev: int | None = None) -> Stored:
    return Stored(seq, prev, f"m{seq}".encode(), binary=False)


# -- positions --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("epoch", "seq"), [("abc123", 0), ("Z", MAX_SEQ), ("a" * 32, 17)], ids=["zero", "max", "long-epoch"]
)
def test_a_valid_position(epoch: str, seq: int) -> None:
    assert position_error(epoch, seq) is None


@pytest.mark.parametrize(
    ("epoch", "seq", "words"),
    [
        ("", 1, "epoch"),
        ("a.b", 1, "epoch"),
        ("a" * 33, 1, "epoch"),
        (7, 1, "epoch"),
        ("abc", -1, "seq"),
        ("abc", MAX_SEQ + 1, "seq"),
        ("abc", True, "seq"),
        ("abc", "5", "seq"),
        ("abc", 1.5, "seq"),
    ],
)
def test_a_malformed_position_says_which_part(epoch: object, seq: object, words: str) -> None:
    problem = position_error(epoch, seq)
    assert problem is not None
    assert problem.startswith(words)


def test_an_epoch_is_the_same_on_every_node_and_differs_per_creation_time() -> None:
    created = 1_767_225_600_123_456
    assert epoch_of(created) == epoch_of(created)
    assert epoch_of(created) != epoch_of(created + 1)
    assert position_error(epoch_of(created), 1) is None
    assert epoch_of(0) == "0"


# -- does history cover a gap? ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("after", "first_seq", "found", "limit", "covered"),
    [
        (100, 1, 5, 1000, True),  # nothing removed anywhere
        (100, 101, 5, 1000, True),  # removed up to exactly the position: nothing after it is gone
        (100, 102, 5, 1000, False),  # message 101 (of some channel) aged out: it may have been ours
        (100, 50, 1000, 1000, False),  # the per-channel limit was reached: older ones may be gone
        (100, 50, 999, 1000, True),
        (0, 1, 0, 10, True),  # an empty stream that never lost anything
        (500, 501, 0, 10, True),  # everything aged out, nothing new: the stream's first is 501
    ],
)
def test_history_covers_a_gap_only_when_nothing_after_it_can_have_been_removed(
    after: int, first_seq: int, found: int, limit: int, covered: bool
) -> None:
    state = StreamState("e", first_seq, max(first_seq, after) + found)
    assert history_covers(after, state, found, limit) is covered


# -- a member catching up ------------------------------------------------------------------------------
def test_a_catch_up_sends_history_then_what_arrived_meanwhile_without_duplicates() -> None:
    channel: Channel[str] = Channel(buffer_limit=100)
    channel.begin("c1", "conn1", after=10)
    # Live messages while the read is under way: held.
    assert channel.live(msg(12, prev=11)) == ([], [], [])
    assert channel.live(msg(15, prev=12)) == ([], [], [])
    # The read saw 11 and 12 (its snapshot predates 15).
    replay = channel.fetched("c1", [msg(11), msg(12)])
    assert [m.seq for m in replay] == [11, 12]
    drained = channel.drain("c1")
    assert [m.seq for m in drained.sends] == [15]  # 12 came from the read: not twice
    assert drained.fetch_after is None
    assert drained.gap is None
    # Live now: straight to the member.
    assert channel.live(msg(20, prev=15)) == (["conn1"], [], [])
    assert channel.live(msg(20, prev=15)) == ([], [], [])  # the same again: a duplicate


def test_a_read_older_than_the_member_position_sends_nothing_twice() -> None:
    channel: Channel[str] = Channel(buffer_limit=100)
    channel.begin("c1", "conn1", after=12)
    assert channel.fetched("c1", [msg(11), msg(12), msg(13)]) == [msg(13)]


def test_a_live_message_that_names_a_missing_predecessor_makes_the_member_catch_up() -> None:
    channel: Channel[str] = Channel(buffer_limit=100)
    channel.begin("c1", "conn1", after=0)
    channel.fetched("c1", [])
    channel.drain("c1")
    assert channel.live(msg(3, prev=0)) == (["conn1"], [], [])
    # 7 says the channel's previous message is 5, which never arrived (a republish lost).
    assert channel.live(msg(7, prev=5)) == ([], ["c1"], [])
    assert channel.live(msg(9, prev=7)) == ([], [], [])  # held behind the repair
    assert channel.members["c1"].cursor == 3
    assert [m.seq for m in channel.fetched("c1", [msg(5), msg(7)])] == [5, 7]
    drained = channel.drain("c1")
    assert [m.seq for m in drained.sends] == [9]
    assert channel.members["c1"].live


def test_a_message_the_history_does_not_have_either_is_reported_as_a_gap_after_a_few_reads() -> None:
    channel: Channel[str] = Channel(buffer_limit=100)
    channel.begin("c1", "conn1", after=3)
    channel.live(msg(9, prev=5))  # 5 is gone for good (say its replica lost it)
    for attempt in range(MAX_REFETCHES):
        channel.fetched("c1", [])
        drained = channel.drain("c1")
        assert drained.fetch_after == 3, attempt
        assert drained.sends == []
    channel.fetched("c1", [])
    drained = channel.drain("c1")
    assert drained.fetch_after is None
    assert [m.seq for m in drained.sends] == [9]
    assert drained.gap == (0, 3)  # told before 9 that what follows 3 is not complete
    assert channel.members["c1"].live


def test_members_of_one_channel_keep_their_own_cursors() -> None:
    channel: Channel[str] = Channel(buffer_limit=100)
    channel.begin("old", "conn-old", after=0)
    channel.fetched("old", [msg(1), msg(2)])
    channel.drain("old")
    channel.begin("new", "conn-new", after=2)
    targets, _, _ = channel.live(msg(4, prev=2))
    assert targets == ["conn-old"]  # the new one holds it until its read is in
    assert channel.fetched("new", [msg(4)]) == [msg(4)]
    assert channel.drain("new").sends == []  # 4 came from the read
    assert channel.live(msg(6, prev=4)) == (["conn-old", "conn-new"], [], [])


def test_a_member_that_holds_too_much_while_catching_up_is_reported() -> None:
    channel: Channel[str] = Channel(buffer_limit=2)
    channel.begin("slow", "conn", after=0)
    channel.live(msg(1, prev=0))
    channel.live(msg(2, prev=1))
    assert channel.live(msg(3, prev=2)) == ([], [], ["slow"])


def test_the_periodic_check_moves_quiet_members_forward_and_finds_members_behind() -> None:
    channel: Channel[str] = Channel(buffer_limit=100)
    for conn_id, cursor in (("a", 10), ("b", 4)):
        channel.begin(conn_id, "conn-" + conn_id, after=cursor)
        channel.fetched(conn_id, [])
        channel.drain(conn_id)
    channel.begin("catching", "conn-c", after=0)
    # The channel's last message is 10; the stream had got to 50 in the replica that answered.
    advanced, behind = channel.mark(last=10, upto=50)
    assert advanced == ["conn-a"]
    assert behind == ["b"]
    assert channel.members["a"].cursor == 50
    assert channel.members["catching"].cursor == 0  # not live: left alone
    # A member that already stands further than the check leaves it there.
    assert channel.mark(last=10, upto=40) == ([], ["b"])
    assert channel.restart("b")
    assert not channel.members["b"].live
    assert not channel.restart("b")  # already catching up


def test_a_new_epoch_restarts_every_member() -> None:
    channel: Channel[str] = Channel(buffer_limit=100)
    channel.begin("a", "conn-a", after=100)
    channel.fetched("a", [])
    channel.drain("a")
    generation = channel.members["a"].generation
    assert channel.reset(0) == ["a"]
    member = channel.members["a"]
    assert (member.cursor, member.live, member.generation) == (0, False, generation + 1)


def test_groups_of_members_at_one_cursor_share_a_read() -> None:
    channel: Channel[str] = Channel(buffer_limit=100)
    for conn_id, cursor in (("a", 5), ("b", 5), ("c", 9)):
        channel.begin(conn_id, conn_id, after=cursor)
    assert channel.cursors(["a", "b", "c", "gone"]) == {5: ["a", "b"], 9: ["c"]}


# -- the whole merge, under random interleavings and losses ---------------------------------------------
@st.composite
def histories(draw: st.DrawFn) -> tuple[list[int], int, list[bool], list[int]]:
    """A channel's message sequences (gaps: other channels' messages), the member's start, which live
    republishes are lost, and when (after how many live messages) each history read takes its snapshot."""
    steps = draw(st.lists(st.integers(1, 4), min_size=1, max_size=40))
    seqs: list[int] = []
    seq = 0
    for step in steps:
        seq += step
        seqs.append(seq)
    start = draw(st.sampled_from([0, *seqs]))
    lost = draw(st.lists(st.booleans(), min_size=len(seqs), max_size=len(seqs)))
    snapshots = draw(st.lists(st.integers(0, len(seqs)), min_size=1, max_size=8))
    return seqs, start, lost, snapshots


@given(histories())
@settings(max_examples=300, deadline=None)
def test_every_message_after_the_start_arrives_once_in_order(
    case: tuple[list[int], int, list[bool], list[int]],
) -> None:
    seqs, start, lost, snapshots = case
    prev = dict(zip(seqs, [0, *seqs[:-1]], strict=True))
    channel: Channel[str] = Channel(buffer_limit=10_000)
    channel.begin("c", "conn", after=start)
    got: list[int] = []
    arrived = 0  # live messages published so far (lost or not)
    pending: int | None = start  # a history read the member waits for, after this sequence
    reads = iter(sorted(snapshots))

    def publish_until(count: int) -> None:
        nonlocal arrived, pending
        while arrived < count:
            seq = seqs[arrived]
            arrived += 1
            if lost[arrived - 1]:
                continue
            targets, gaps, _ = channel.live(Stored(seq, prev[seq], b"", False))
            got.extend(seq for _ in targets)
            if gaps:
                pending = channel.members["c"].cursor

    while pending is not None:
        snapshot = max(arrived, next(reads, len(seqs)))  # a read sees at least what was published
        publish_until(snapshot)
        after = pending
        history = [Stored(s, None, b"", False) for s in seqs[:snapshot] if s > after]
        got.extend(m.seq for m in channel.fetched("c", history))
        drained = channel.drain("c")
        assert drained.gap is None  # the history never loses anything here
        got.extend(m.seq for m in drained.sends)
        pending = drained.fetch_after
        if pending is None and arrived < len(seqs):
            publish_until(len(seqs))
            if channel.members["c"].live:
                break
            pending = channel.members["c"].cursor
    # The periodic check catches a loss at the very end (nothing after it to reveal it).
    last = seqs[-1]
    _, behind = channel.mark(last=last, upto=last)
    if behind:
        assert channel.restart("c")
        after = channel.members["c"].cursor
        history = [Stored(s, None, b"", False) for s in seqs if s > after]
        got.extend(m.seq for m in channel.fetched("c", history))
        got.extend(m.seq for m in channel.drain("c").sends)
    assert got == [s for s in seqs if s > start]


# -- the user stream's opt-in ------------------------------------------------------------------------------
def test_recover_user_in_the_query() -> None:
    assert user_recovery({}) == (False, None)
    assert user_recovery({"recover": ["user"]}) == (True, None)
    query = {"recover": ["user"], "user_epoch": ["abc"], "user_seq": ["42"]}
    assert user_recovery(query) == (True, Position("abc", 42))


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({"recover": ["room"]}, "recover must be 'user'"),
        ({"recover": ["user", "user"]}, "recover must be 'user'"),
        ({"user_epoch": ["abc"], "user_seq": ["1"]}, "need recover=user"),
        ({"recover": ["user"], "user_epoch": ["abc"]}, "together"),
        ({"recover": ["user"], "user_epoch": ["abc"], "user_seq": ["-1"]}, "seq must be"),
        ({"recover": ["user"], "user_epoch": ["abc"], "user_seq": ["99999999999999999999"]}, "seq must be"),
        ({"recover": ["user"], "user_epoch": ["a.b"], "user_seq": ["1"]}, "epoch must be"),
    ],
)
def test_a_bad_recover_query_says_what_is_wrong(query: dict[str, list[str]], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        user_recovery(query)
