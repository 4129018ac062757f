"""Progress: which rejections move a follower's next index back, and the in-flight window."""

from __future__ import annotations

from pgraft.raft.progress import Progress
from pgraft.raft.types import PROBE, REPLICATE


def _replicating(match: int, sent_up_to: int) -> Progress:
    pr = Progress(match + 1, 8)
    pr.match = match
    pr.become_replicate()
    for last in range(match + 1, sent_up_to + 1):
        pr.sent_entries(1, last)
    return pr


def test_replicate_ignores_a_rejection_below_the_match_or_beyond_what_it_sent() -> None:
    pr = _replicating(3, 6)  # sent 4..6: AppendEntries with prev 3, 4, 5
    assert pr.next == 7
    # beyond the stream: the commit announced after a probe, overtaken by the probe's answer
    assert not pr.maybe_decr_to(7, 3) and not pr.maybe_decr_to(12, 3)
    assert not pr.maybe_decr_to(3, 0)  # below the match: an old one
    assert (pr.state, pr.next, pr.in_flight()) == (REPLICATE, 7, 3)
    assert pr.maybe_decr_to(5, 4)  # one this stream sent: back to after the match
    assert pr.next == 4


def test_probe_takes_only_the_rejection_of_its_own_prev() -> None:
    pr = Progress(1, 8)
    pr.sent_entries(3, 3)  # a probe with entries 1..3 (prev 0)
    assert pr.state == PROBE and pr.probe_sent and pr.probe_last == 3
    assert not pr.maybe_decr_to(3, 0)  # the commit sent after the probe: stale
    assert pr.probe_sent
    assert pr.maybe_decr_to(0, 0)  # the probe's own rejection
    assert not pr.probe_sent and pr.next == 1


def test_acknowledgements_free_the_window_in_order_and_pausing_follows_it() -> None:
    pr = _replicating(0, 0)
    pr.max_inflight = 100
    for last in range(1, 101):  # 100 AppendEntries of one entry each: the window is full
        pr.sent_entries(1, last)
    assert pr.in_flight() == 100 and pr.is_paused()
    assert pr.maybe_update(70)  # frees 1..70: the acknowledged prefix is dropped (>= 64)
    assert pr.in_flight() == 30 and not pr.is_paused() and len(pr.inflight) == 30
    assert not pr.maybe_update(70) and pr.in_flight() == 30  # a duplicate frees nothing
    assert pr.maybe_update(75)  # frees 71..75, kept in the list until more are freed
    assert pr.in_flight() == 25 and len(pr.inflight) == 30
    for last in range(101, 176):
        pr.sent_entries(1, last)
    assert pr.in_flight() == 100 and pr.is_paused()
    assert pr.maybe_update(175)  # everything: the list starts over
    assert pr.in_flight() == 0 and pr.inflight == []
    pr.become_probe()
    assert pr.in_flight() == 0 and pr.next == 176
