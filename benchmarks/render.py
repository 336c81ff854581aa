"""Time per rendered face (render + PNG encode) for each latent-space backend."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.latent import create_latent_space, encode_png
from engine.latent.diffusion import save_random_pipeline
from benchmarks._timing import median_seconds

__all__ = ["run_render_benchmark"]


def _per_face_ms(space: Any, *, faces: int, seed: int) -> float:
    latents = space.sample(faces, np.random.default_rng(seed))
    index = iter(range(10**9))
    return 1000 * median_seconds(lambda: encode_png(space.render(latents[next(index) % faces])), repeats=faces)


def run_render_benchmark(*, faces: int = 50, seed: int = 0) -> dict[str, Any]:
    """Median milliseconds per 256x256 PNG face for the procedural and diffusion backends.

    No pretrained pipeline exists on these machines, so the diffusion figure uses the tiny random
    pipeline the tests build: it measures our overhead plus a very small UNet, not a real model.
    """
    results: dict[str, Any] = {"faces": faces}
    results["procedural"] = {"ms_per_face": _per_face_ms(create_latent_space("procedural"), faces=faces, seed=seed)}
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as directory:
        path = save_random_pipeline(Path(directory) / "pipeline", seed=seed)
        space = create_latent_space("diffusion", path=path)
        # A tiny UNet is dominated by thread hand-offs on a shared CPU: time it on one thread.
        torch.set_num_threads(1)
        try:
            ms = _per_face_ms(space, faces=max(5, faces // 5), seed=seed)
        finally:
            torch.set_num_threads(threads)
        results["diffusion_tiny_random"] = {
            "ms_per_face": ms,
            "torch_threads": 1,
            "pipeline": "tiny random UNet2DModel + DDIMScheduler (tests' fixture), not a trained model",
        }
    return results
