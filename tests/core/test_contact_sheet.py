"""Tests of the contact sheet: PNG size from the layout, both sides drawn in place, missing images as grey boxes."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from aoi_pipeline.core.contact_sheet import CAPTION_HEIGHT, PAD, PLACEHOLDER_FILL, contact_sheet

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 160, 0)


def solid(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 40), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).convert(mode).save(path)
    return path


def cell_origin(number: int, *, thumb: int, columns: int) -> tuple[int, int]:
    """Top-left corner of a cell, from the documented layout: PAD|test|PAD|golden|PAD, then the caption."""
    width, height = 2 * thumb + 3 * PAD, thumb + CAPTION_HEIGHT + 3 * PAD
    return (number % columns) * width, (number // columns) * height


def test_sheet_size_follows_the_layout_for_a_partial_last_row(tmp_path: Path) -> None:
    test, golden = solid(tmp_path / "t.png", RED), solid(tmp_path / "g.png", BLUE)
    out = contact_sheet([(test, golden, "open 0.5")] * 5, tmp_path / "sheet.png", thumb=32, columns=2)
    with Image.open(out) as sheet:
        assert sheet.format == "PNG"
        # 2 columns of (2*32 + 3*4) px; 3 rows (5 pairs) of (32 + 14 + 3*4) px.
        assert sheet.size == (2 * (64 + 12), 3 * (32 + 14 + 12))


def test_a_single_pair_is_one_cell_wide(tmp_path: Path) -> None:
    test, golden = solid(tmp_path / "t.png", RED), solid(tmp_path / "g.png", BLUE)
    out = contact_sheet([(test, golden, "PASS 0.9")], tmp_path / "sheet.png", thumb=20, columns=4)
    with Image.open(out) as sheet:
        assert sheet.size == (2 * 20 + 3 * PAD, 20 + CAPTION_HEIGHT + 3 * PAD)


def test_test_image_is_drawn_left_and_golden_right_in_every_cell(tmp_path: Path) -> None:
    thumb = 48
    pairs = [
        (solid(tmp_path / "a_test.png", RED), solid(tmp_path / "a_golden.png", BLUE), "open 0.1"),
        (solid(tmp_path / "b_test.png", GREEN), solid(tmp_path / "b_golden.png", RED), "PASS 0.9"),
        (solid(tmp_path / "c_test.png", BLUE, mode="1"), solid(tmp_path / "c_golden.png", GREEN), "spur 0.3"),
    ]
    out = contact_sheet(pairs, tmp_path / "sheet.png", thumb=thumb, columns=2)
    expected = [(RED, BLUE), (GREEN, RED), ((0, 0, 0), GREEN)]  # a 1-bit blue image is black
    with Image.open(out) as sheet:
        rgb = sheet.convert("RGB")
        for number, (left_colour, right_colour) in enumerate(expected):
            x, y = cell_origin(number, thumb=thumb, columns=2)
            centre_y = y + PAD + thumb // 2
            assert rgb.getpixel((x + PAD + thumb // 2, centre_y)) == left_colour
            assert rgb.getpixel((x + 2 * PAD + thumb + thumb // 2, centre_y)) == right_colour


def test_non_square_image_keeps_its_aspect_inside_the_thumbnail(tmp_path: Path) -> None:
    thumb = 40
    wide = solid(tmp_path / "wide.png", RED, size=(80, 20))
    out = contact_sheet([(wide, wide, "x")], tmp_path / "sheet.png", thumb=thumb)
    with Image.open(out) as sheet:
        rgb = sheet.convert("RGB")
        # 80x20 scaled to 40x10 and centred: rows 15..24 of the thumbnail are red, its top row is background.
        assert rgb.getpixel((PAD + 20, PAD + 20)) == RED
        assert rgb.getpixel((PAD + 20, PAD + 1)) == (255, 255, 255)


def test_missing_and_unreadable_images_become_grey_boxes(tmp_path: Path) -> None:
    thumb = 48
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    pairs = [(tmp_path / "absent.png", broken, "open 0.2"), (None, solid(tmp_path / "g.png", BLUE), "PASS 0.7")]
    out = contact_sheet(pairs, tmp_path / "sheet.png", thumb=thumb, columns=2)
    with Image.open(out) as sheet:
        rgb = sheet.convert("RGB")
        first_x, _ = cell_origin(0, thumb=thumb, columns=2)
        second_x, _ = cell_origin(1, thumb=thumb, columns=2)
        # A corner of each placeholder (away from its centred word) shows the grey fill.
        assert rgb.getpixel((first_x + PAD + 1, PAD + 1)) == PLACEHOLDER_FILL
        assert rgb.getpixel((first_x + 2 * PAD + thumb + 1, PAD + 1)) == PLACEHOLDER_FILL
        assert rgb.getpixel((second_x + PAD + 1, PAD + 1)) == PLACEHOLDER_FILL
        assert rgb.getpixel((second_x + 2 * PAD + thumb + thumb // 2, PAD + thumb // 2)) == BLUE


def test_caption_is_drawn_below_the_thumbnails(tmp_path: Path) -> None:
    thumb = 32
    image = solid(tmp_path / "t.png", (255, 255, 255))
    out = contact_sheet([(image, image, "open 0.1234")], tmp_path / "sheet.png", thumb=thumb)
    with Image.open(out) as sheet:
        caption = sheet.convert("L").crop((0, 2 * PAD + thumb, sheet.width, sheet.height))
        assert caption.getextrema()[0] < 128  # dark text pixels exist in the caption strip


@pytest.mark.parametrize(
    ("pairs", "thumb", "columns"),
    [([], 96, 2), ([(Path("a"), Path("b"), "x")], 8, 2), ([(Path("a"), Path("b"), "x")], 96, 0)],
)
def test_bad_arguments_are_refused_before_writing(tmp_path: Path, pairs: list, thumb: int, columns: int) -> None:
    with pytest.raises(ValueError):
        contact_sheet(pairs, tmp_path / "sheet.png", thumb=thumb, columns=columns)
    assert not (tmp_path / "sheet.png").exists()
