"""The KPI set's steer/confirm split: by board, deterministic, every type in both parts, kept as data."""

from __future__ import annotations

import pytest

from aoi_pipeline.core.kpi_split import (
    BOARD_HASH_SOURCE,
    CONFIRM_SET_SOURCE,
    KpiSplit,
    board_hash,
    board_of,
    confirm_set_split,
    hash_split,
    split_rows,
    whole_set_split,
)
from aoi_pipeline.errors import DatasetError, StateError

TYPES = ("open", "short", "spur", "pin_hole")


def kpi_rows(boards: int = 24) -> list[dict[str, str]]:
    """Per board: two PASS tiles and one defect; board i carries type i % 4, so each type is on 6 boards."""
    rows = []
    for index in range(boards):
        board = f"b{index:05d}"
        for tile, label in (("T00", "PASS"), ("T01", "PASS"), ("T02", TYPES[index % len(TYPES)])):
            rows.append(
                {"input_path": f"{board}/test", "golden_path": f"{board}/golden", "label": label, "object_name": tile}
            )
    return rows


def types_in(rows, boards) -> set[str]:
    return {row["label"] for row in rows if board_of(row) in boards and row["label"] != "PASS"}


def test_the_board_is_the_boardname_column_else_the_first_folder_under_the_image_root():
    assert board_of({"boardname": "b42", "input_path": "x/test"}) == "b42"
    assert board_of({"input_path": "images/b7/test"}) == "b7"
    assert board_of({"input_path": "./b8/test"}) == "b8"


def test_the_hash_split_puts_no_board_in_both_parts_and_every_type_in_each():
    rows = kpi_rows()
    split = hash_split(rows)
    assert split.source == BOARD_HASH_SOURCE
    assert not set(split.steer_boards) & set(split.confirm_boards)
    assert set(split.steer_boards) | set(split.confirm_boards) == {board_of(row) for row in rows}
    assert types_in(rows, split.steer_boards) == set(TYPES)
    assert types_in(rows, split.confirm_boards) == set(TYPES)


def test_the_hash_split_is_the_same_whatever_the_row_order():
    rows = kpi_rows()
    assert hash_split(rows) == hash_split(list(reversed(rows)))


def test_the_split_is_repaired_when_the_hash_leaves_a_type_on_one_side():
    rows = kpi_rows()
    # Only two boards carry "copper": whatever their hashes, one must end up in each part.
    rows[2]["label"], rows[5]["label"] = "copper", "copper"
    split = hash_split(rows)
    copper = {board_of(rows[2]), board_of(rows[5])}
    assert copper & set(split.steer_boards) and copper & set(split.confirm_boards)


def test_a_type_on_a_single_board_is_named_not_forced():
    rows = kpi_rows()
    rows[2]["label"] = "copper"
    split = hash_split(rows)
    assert split.single_board_types == ("copper",)
    assert types_in(rows, split.steer_boards) >= set(TYPES)
    assert types_in(rows, split.confirm_boards) >= set(TYPES)


def test_a_kpi_set_too_small_to_split_is_refused_naming_it():
    rows = kpi_rows(1)
    with pytest.raises(DatasetError) as raised:
        hash_split(rows, where="kpi/testing_set.csv")
    assert "kpi/testing_set.csv" in str(raised.value) and "confirm_set.csv" in str(raised.value)


def test_the_confirm_share_moves_boards_towards_the_confirm_part():
    rows = kpi_rows(60)
    small, large = hash_split(rows, confirm_share=0.2), hash_split(rows, confirm_share=0.8)
    assert len(small.confirm_boards) < len(large.confirm_boards)
    assert all(board_hash(board) < 0.2 for board in small.confirm_boards if board_hash(board) < 0.2)


def test_split_rows_cuts_scored_rows_by_board():
    rows = kpi_rows()
    split = hash_split(rows)
    steer, confirm = split_rows(rows, split)
    assert len(steer) + len(confirm) == len(rows)
    assert {board_of(row) for row in confirm} == set(split.confirm_boards)


def test_a_workspace_confirm_set_names_the_confirm_boards():
    rows = kpi_rows()
    confirm_rows = [row for row in rows if row["input_path"] < "b00012"]
    split = confirm_set_split(rows, confirm_rows, where="kpi/confirm_set.csv")
    assert split.source == CONFIRM_SET_SOURCE
    assert set(split.confirm_boards) == {board_of(row) for row in confirm_rows}
    assert not set(split.steer_boards) & set(split.confirm_boards)


def test_a_confirm_set_leaving_the_steer_part_without_a_type_is_refused():
    rows = kpi_rows()
    confirm_rows = [row for row in rows if row["label"] in ("spur", "PASS") and row["input_path"] < "b00012"]
    confirm_rows += [row for row in rows if row["label"] == "spur"]
    with pytest.raises(DatasetError) as raised:
        confirm_set_split(rows, confirm_rows, where="kpi/confirm_set.csv")
    assert "spur" in str(raised.value)


def test_the_split_round_trips_through_the_state_and_refuses_an_overlap():
    split = hash_split(kpi_rows())
    assert KpiSplit.from_dict(split.to_dict()) == split
    broken = {**split.to_dict(), "steer_boards": [*split.steer_boards, split.confirm_boards[0]]}
    with pytest.raises(StateError):
        KpiSplit.from_dict(broken)


def test_the_whole_set_split_confirms_and_steers_on_every_row():
    rows = kpi_rows(4)
    steer, confirm = split_rows(rows, whole_set_split())
    assert steer == rows and confirm == rows
