"""Faces from an unconditional diffusion model, steered by a low-dimensional latent.

A ``d``-dimensional latent ``z`` is mapped into the model's initial noise ``x_T`` of shape
``(1, C, H, W)`` through a fixed basis ``B`` of ``N = C * H * W`` rows and ``d`` orthonormal
columns (QR of a Gaussian drawn from ``basis_seed``)::

    x_T = sqrt(N / d) * B @ z

so that ``E ||x_T||^2 = N`` for ``z ~ N(0, I_d)``, the squared norm of standard Gaussian noise
the model was trained to denoise (unit variance per element on average over elements and over
basis draws). DDIM with ``eta = 0`` then makes sampling a deterministic function of ``z``.

The pipeline is read from a local directory only (``local_files_only=True``, and the path must
exist before diffusers is asked); nothing is ever downloaded. ``save_random_pipeline`` writes a
tiny randomly initialised pipeline for tests and benchmarks.

Safety limitation: an unconditional diffusion model has no coordinate we can read as apparent
age. By convention coordinate 0 is *named* ``apparent_age`` and the procedural rule applies to it
(``39 + 13 * z_0 < 18`` is in the safety region), but nothing makes the rendered face look that
age. A deployment must pass ``safety_classifier`` (for example an age estimator run on renders
and cached per latent); its verdict is OR-ed into ``in_safety_region``. Without one, this backend
is only fit for development and benchmarks.

Determinism: identical latents give bit-identical pixels on one machine and thread count; CUDA
kernels and different CPU thread counts may differ in the last bits, which changes PNG bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel
from PIL import Image

from engine.latent._prior import (
    apparent_age_from_coordinate,
    check_batch,
    check_single,
    project_into_box,
    sample_truncated_prior,
    underage_or_invalid,
)
from engine.latent.base import LatentSpaceError

__all__ = ["DiffusionFaceSpace", "SafetyClassifier", "save_random_pipeline"]

#: Maps latents of shape ``(n, dim)`` to a boolean mask of shape ``(n,)``: True = never show.
SafetyClassifier = Callable[[np.ndarray], np.ndarray]

_OUT = 256


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise LatentSpaceError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _load_components(path: Path) -> tuple[UNet2DModel, DDIMScheduler]:
    """Load the UNet and a DDIM scheduler from a pipeline directory, offline."""
    if not path.is_dir():
        raise LatentSpaceError(f"path must be an existing pipeline directory, got {str(path)!r}")
    unet_config = path / "unet" / "config.json"
    scheduler_config = path / "scheduler" / "scheduler_config.json"
    if not unet_config.is_file() or not scheduler_config.is_file():
        raise LatentSpaceError(
            f"path {str(path)!r} is not a diffusers pipeline: expected unet/config.json and "
            "scheduler/scheduler_config.json"
        )
    try:
        class_name = json.loads(unet_config.read_text(encoding="utf-8")).get("_class_name")
    except (OSError, ValueError, AttributeError) as exc:
        raise LatentSpaceError(f"cannot read {str(unet_config)!r}: {exc}") from exc
    if class_name != "UNet2DModel":
        raise LatentSpaceError(f"the pipeline's unet must be an unconditional UNet2DModel, got {class_name!r}")
    try:
        # low_cpu_mem_usage=False: the same loading path whether or not accelerate is installed.
        unet = UNet2DModel.from_pretrained(path, subfolder="unet", local_files_only=True, low_cpu_mem_usage=False)
        config = DDIMScheduler.load_config(path, subfolder="scheduler", local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise LatentSpaceError(f"cannot load the pipeline at {str(path)!r}: {exc}") from exc
    # Any scheduler trained on the same betas (DDPM, DDIM, ...) can be sampled with DDIM.
    return unet, DDIMScheduler.from_config(config)


def _noise_basis(n_elements: int, dim: int, seed: int) -> np.ndarray:
    """Columns of an ``(n_elements, dim)`` orthonormal matrix, unique for the seed."""
    gaussian = np.random.default_rng(seed).standard_normal((n_elements, dim))
    q, r = np.linalg.qr(gaussian)
    signs = np.where(np.diag(r) < 0.0, -1.0, 1.0)  # make QR unique regardless of the LAPACK build
    return q * signs


class DiffusionFaceSpace:
    """Faces from a local unconditional diffusion pipeline (UNet2DModel + DDIM, ``eta = 0``).

    Parameters
    ----------
    path : str or Path
        Directory written by ``DiffusionPipeline.save_pretrained`` holding ``unet/`` (an
        unconditional ``UNet2DModel`` with 1 or 3 channels) and ``scheduler/``.
    dim : int
        Latent dimension ``d``; at most the number of noise elements.
    num_inference_steps : int
        DDIM steps per face.
    basis_seed : int
        Seed of the fixed noise basis; changing it changes every face.
    device : str or torch.device, optional
        Defaults to ``"cuda"`` when available, else ``"cpu"``.
    safety_classifier : callable, optional
        ``(n, dim)`` latents to an ``(n,)`` boolean mask OR-ed into ``in_safety_region``.

    Raises
    ------
    LatentSpaceError
        If the directory is missing or not a loadable unconditional pipeline, or an option is invalid.
    """

    name: str = "diffusion"
    age_index: int = 0

    def __init__(
        self,
        *,
        path: str | Path,
        dim: int = 24,
        num_inference_steps: int = 20,
        basis_seed: int = 0,
        device: str | torch.device | None = None,
        safety_classifier: SafetyClassifier | None = None,
    ) -> None:
        self.dim = _positive_int(dim, "dim")
        self.num_inference_steps = _positive_int(num_inference_steps, "num_inference_steps")
        if isinstance(basis_seed, bool) or not isinstance(basis_seed, (int, np.integer)) or basis_seed < 0:
            raise LatentSpaceError(f"basis_seed must be a non-negative integer, got {basis_seed!r}")
        if safety_classifier is not None and not callable(safety_classifier):
            raise LatentSpaceError(f"safety_classifier must be callable or None, got {safety_classifier!r}")
        try:
            default = "cuda" if torch.cuda.is_available() else "cpu"
            self.device = torch.device(default if device is None else device)
        except (RuntimeError, TypeError) as exc:
            raise LatentSpaceError(f"device must name a torch device, got {device!r}") from exc
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise LatentSpaceError(f"device must be available, got {device!r} but CUDA is not")
        self.path = Path(path)
        self.basis_seed = int(basis_seed)
        self.safety_classifier = safety_classifier

        unet, self._scheduler = _load_components(self.path)
        cfg = unet.config
        if cfg.in_channels != cfg.out_channels or cfg.in_channels not in (1, 3):
            raise LatentSpaceError(
                f"the unet must map 1 or 3 image channels to the same number, got {cfg.in_channels} -> "
                f"{cfg.out_channels} (latent-diffusion pipelines need a VAE and are not supported)"
            )
        size = cfg.sample_size
        if size is None:
            raise LatentSpaceError(f"the unet config at {str(self.path)!r} must set sample_size")
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        self.noise_shape: tuple[int, int, int, int] = (1, cfg.in_channels, height, width)
        n_elements = cfg.in_channels * height * width
        if self.dim > n_elements:
            raise LatentSpaceError(f"dim must be at most the {n_elements} noise elements, got {self.dim}")
        self.dimension_names: tuple[str, ...] = ("apparent_age",) + tuple(
            f"noise_{k:02d}" for k in range(1, self.dim)
        )
        try:
            self._unet = unet.to(self.device).eval()
        except RuntimeError as exc:  # for example a CUDA device ordinal that does not exist
            raise LatentSpaceError(f"device must be available, got {device!r}: {exc}") from exc
        self._scheduler.set_timesteps(self.num_inference_steps, device=self.device)
        basis = _noise_basis(n_elements, self.dim, self.basis_seed) * np.sqrt(n_elements / self.dim)
        self._basis = torch.from_numpy(basis.astype(np.float32)).to(self.device)

    def __repr__(self) -> str:
        return (
            f"DiffusionFaceSpace(path={str(self.path)!r}, dim={self.dim}, "
            f"num_inference_steps={self.num_inference_steps}, basis_seed={self.basis_seed}, "
            f"device={str(self.device)!r})"
        )

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` latents of shape ``(n, dim)`` from the truncated prior (safety not applied)."""
        return sample_truncated_prior(n, self.dim, rng)

    def initial_noise(self, z: np.ndarray) -> torch.Tensor:
        """The DDIM starting point ``x_T`` for one latent of shape ``(dim,)``, shape ``noise_shape``."""
        zt = torch.from_numpy(check_single(z, self.dim).astype(np.float32)).to(self.device)
        noise = (self._basis @ zt).reshape(self.noise_shape)
        return noise * self._scheduler.init_noise_sigma

    @torch.inference_mode()
    def render(self, z: np.ndarray) -> Image.Image:
        """Denoise the latent's initial noise with DDIM (``eta = 0``) into a 256x256 RGB image."""
        x = self.initial_noise(z).to(self._unet.dtype)
        for t in self._scheduler.timesteps:
            eps = self._unet(self._scheduler.scale_model_input(x, t), t).sample
            x = self._scheduler.step(eps, t, x, eta=0.0).prev_sample
        pixels = ((x[0] / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
        array = pixels.permute(1, 2, 0).cpu().numpy()
        image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).convert("RGB")
        return image if image.size == (_OUT, _OUT) else image.resize((_OUT, _OUT), Image.LANCZOS)

    def apparent_age_years(self, z: np.ndarray) -> np.ndarray:
        """Nominal apparent age ``39 + 13 * z[..., 0]`` in years, shape ``z.shape[:-1]`` (see module notes)."""
        return apparent_age_from_coordinate(check_batch(z, self.dim)[..., self.age_index])

    def in_safety_region(self, z: np.ndarray) -> np.ndarray:
        """Age rule on coordinate 0, non-finite values, OR the safety classifier; shape ``z.shape[:-1]``.

        Raises
        ------
        LatentSpaceError
            If the classifier does not return a boolean mask of one entry per latent.
        """
        arr = check_batch(z, self.dim)
        mask = underage_or_invalid(arr, self.age_index)
        if self.safety_classifier is None:
            return mask
        flat = mask.reshape(-1).copy()
        todo = ~flat
        if todo.any():
            verdict = np.asarray(self.safety_classifier(arr.reshape(-1, self.dim)[todo]))
            if verdict.dtype != np.bool_ or verdict.shape != (int(todo.sum()),):
                raise LatentSpaceError(
                    f"safety_classifier must return a boolean mask of shape ({int(todo.sum())},), "
                    f"got dtype {verdict.dtype} and shape {verdict.shape}"
                )
            flat[todo] = verdict
        return flat.reshape(mask.shape)

    def project(self, z: np.ndarray) -> np.ndarray:
        """Clamp ``z`` of shape ``(..., dim)`` into the box; non-finite values become 0."""
        return project_into_box(z, self.dim)


def save_random_pipeline(path: str | Path, *, sample_size: int = 32, seed: int = 0) -> Path:
    """Write a tiny randomly initialised UNet2DModel + DDIMScheduler pipeline to ``path``.

    The UNet has two resolution levels of 4 and 8 channels, one residual layer each, no middle
    block and no attention (7,879 parameters), so tests and benchmarks exercise the real loading
    and DDIM code without weights to download. The global torch RNG is left untouched.

    Raises
    ------
    LatentSpaceError
        If ``sample_size`` is not an even integer of at least 8, or ``seed`` is negative.
    """
    size = _positive_int(sample_size, "sample_size")
    if size < 8 or size % 2:
        raise LatentSpaceError(f"sample_size must be an even integer of at least 8, got {sample_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise LatentSpaceError(f"seed must be a non-negative integer, got {seed!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        unet = UNet2DModel(
            sample_size=size,
            in_channels=3,
            out_channels=3,
            block_out_channels=(4, 8),
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
            mid_block_type=None,
            layers_per_block=1,
            norm_num_groups=2,
        )
    out = Path(path)
    DDIMPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=1000)).save_pretrained(out)
    return out
