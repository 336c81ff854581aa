"""Diffusion face space on a tiny random pipeline: offline loading, determinism, noise basis, safety."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.latent import (
    PRIOR_BOUND,
    DiffusionFaceSpace,
    LatentSpace,
    LatentSpaceError,
    create_latent_space,
    encode_png,
    save_random_pipeline,
)

DIM = 8
STEPS = 3
SIZE = 16
N_ELEMENTS = 3 * SIZE * SIZE


def _refuse_network(*args: object, **kwargs: object) -> None:
    raise AssertionError(f"network access attempted: {args!r}")


@pytest.fixture(scope="module", autouse=True)
def single_thread() -> Iterator[None]:
    """One intra-op thread: the tiny UNet's ops are too small to split, and on shared CI cores
    the idle waits of a thread pool make each forward pass up to 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def offline() -> Iterator[None]:
    """Every socket connection fails, and the Hugging Face hub is told it is offline."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(socket.socket, "connect", _refuse_network)
        mp.setattr(socket.socket, "connect_ex", _refuse_network)
        mp.setattr(socket, "create_connection", _refuse_network)
        yield


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory: pytest.TempPathFactory, offline: None) -> Path:
    return save_random_pipeline(tmp_path_factory.mktemp("pipe") / "tiny", sample_size=SIZE, seed=0)


@pytest.fixture(scope="module")
def space(pipeline_dir: Path) -> DiffusionFaceSpace:
    return DiffusionFaceSpace(path=pipeline_dir, dim=DIM, num_inference_steps=STEPS, device="cpu")


def _png(space: DiffusionFaceSpace, z: np.ndarray) -> bytes:
    return encode_png(space.render(z))


def test_loads_from_a_local_directory_without_the_network(space: DiffusionFaceSpace) -> None:
    assert isinstance(space, LatentSpace)
    assert space.name == "diffusion" and space.dim == DIM
    assert space.noise_shape == (1, 3, SIZE, SIZE)
    assert space.dimension_names[0] == "apparent_age" and len(space.dimension_names) == DIM
    image = space.render(np.zeros(DIM))
    assert image.mode == "RGB" and image.size == (256, 256)


def test_the_random_pipeline_is_tiny_and_leaves_the_global_rng_alone(tmp_path: Path, offline: None) -> None:
    before = torch.random.get_rng_state()
    path = save_random_pipeline(tmp_path / "p", sample_size=8, seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    unet = DiffusionFaceSpace(path=path, dim=4, num_inference_steps=1, device="cpu")._unet
    assert sum(p.numel() for p in unet.parameters()) < 10_000


def test_same_latent_gives_identical_bytes_across_instances(space: DiffusionFaceSpace, pipeline_dir: Path) -> None:
    z = space.sample(1, np.random.default_rng(0))[0]
    first = _png(space, z)
    assert _png(space, z) == first
    again = DiffusionFaceSpace(path=pipeline_dir, dim=DIM, num_inference_steps=STEPS, device="cpu")
    assert _png(again, z) == first


def test_different_latents_and_basis_seeds_give_different_images(space: DiffusionFaceSpace,
                                                                  pipeline_dir: Path) -> None:
    z = space.sample(3, np.random.default_rng(1))
    assert len({_png(space, zi) for zi in z}) == 3
    other = DiffusionFaceSpace(path=pipeline_dir, dim=DIM, num_inference_steps=STEPS, basis_seed=1, device="cpu")
    assert _png(other, z[0]) != _png(space, z[0])


def test_initial_noise_is_a_scaled_orthonormal_map(space: DiffusionFaceSpace) -> None:
    eye = np.eye(DIM)
    noise = torch.stack([space.initial_noise(e).reshape(-1) for e in eye]).double()
    gram = (noise @ noise.T).numpy()
    # Orthonormal columns scaled by sqrt(N / d): squared norm N / d per unit latent, so E||x_T||^2 = N.
    np.testing.assert_allclose(gram, np.eye(DIM) * N_ELEMENTS / DIM, rtol=1e-5, atol=1e-3)
    z = np.linspace(-1.0, 1.0, DIM)
    np.testing.assert_allclose(space.initial_noise(z).reshape(-1).numpy(), z @ noise.numpy(), rtol=1e-5, atol=1e-5)


def test_render_validates_its_latent(space: DiffusionFaceSpace) -> None:
    with pytest.raises(LatentSpaceError, match=rf"shape \({DIM},\)"):
        space.render(np.zeros((2, DIM)))
    with pytest.raises(LatentSpaceError, match="finite"):
        space.render(np.full(DIM, np.nan))


@pytest.mark.parametrize("path", ["does/not/exist", "google/ddpm-celebahq-256"])
def test_a_missing_directory_is_an_error_not_a_download(path: str, offline: None) -> None:
    with pytest.raises(LatentSpaceError, match="existing pipeline directory"):
        DiffusionFaceSpace(path=path)


def test_a_directory_that_is_not_a_pipeline_is_rejected(tmp_path: Path, offline: None) -> None:
    with pytest.raises(LatentSpaceError, match="not a diffusers pipeline"):
        DiffusionFaceSpace(path=tmp_path)


def test_a_conditional_unet_is_rejected(tmp_path: Path, pipeline_dir: Path) -> None:
    copy = Path(shutil.copytree(pipeline_dir, tmp_path / "cond"))
    config_path = copy / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config["_class_name"] = "UNet2DConditionModel"
    config_path.write_text(json.dumps(config))
    with pytest.raises(LatentSpaceError, match="unconditional UNet2DModel"):
        DiffusionFaceSpace(path=copy)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dim": 0}, "dim must"),
        ({"dim": N_ELEMENTS + 1}, "dim must be at most"),
        ({"num_inference_steps": 0}, "num_inference_steps must"),
        ({"basis_seed": -1}, "basis_seed must"),
        ({"device": "no-such-device"}, "device must"),
        ({"device": "cuda:99"}, "device must be available"),
        ({"safety_classifier": 3}, "safety_classifier must"),
    ],
)
def test_invalid_options_are_rejected(pipeline_dir: Path, options: dict[str, object], message: str) -> None:
    with pytest.raises(LatentSpaceError, match=message):
        DiffusionFaceSpace(path=pipeline_dir, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(("sample_size", "seed"), [(7, 0), (4, 0), (16, -1)])
def test_save_random_pipeline_validates_its_options(tmp_path: Path, sample_size: int, seed: int) -> None:
    with pytest.raises(LatentSpaceError, match="sample_size must|seed must"):
        save_random_pipeline(tmp_path / "p", sample_size=sample_size, seed=seed)


def test_safety_rule_applies_to_coordinate_zero(space: DiffusionFaceSpace) -> None:
    z = np.zeros((5, DIM))
    z[:, 0] = [-3.0, -1.7, -1.6, 0.0, 2.0]
    z[4, 3] = np.nan
    np.testing.assert_array_equal(space.in_safety_region(z), [True, True, False, False, True])
    np.testing.assert_allclose(space.apparent_age_years(z), 39.0 + 13.0 * z[:, 0])
    assert space.in_safety_region(z.reshape(5, 1, DIM)).shape == (5, 1)


def test_safety_classifier_is_ored_in_and_sees_only_unflagged_latents(pipeline_dir: Path) -> None:
    seen: list[np.ndarray] = []

    def classifier(latents: np.ndarray) -> np.ndarray:
        seen.append(latents.copy())
        return latents[:, 1] > 0.0

    guarded = DiffusionFaceSpace(path=pipeline_dir, dim=DIM, num_inference_steps=1, safety_classifier=classifier)
    z = np.zeros((4, DIM))
    z[:, 0] = [-2.0, 0.0, 0.0, 1.0]
    z[:, 1] = [1.0, 1.0, -1.0, -1.0]
    np.testing.assert_array_equal(guarded.in_safety_region(z), [True, True, False, False])
    np.testing.assert_array_equal(seen[0], z[1:])
    assert guarded.in_safety_region(np.zeros((0, DIM))).shape == (0,)
    assert len(seen) == 1


@pytest.mark.parametrize("bad", [lambda z: z[:, 1], lambda z: np.zeros(len(z) + 1, dtype=bool)])
def test_a_malformed_classifier_verdict_is_an_error(pipeline_dir: Path,
                                                   bad: Callable[[np.ndarray], np.ndarray]) -> None:
    guarded = DiffusionFaceSpace(path=pipeline_dir, dim=DIM, num_inference_steps=1, safety_classifier=bad)
    with pytest.raises(LatentSpaceError, match="boolean mask"):
        guarded.in_safety_region(np.zeros((3, DIM)))


def test_prior_and_box_follow_the_shared_conventions(space: DiffusionFaceSpace) -> None:
    z = space.sample(500, np.random.default_rng(2))
    assert z.shape == (500, DIM) and np.abs(z).max() < PRIOR_BOUND
    p = space.project(np.array([[np.nan, np.inf, -9.0, 0.5, 1.0, 2.0, 3.0, -3.5]]))
    np.testing.assert_array_equal(p, [[0.0, 0.0, -3.0, 0.5, 1.0, 2.0, 3.0, -3.0]])
    with pytest.raises(LatentSpaceError, match=rf"\(\.\.\., {DIM}\)"):
        space.project(np.zeros(DIM + 1))


def test_registry_builds_the_diffusion_backend(pipeline_dir: Path) -> None:
    built = create_latent_space("diffusion", path=pipeline_dir, dim=DIM, num_inference_steps=1)
    assert isinstance(built, DiffusionFaceSpace) and built.num_inference_steps == 1
