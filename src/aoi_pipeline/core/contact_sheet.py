"""Contact sheets: the worst image pairs of an inspection drawn test | golden side by side in one PNG.

A reviewer judges a false alarm or a missed defect by looking at the two images the model compared, so the
root-cause report ships one picture holding the weakest pairs, each captioned with its label and score. The
layout is fixed so a sheet is reproducible: every cell is `PAD | test | PAD | golden | PAD` wide and
`PAD | thumbnails | PAD | caption | PAD` high, cells fill `columns` per row, and each image is scaled to fit
a `thumb` x `thumb` square without changing its aspect. A missing or unreadable image becomes a grey box
saying which: one lost file must not cost the whole report.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from aoi_pipeline.core.files import atomic_write_bytes

PAD = 4
CAPTION_HEIGHT = 14
MIN_THUMB = 16
BACKGROUND = (255, 255, 255)
PLACEHOLDER_FILL = (160, 160, 160)
PLACEHOLDER_TEXT = (255, 255, 255)
CAPTION_TEXT = (0, 0, 0)
_ELLIPSIS = "..."

# (test image, golden image, caption); None for a side that has no file stands for a missing image.
ImagePair = tuple[Path | None, Path | None, str]


def cell_size(thumb: int) -> tuple[int, int]:
    """Width and height of one pair's cell: two thumbnails and their caption, padded."""
    return 2 * thumb + 3 * PAD, thumb + CAPTION_HEIGHT + 3 * PAD


def sheet_size(pair_count: int, *, thumb: int, columns: int) -> tuple[int, int]:
    """Width and height of a sheet of `pair_count` pairs: min(columns, pairs) cells wide."""
    used_columns = min(columns, pair_count)
    width, height = cell_size(thumb)
    return used_columns * width, math.ceil(pair_count / used_columns) * height


def contact_sheet(pairs: Sequence[ImagePair], out: Path, *, thumb: int = 96, columns: int = 2) -> Path:
    """Draw every (test image, golden image, caption) pair into the PNG `out`, written atomically.

    Raises ValueError for no pairs, a thumbnail under MIN_THUMB pixels or fewer than one column.
    """
    if not pairs:
        raise ValueError("a contact sheet needs at least one image pair")
    if thumb < MIN_THUMB:
        raise ValueError(f"thumb={thumb} is below the smallest readable thumbnail ({MIN_THUMB} px)")
    if columns < 1:
        raise ValueError(f"columns={columns} must be at least 1")
    font = ImageFont.load_default()
    sheet = Image.new("RGB", sheet_size(len(pairs), thumb=thumb, columns=columns), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    used_columns = min(columns, len(pairs))
    cell_width, cell_height = cell_size(thumb)
    for number, (test, golden, caption) in enumerate(pairs):
        left = (number % used_columns) * cell_width
        top = (number // used_columns) * cell_height
        sheet.paste(_thumbnail(test, thumb, font), (left + PAD, top + PAD))
        sheet.paste(_thumbnail(golden, thumb, font), (left + 2 * PAD + thumb, top + PAD))
        text = _fitted(draw, caption, font, cell_width - 2 * PAD)
        draw.text((left + PAD, top + 2 * PAD + thumb), text, fill=CAPTION_TEXT, font=font)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, buffer.getvalue())
    return out


def _thumbnail(path: Path | None, thumb: int, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> Image.Image:
    if path is None or not Path(path).is_file():
        return _placeholder(thumb, "missing", font)
    try:
        with Image.open(path) as image:
            fitted = ImageOps.contain(image.convert("RGB"), (thumb, thumb))
    except (OSError, UnidentifiedImageError, ValueError):
        return _placeholder(thumb, "unreadable", font)
    box = Image.new("RGB", (thumb, thumb), BACKGROUND)
    box.paste(fitted, ((thumb - fitted.width) // 2, (thumb - fitted.height) // 2))
    return box


def _placeholder(thumb: int, word: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> Image.Image:
    box = Image.new("RGB", (thumb, thumb), PLACEHOLDER_FILL)
    draw = ImageDraw.Draw(box)
    # Centred from the measured box: bitmap fonts (no FreeType) do not support text anchors.
    left, top, right, bottom = draw.textbbox((0, 0), word, font=font)
    draw.text(((thumb - right - left) / 2, (thumb - bottom - top) / 2), word, fill=PLACEHOLDER_TEXT, font=font)
    return box


def _fitted(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int
) -> str:
    """The caption cut (with an ellipsis) to the cell width, so neighbouring captions never overlap."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + _ELLIPSIS, font=font) > width:
        text = text[:-1]
    return text + _ELLIPSIS
