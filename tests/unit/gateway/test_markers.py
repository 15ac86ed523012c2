"""An answer's [n] markers: the passages they cite, and numbers that point at none."""

from __future__ import annotations

from ragplane.gateway.markers import MarkerCheck, check_markers, marker_numbers


def test_markers_in_every_form_the_models_write():
    answer = "Run `kctl rollback` [1]. Check the dashboard [2, 3][1]; page on-call [3; 2]."
    assert marker_numbers(answer) == [1, 2, 3]


def test_numbers_past_the_passages_are_invalid():
    answer = "Roll back [2]. The freeze starts Friday [4], see [0] and [2]."
    assert check_markers(answer, passages=3) == MarkerCheck(cited=(2,), invalid=(4, 0))


def test_brackets_that_are_no_markers_are_ignored():
    answer = "Use `arr[i]`, a range [1-3], a version [1.5] or a link [docs](x) - [ 2 ] counts."
    assert check_markers(answer, passages=3) == MarkerCheck(cited=(2,))
    assert check_markers("I don't know.", passages=3) == MarkerCheck()
