"""The built-in glyph data set: 62 classes (0-9, A-Z, a-z) rendered from real fonts.

The fonts come from the Debian packages fonts-aenigma, fonts-urw-base35, fonts-dejavu-core and
fonts-dejavu-extra. Every glyph is cropped to its own ink bounding box and scaled to fit the frame
with a small margin, so glyphs of every font fill the frame alike; it is drawn dark on white as a
uint8 RGB image. Fonts that draw a letter as a shape, or upper and lower case alike, are listed
in ``glyph_font_blocklist.txt`` (committed, checked by tests/unit/test_glyphs.py). Fonts that lack
one of the 62 characters (draw the .notdef box or nothing) are dropped at render time as well.

Train and test are split by font (held-out fonts), never by image.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import random
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

GLYPH_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # class id = index

# Where the packages put their fonts (dpkg -L). urw-base35 ships each face as .otf, .t1 and .pfb;
# discover_fonts keeps one file per stem, preferring the suffixes in FONT_SUFFIXES order.
FONT_DIRS = (
    Path("/usr/share/fonts/truetype/aenigma"),      # fonts-aenigma: 465 .ttf
    Path("/usr/share/fonts/opentype/urw-base35"),   # fonts-urw-base35: 35 .otf
    Path("/usr/share/fonts/type1/urw-base35"),      # fonts-urw-base35: the same faces as .t1
    Path("/usr/share/fonts/truetype/dejavu"),       # fonts-dejavu-core and -extra: 22 .ttf
)
FONT_SUFFIXES = (".ttf", ".otf", ".t1", ".pfb")
BLOCKLIST_PATH = Path(__file__).with_name("glyph_font_blocklist.txt")

# Code points no font here maps: whatever a font draws for them is its missing-glyph (.notdef) box.
MISSING_CODEPOINTS = ("\ue000", "\U0010fffd")
RENDER_SCALE = 4      # glyphs are drawn at RENDER_SCALE * size pixels per em, then scaled down
INK_THRESHOLD = 16    # a pixel of coverage above this (of 255) counts as ink
SAME_CASE_THRESHOLD = 0.31  # see same_case_score


class GlyphError(ValueError):
    """A font cannot render one of the 62 characters properly."""


@dataclass
class GlyphSet:
    class_names: list[str]
    train_fonts: list[str]
    test_fonts: list[str]
    train: list[tuple[int, str, np.ndarray]]   # (class_id, font_stem, uint8 image (size, size, 3))
    test: list[tuple[int, str, np.ndarray]]
    skipped: dict[str, str] = field(default_factory=dict)  # font stem -> why it was not used


def load_blocklist(path: Path = BLOCKLIST_PATH) -> dict[str, str]:
    """Parse the blocklist: one ``<font file stem>  # reason`` a line; '#' lines are comments."""
    entries: dict[str, str] = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        stem, _, reason = (part.strip() for part in line.partition("#"))
        if not reason or len(stem.split()) != 1:
            raise ValueError(f"{path}:{lineno}: expected '<font stem>  # reason', got {line!r}")
        if stem in entries:
            raise ValueError(f"{path}:{lineno}: {stem} is listed twice")
        entries[stem] = reason
    return entries


def discover_fonts(blocklist: set[str] | None = None) -> list[Path]:
    """Installed font files, one per stem, sorted by stem; stems in ``blocklist`` are left out."""
    found: dict[str, Path] = {}
    for directory in FONT_DIRS:
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            if path.suffix.lower() not in FONT_SUFFIXES:
                continue
            rank = FONT_SUFFIXES.index(path.suffix.lower())
            old = found.get(path.stem)
            if old is None or rank < FONT_SUFFIXES.index(old.suffix.lower()):
                found[path.stem] = path
    blocked = blocklist or set()
    return [found[stem] for stem in sorted(found) if stem not in blocked]


