"""The glyph data set renderer and its font blocklist (data_pipeline/glyphs.py).

Renders every installed font once (about 10 s on 2 cores); skipped with a visible reason where
the font packages are not installed.
"""
from __future__ import annotations

import numpy as np
import pytest

from data_pipeline.convert import glyph_render as glyphs

INSTALLED = {path.stem: path for path in glyphs.discover_fonts()}
BLOCKLIST = glyphs.load_blocklist()
KINDS = ("missing", "shapes", "same case")
MARGIN = 0.02  # same_case_score tolerance, so that small renderer changes do not flip fonts

needs_fonts = pytest.mark.skipif(
    not INSTALLED,
    reason="glyph fonts not installed (apt: fonts-aenigma fonts-urw-base35 fonts-dejavu-core "
    "fonts-dejavu-extra; scripts/setup.sh installs them)",
)


def kind(stem: str) -> str:
    return BLOCKLIST[stem].split(":", 1)[0]


@pytest.fixture(scope="module")
def glyph_set() -> glyphs.GlyphSet:
    return glyphs.render_glyph_set()


@pytest.fixture(scope="module")
def usable(glyph_set) -> dict[str, np.ndarray]:
    """font stem -> (62, 32, 32, 3) images, for every font the data set uses."""
    fonts: dict[str, list] = {}
    for cid, stem, image in glyph_set.train + glyph_set.test:
        fonts.setdefault(stem, [None] * len(glyphs.GLYPH_CHARS))[cid] = image
    return {stem: np.stack(images) for stem, images in fonts.items()}


def test_blocklist_is_well_formed():
    assert {"StandardSymbolsPS", "D050000L"} <= set(BLOCKLIST)
    for stem in BLOCKLIST:
        assert kind(stem) in KINDS, f"{stem}: reason must start with one of {KINDS}"


def test_blocklist_rejects_malformed_lines(tmp_path):
    path = tmp_path / "blocklist.txt"
    path.write_text("# comment\n\nfoo  # shapes: ok\n")
    assert glyphs.load_blocklist(path) == {"foo": "shapes: ok"}
    for bad in ("foo\n", "foo bar  # reason\n", "foo  # a\nfoo  # b\n"):
        path.write_text(bad)
        with pytest.raises(ValueError):
            glyphs.load_blocklist(path)


@needs_fonts
def test_blocklist_names_installed_fonts():
    stale = sorted(set(BLOCKLIST) - set(INSTALLED))
    assert not stale, f"blocklist names fonts that are not installed: {stale}"


@needs_fonts
def test_discover_fonts_is_sorted_one_file_per_font_and_filtered():
    fonts = glyphs.discover_fonts()
    stems = [path.stem for path in fonts]
    assert stems == sorted(stems) and len(stems) == len(set(stems))
    assert len(fonts) >= 500  # 465 aenigma + 35 urw-base35 + 22 DejaVu on Debian 12
    kept = glyphs.discover_fonts(set(BLOCKLIST))
    assert [p.stem for p in kept] == [s for s in stems if s not in BLOCKLIST]


@needs_fonts
def test_render_glyph_is_centred_dark_on_white():
    font = INSTALLED["DejaVuSans"]
    image = glyphs.render_glyph(font, "A")
    assert image.dtype == np.uint8 and image.shape == (32, 32, 3)
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    ink = image[..., 0] < 128
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    assert rows[0] >= 1 and cols[0] >= 1 and rows[-1] <= 30 and cols[-1] <= 30  # margin
    assert rows[-1] - rows[0] >= 26  # scaled to fill the frame
    assert abs((rows[0] + rows[-1]) / 2 - 15.5) <= 1 and abs((cols[0] + cols[-1]) / 2 - 15.5) <= 1
    assert image[0, 0, 0] == 255
    # every glyph fills the frame alike, whatever its size in the font
    assert (glyphs.render_glyph(font, "o")[..., 0] < 128).any(1).sum() >= 26
    assert glyphs.render_glyph(font, "x", size=24).shape == (24, 24, 3)
    with pytest.raises(glyphs.GlyphError):
        glyphs.render_glyph(font, " ")


