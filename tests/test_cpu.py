import os

import jax
import pytest

from companion import cpu


def test_threads_counts_the_cores_this_process_may_use():
    assert cpu.threads() == len(os.sched_getaffinity(0)) >= 1


@pytest.mark.parametrize(
    ("threads", "batch", "expected"),
    [
        (2, 64, 2),  # two groups of 32
        (2, 32, 1),  # two groups of 16 would be under min_rows
        (2, 48, 1),  # 48 // 32 = 1
        (2, 65, 1),  # odd: nothing but 1 divides it into at most 2
        (4, 128, 4),
        (4, 96, 3),  # at most 96 // 32 = 3 groups; 3 divides 96
        (4, 100, 2),  # at most 3 groups, and 3 does not divide 100
        (1, 1024, 1),
        (64, 1024, 32),  # every group keeps 32 rows
    ],
)
def test_batch_groups_one_per_core_dividing_the_batch(
    monkeypatch, threads, batch, expected
):
    monkeypatch.setattr(cpu, "threads", lambda: threads)
    assert cpu.batch_groups(batch) == expected
    assert batch % expected == 0


def test_batch_groups_min_rows(monkeypatch):
    monkeypatch.setattr(cpu, "threads", lambda: 8)
    assert cpu.batch_groups(64, min_rows=8) == 8
    assert cpu.batch_groups(64, min_rows=64) == 1


def test_one_group_on_another_backend(monkeypatch):
    monkeypatch.setattr(cpu, "threads", lambda: 8)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert cpu.batch_groups(1024) == 1


@pytest.mark.parametrize(("batch", "min_rows"), [(0, 32), (-64, 32), (64, 0)])
def test_batch_groups_refuses_non_positive_sizes(batch, min_rows):
    with pytest.raises(ValueError, match="must be positive"):
        cpu.batch_groups(batch, min_rows=min_rows)


@pytest.mark.parametrize(("batch", "groups"), [(64, 1), (64, 2), (96, 3), (8, 8)])
def test_row_groups_cover_the_batch_once_in_order(batch, groups):
    parts = cpu.row_groups(batch, groups)
    rows = [i for part in parts for i in range(batch)[part]]
    assert rows == list(range(batch))
    assert {part.stop - part.start for part in parts} == {batch // groups}


@pytest.mark.parametrize(("batch", "groups"), [(64, 0), (64, -2), (64, 3), (8, 16)])
def test_row_groups_refuses_what_does_not_divide_the_batch(batch, groups):
    match = f"positive divisor of the batch size {batch}; got {groups}"
    with pytest.raises(ValueError, match=match):
        cpu.row_groups(batch, groups)