@lru_cache(maxsize=8)
def _load_font(font_path: str, em: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(font_path, em, layout_engine=ImageFont.Layout.BASIC)


def _ink(font: ImageFont.FreeTypeFont, char: str) -> np.ndarray | None:
    """The glyph's coverage (0-255) cropped to its ink bounding box; None if it draws nothing."""
    left, top, right, bottom = font.getbbox(char)
    if right <= left or bottom <= top:
        return None
    canvas = Image.new("L", (right - left, bottom - top), 0)
    ImageDraw.Draw(canvas).text((-left, -top), char, fill=255, font=font)
    ink = np.asarray(canvas)
    rows = np.flatnonzero(ink.max(axis=1) > INK_THRESHOLD)
    cols = np.flatnonzero(ink.max(axis=0) > INK_THRESHOLD)
    if rows.size == 0:
        return None
    return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _fit(ink: np.ndarray, size: int) -> np.ndarray:
    """Scale the ink to fit a size x size frame with a margin, centre it, dark on white, RGB."""
    margin = max(1, round(size / 16))
    box = size - 2 * margin
    h, w = ink.shape
    scale = box / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    small = Image.fromarray(ink).resize((new_w, new_h), Image.Resampling.LANCZOS)
    frame = np.zeros((size, size), np.uint8)
    y, x = (size - new_h) // 2, (size - new_w) // 2
    frame[y:y + new_h, x:x + new_w] = np.asarray(small)
    return np.repeat((255 - frame)[:, :, None], 3, axis=2)


def render_glyph(font_path: str | os.PathLike, char: str, size: int = 32) -> np.ndarray:
    """One character as a uint8 RGB (size, size, 3) image; GlyphError if the font draws nothing.

    This does not check for the missing-glyph box; render_font does.
    """
    ink = _ink(_load_font(str(font_path), RENDER_SCALE * size), char)
    if ink is None:
        raise GlyphError(f"{Path(font_path).name} draws nothing for {char!r}")
    return _fit(ink, size)


def render_font(font_path: str | os.PathLike, size: int = 32) -> np.ndarray:
    """All 62 characters of one font as uint8 (62, size, size, 3), in GLYPH_CHARS order.

    Raises GlyphError if the font cannot be loaded, draws nothing for a character, or draws its
    missing-glyph box (the drawing it gives code points it lacks) for one.
    """
    name = Path(font_path).name
    try:
        font = _load_font(str(font_path), RENDER_SCALE * size)
    except OSError as exc:
        raise GlyphError(f"{name}: cannot load ({exc})") from exc
    notdefs = [ink for ink in (_ink(font, c) for c in MISSING_CODEPOINTS) if ink is not None]
    images, empty, tofu = [], [], []
    for char in GLYPH_CHARS:
        ink = _ink(font, char)
        if ink is None:
            empty.append(char)
        elif any(ink.shape == box.shape and np.array_equal(ink, box) for box in notdefs):
            tofu.append(char)
        else:
            images.append(_fit(ink, size))
    if empty or tofu:
        parts = [f"draws nothing for {''.join(empty)}"] if empty else []
        parts += [f"draws the missing-glyph box for {''.join(tofu)}"] if tofu else []
        raise GlyphError(f"{name}: {'; '.join(parts)}")
    return np.stack(images)


def same_case_score(images: np.ndarray) -> float:
    """How differently one font draws the two cases of a letter, from its (62, H, W, 3) images.

    The median over the 26 letters of the mean absolute pixel difference between upper and lower
    case, divided by the median difference between two different upper-case letters of the font.
    0 means the cases are drawn alike. Regular text fonts score 0.5-0.9, not 1: c/C, o/O, s/S,
    v/V, w/W, x/X, z/Z look alike in any font once each glyph is scaled to fill the frame.
    Fonts scoring below SAME_CASE_THRESHOLD are on the blocklist as "same case".
    """
    ink = (255 - images[..., 0].astype(np.float32)).reshape(len(images), -1) / 255
    upper, lower = ink[10:36], ink[36:62]
    between = np.abs(upper[:, None] - upper[None]).mean(-1)
    typical = np.median(between[~np.eye(26, dtype=bool)])
    return float(np.median(np.abs(upper - lower).mean(-1)) / typical)


def _render_or_error(args: tuple[str, int]) -> np.ndarray | GlyphError:
    try:
        return render_font(*args)
    except GlyphError as exc:
        return exc


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def render_fonts(
    font_paths: list[Path],
    size: int = 32,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[np.ndarray | GlyphError]:
    """render_font for each path, in order: its images, or the GlyphError saying why not.

    ``workers`` processes render in parallel (default: the usable CPUs, at most 16; 1 renders in
    this process). ``progress(done, total)`` is called after each font.
    """
    jobs = [(str(path), size) for path in font_paths]
    workers = min(workers or _cpus(), len(jobs), 16)
    if workers <= 1:
        results = map(_render_or_error, jobs)
        pool = None
    else:
        # fork where there is one: spawn re-imports the caller's __main__ in every worker, which
        # breaks scripts without a __main__ guard. The workers only use Pillow and numpy.
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        pool = context.Pool(workers)
        results = pool.imap(_render_or_error, jobs, chunksize=4)
    try:
        for done, result in enumerate(results, 1):
            if progress is not None:
                progress(done, len(jobs))
            yield result
    finally:
        if pool is not None:
            pool.terminate()


def split_fonts(stems: list[str], test_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Held-out fonts: a seeded shuffle of the sorted stems; returns sorted (train, test)."""
    order = sorted(stems)
    random.Random(seed).shuffle(order)
    n_test = round(test_fraction * len(order))
    return sorted(order[n_test:]), sorted(order[:n_test])


def render_glyph_set(
    size: int = 32,
    test_fraction: float = 0.2,
    seed: int = 1993,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> GlyphSet:
    """Render every font off the blocklist and split train/test by font (held-out fonts).

    Fonts that fail render_font are skipped (logged, listed in ``skipped``). Deterministic: the
    same fonts and seed give the same split and sample order. ``progress`` and ``workers`` as
    for render_fonts.
    """
    fonts = discover_fonts(set(load_blocklist()))
    if not fonts:
        raise FileNotFoundError(
            "no glyph fonts found in " + ", ".join(map(str, FONT_DIRS))
            + "; install fonts-aenigma fonts-urw-base35 fonts-dejavu-core fonts-dejavu-extra"
            " (scripts/setup.sh does)"
        )
    rendered: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    for path, result in zip(fonts, render_fonts(fonts, size, workers, progress)):
        if isinstance(result, GlyphError):
            skipped[path.stem] = str(result)
            log.warning("glyphs: skipping font %s", result)
        else:
            rendered[path.stem] = result

    train_fonts, test_fonts = split_fonts(list(rendered), test_fraction, seed)

    def samples(stems: list[str]) -> list[tuple[int, str, np.ndarray]]:
        return [(cid, stem, rendered[stem][cid]) for stem in stems for cid in range(len(GLYPH_CHARS))]

    return GlyphSet(
        class_names=list(GLYPH_CHARS),
        train_fonts=train_fonts,
        test_fonts=test_fonts,
        train=samples(train_fonts),
        test=samples(test_fonts),
        skipped=skipped,
    )
