"""data_pipeline/loading/dali_draws.py: the DALI train pipeline's random parameters, drawn on the host."""
import io

import numpy as np
from PIL import Image

from data_pipeline.loading.dali_draws import crop_windows, flips, image_size_of, shifts, train_draws


def test_crop_windows_lie_in_the_image_with_the_inception_area_and_aspect():
    rng = np.random.default_rng(0)
    w = np.array([500, 375, 64, 3000] * 500)
    h = np.array([375, 500, 64, 100] * 500)
    anchor, shape = crop_windows(rng, w, h)
    assert anchor.dtype == shape.dtype == np.float32 and anchor.shape == shape.shape == (2000, 2)
    assert (anchor >= 0).all() and (shape > 0).all()
    assert (anchor[:, 0] + shape[:, 0] <= w).all() and (anchor[:, 1] + shape[:, 1] <= h).all()
    area = shape[:, 0] * shape[:, 1] / (w * h)
    aspect = shape[:, 0] / shape[:, 1]
    normal = w[:] != 3000                           # a 30:1 strip mostly falls back to its central square
    assert area[normal].min() >= 0.07 and area[normal].max() <= 1.0 and 0.4 < area[normal].mean() < 0.65
    assert aspect[normal].min() >= 0.72 and aspect[normal].max() <= 1.39    # 3/4-4/3, rounded to pixels
    strip = ~normal
    fell_back = (shape[strip, 0] == 100) & (shape[strip, 1] == 100)
    assert fell_back.mean() > 0.5 and (anchor[strip][fell_back, 0] == 1450).all()


def test_draws_are_a_function_of_the_generator_state_only():
    a = train_draws(np.random.default_rng(7), "imagenet", np.array([[320, 240]] * 8), 8)
    b = train_draws(np.random.default_rng(7), "imagenet", np.array([[320, 240]] * 8), 8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == 3
    s, f = train_draws(np.random.default_rng(1), "cifar", None, 1000)
    assert s.shape == (1000, 2) and set(np.unique(s).tolist()) == set(range(-4, 5))
    assert set(np.unique(f).tolist()) == {0, 1} and abs(f.mean() - 0.5) < 0.06
    assert not flips(np.random.default_rng(1), 50, "glyphs").any()          # glyphs never flip
    assert shifts(np.random.default_rng(1), 5, 2).max() <= 2


def test_image_size_comes_from_the_header():
    buf = io.BytesIO()
    Image.new("RGB", (123, 45)).save(buf, format="JPEG")
    assert image_size_of(np.frombuffer(buf.getvalue(), np.uint8)) == (123, 45)
