"""Procedural face space: contract, determinism, named dimensions, safety rule, prior and box."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from engine.latent import (
    AGE_INDEX,
    BACKEND_NAMES,
    DIMENSION_NAMES,
    PRIOR_BOUND,
    LatentSpace,
    LatentSpaceError,
    ProceduralFaceSpace,
    create_latent_space,
    encode_png,
)

SPACE = ProceduralFaceSpace()
DIM = SPACE.dim


def _latent(**coords: float) -> np.ndarray:
    z = np.zeros(DIM)
    for name, value in coords.items():
        z[DIMENSION_NAMES.index(name)] = value
    return z


def _pixels(z: np.ndarray) -> np.ndarray:
    return np.asarray(SPACE.render(z), dtype=np.int16)


def test_satisfies_the_latent_space_protocol() -> None:
    assert isinstance(SPACE, LatentSpace)
    assert SPACE.name == "procedural"
    assert 20 <= DIM <= 28
    assert len(SPACE.dimension_names) == DIM == len(set(SPACE.dimension_names))
    assert SPACE.dimension_names[AGE_INDEX] == "apparent_age" == SPACE.dimension_names[SPACE.age_index]


def test_render_is_a_256_square_rgb_image() -> None:
    image = SPACE.render(np.zeros(DIM))
    assert image.mode == "RGB"
    assert image.size == (256, 256)


def test_same_latent_gives_identical_png_bytes() -> None:
    z = SPACE.sample(1, np.random.default_rng(3))[0]
    first = encode_png(SPACE.render(z))
    assert encode_png(ProceduralFaceSpace().render(z.copy())) == first
    assert first[:8] == b"\x89PNG\r\n\x1a\n"


def test_different_latents_give_different_images() -> None:
    zs = SPACE.sample(12, np.random.default_rng(4))
    encoded = {encode_png(SPACE.render(z)) for z in zs}
    assert len(encoded) == len(zs)


@pytest.mark.parametrize("name", DIMENSION_NAMES)
def test_every_named_dimension_visibly_changes_the_face(name: str) -> None:
    low, high = _pixels(_latent(**{name: -2.0})), _pixels(_latent(**{name: 2.0}))
    changed = int((np.abs(low - high).max(axis=-1) > 16).sum())
    assert changed >= 100, f"{name} changed only {changed} pixels"


@pytest.mark.parametrize(("name", "off", "below_threshold"), [("glasses", -2.0, 0.8), ("beard", -2.0, 0.1)])
def test_categorical_features_only_appear_above_their_threshold(name: str, off: float, below_threshold: float) -> None:
    assert np.array_equal(_pixels(_latent(**{name: off})), _pixels(_latent(**{name: below_threshold})))
    assert not np.array_equal(_pixels(_latent(**{name: off})), _pixels(_latent(**{name: 1.5})))


def test_render_clamps_into_the_box_before_drawing() -> None:
    z = _latent(smile=7.5, face_width=-40.0)
    assert np.array_equal(_pixels(z), _pixels(SPACE.project(z)))


@pytest.mark.parametrize(
    "bad",
    [np.zeros(DIM - 1), np.zeros((2, DIM)), np.float64(0.0), _latent(smile=np.nan), _latent(beard=np.inf), ["a"] * DIM],
)
def test_render_rejects_wrong_shapes_and_non_finite_values(bad: object) -> None:
    with pytest.raises(LatentSpaceError, match="z must"):
        SPACE.render(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["in_safety_region", "project", "apparent_age_years"])
def test_batch_methods_reject_a_wrong_last_axis(method: str) -> None:
    with pytest.raises(LatentSpaceError, match=rf"\(\.\.\., {DIM}\)"):
        getattr(SPACE, method)(np.zeros((3, DIM + 1)))


_LATENT_BATCHES = hnp.arrays(
    np.float64,
    st.tuples(st.integers(0, 6), st.just(DIM)),
    elements=st.floats(-6.0, 6.0) | st.sampled_from([np.nan, np.inf, -np.inf, -21.0 / 13.0]),
)


@given(_LATENT_BATCHES)
def test_safety_region_is_exactly_apparent_age_under_18_or_non_finite(z: np.ndarray) -> None:
    age = SPACE.apparent_age_years(z)
    np.testing.assert_array_equal(age, 39.0 + 13.0 * z[:, AGE_INDEX])
    with np.errstate(invalid="ignore"):
        expected = (age < 18.0) | ~np.isfinite(z).all(axis=-1)
    np.testing.assert_array_equal(SPACE.in_safety_region(z), expected)


def test_safety_region_keeps_the_batch_shape() -> None:
    assert SPACE.in_safety_region(np.zeros(DIM)).shape == ()
    assert SPACE.in_safety_region(np.zeros((2, 3, DIM))).shape == (2, 3)
    assert bool(SPACE.in_safety_region(_latent(apparent_age=-2.0)))
    assert not bool(SPACE.in_safety_region(_latent(apparent_age=-1.6)))


def test_about_five_percent_of_the_prior_is_under_18() -> None:
    z = SPACE.sample(40_000, np.random.default_rng(5))
    # P(Z < -21/13 | |Z| <= 3) = 0.0519; 4 binomial standard errors at n = 40000 is 0.0044.
    assert abs(SPACE.in_safety_region(z).mean() - 0.0519) < 0.0044


def test_sample_draws_the_truncated_prior_by_rejection() -> None:
    z = SPACE.sample(5000, np.random.default_rng(6))
    assert z.shape == (5000, DIM) and z.dtype == np.float64
    assert np.abs(z).max() < PRIOR_BOUND  # clipping would pile 0.27 % of the mass onto +-3
    np.testing.assert_array_equal(z, SPACE.sample(5000, np.random.default_rng(6)))
    assert SPACE.sample(0, np.random.default_rng(6)).shape == (0, DIM)


@pytest.mark.parametrize(("n", "rng"), [(-1, np.random.default_rng(0)), (2.5, np.random.default_rng(0)),
                                        (True, np.random.default_rng(0)), (3, np.random.RandomState(0)), (3, None)])
def test_sample_rejects_bad_arguments(n: object, rng: object) -> None:
    with pytest.raises(LatentSpaceError, match="n must|rng must"):
        SPACE.sample(n, rng)  # type: ignore[arg-type]


@given(hnp.arrays(np.float64, st.tuples(st.integers(0, 4), st.just(DIM)),
                  elements=st.floats(allow_nan=True, allow_infinity=True)))
def test_project_is_idempotent_and_lands_in_the_box(z: np.ndarray) -> None:
    p = SPACE.project(z)
    assert p.shape == z.shape and p.dtype == np.float64
    assert np.isfinite(p).all() and (np.abs(p) <= PRIOR_BOUND).all()
    np.testing.assert_array_equal(SPACE.project(p), p)
    inside = np.isfinite(z) & (np.abs(z) <= PRIOR_BOUND)
    np.testing.assert_array_equal(p[inside], z[inside])
    np.testing.assert_array_equal(p[~np.isfinite(z)], 0.0)


def test_registry_builds_the_procedural_backend_and_names_valid_ones() -> None:
    assert isinstance(create_latent_space("procedural"), ProceduralFaceSpace)
    assert BACKEND_NAMES == ("diffusion", "procedural")
    with pytest.raises(ValueError, match="'gan'.*'diffusion', 'procedural'"):
        create_latent_space("gan")


def test_importing_the_package_does_not_import_diffusers() -> None:
    code = "import sys, engine.latent; print('diffusers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_encode_png_round_trips_pixels_and_ignores_metadata() -> None:
    image = SPACE.render(_latent(smile=1.0))
    tagged = image.copy()
    tagged.info = {"icc_profile": b"not a profile", "comment": "x", "transparency": (0, 0, 0)}
    data = encode_png(image)
    assert encode_png(tagged) == data
    with Image.open(io.BytesIO(data)) as decoded:
        np.testing.assert_array_equal(np.asarray(decoded), np.asarray(image))


def test_encode_png_rejects_non_images() -> None:
    with pytest.raises(TypeError, match="image must be a PIL.Image.Image"):
        encode_png(np.zeros((4, 4, 3), dtype=np.uint8))  # type: ignore[arg-type]