@needs_fonts
def test_every_font_off_the_blocklist_renders_all_62_characters(glyph_set, usable):
    # render_glyph_set drops fonts that draw nothing or the .notdef box; none may be dropped
    assert glyph_set.skipped == {}
    assert sorted(usable) == sorted(set(INSTALLED) - set(BLOCKLIST))
    for stem, images in usable.items():
        assert images.shape == (62, 32, 32, 3) and images.dtype == np.uint8, stem
        assert (images.reshape(62, -1).min(1) < 128).all(), f"{stem}: an empty glyph"
        distinct = len({image.tobytes() for image in images})
        assert distinct >= 40, f"{stem}: only {distinct} distinct glyphs of 62"


@needs_fonts
def test_no_font_off_the_blocklist_has_the_same_upper_and_lower_case(usable):
    scores = {stem: glyphs.same_case_score(images) for stem, images in usable.items()}
    low = {s: round(v, 3) for s, v in scores.items() if v < glyphs.SAME_CASE_THRESHOLD - MARGIN}
    assert not low, f"look at these and add them to the blocklist as 'same case': {low}"


@needs_fonts
def test_blocklisted_fonts_are_what_the_blocklist_says(usable):
    stems = sorted(stem for stem in BLOCKLIST if stem in INSTALLED)  # others: see above
    results = dict(zip(stems, glyphs.render_fonts([INSTALLED[stem] for stem in stems])))
    refs = _nn_reference(usable)
    for stem, images in results.items():
        if kind(stem) == "missing":
            assert isinstance(images, glyphs.GlyphError), f"{stem} renders all 62 characters"
            continue
        assert not isinstance(images, glyphs.GlyphError), images
        if kind(stem) == "same case":
            if "by eye" not in BLOCKLIST[stem]:
                score = glyphs.same_case_score(images)
                assert score < glyphs.SAME_CASE_THRESHOLD + MARGIN, f"{stem}: score {score:.3f}"
        else:  # shapes: its glyphs do not look like the characters of the usable fonts
            accuracy = _nn_accuracy(images, *refs)
            assert accuracy < 0.6, f"{stem} reads as letters ({accuracy:.2f}); why blocklisted?"


def _features(images: np.ndarray) -> np.ndarray:
    """16x16 ink, centred and normalised, one row per image."""
    ink = (255 - images[..., 0].astype(np.float32)) / 255
    ink = ink.reshape(len(ink), 16, 2, 16, 2).mean((2, 4)).reshape(len(ink), -1)
    ink -= ink.mean(1, keepdims=True)
    return ink / (np.linalg.norm(ink, axis=1, keepdims=True) + 1e-6)


CASE_FOLDED = np.array([i if i < 10 else 10 + (i - 10) % 26 for i in range(62)])


def _nn_reference(usable):
    feats = _features(np.concatenate(list(usable.values())))
    return feats, np.tile(CASE_FOLDED, len(usable))


def _nn_accuracy(images, ref_feats, ref_labels) -> float:
    """1-nearest-neighbour accuracy (case folded) of one font's glyphs against the usable fonts."""
    nearest = (_features(images) @ ref_feats.T).argmax(1)
    return float((ref_labels[nearest] == CASE_FOLDED).mean())


@needs_fonts
def test_split_is_by_font_disjoint_and_deterministic(glyph_set, usable):
    train, test = set(glyph_set.train_fonts), set(glyph_set.test_fonts)
    assert not train & test and train | test == set(usable)
    assert len(train | test) > 300
    assert abs(len(test) / len(usable) - 0.2) < 0.01
    assert {stem for _, stem, _ in glyph_set.train} == train
    assert {stem for _, stem, _ in glyph_set.test} == test
    assert len(glyph_set.train) == 62 * len(train) and len(glyph_set.test) == 62 * len(test)
    assert glyph_set.class_names == list(glyphs.GLYPH_CHARS)
    # the same seed gives the same split, another seed another one
    stems = sorted(usable)
    assert glyphs.split_fonts(stems, 0.2, 1993) == (glyph_set.train_fonts, glyph_set.test_fonts)
    assert glyphs.split_fonts(stems[::-1], 0.2, 1993) == glyphs.split_fonts(stems, 0.2, 1993)
    assert glyphs.split_fonts(stems, 0.2, 7) != glyphs.split_fonts(stems, 0.2, 1993)
