"""The HA campaign's check that acknowledgements never go back to an older timeline."""

from __future__ import annotations

from chaos_ha import Ack, check_timelines


def test_acknowledgements_that_move_forward_are_fine() -> None:
    acks = [Ack(1.0, 1, 1, 1), Ack(2.0, 2, 1, 1), Ack(5.0, 3, 2, 2), Ack(9.0, 4, 3, 1)]
    assert check_timelines(acks) == []


def test_a_deposed_primary_acknowledging_after_the_new_one_is_two_primaries() -> None:
    acks = [Ack(1.0, 1, 1, 1), Ack(5.0, 2, 2, 2), Ack(5.2, 3, 1, 1), Ack(6.0, 4, 2, 2)]
    found = check_timelines(acks)
    assert [a.kind for a in found] == ["two-primaries"]
    assert "row 3" in found[0].detail and "node 1" in found[0].detail
