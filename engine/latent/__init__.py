"""Face generators: the ``LatentSpace`` contract, its backends and a registry.

``DiffusionFaceSpace`` and ``save_random_pipeline`` are imported on first use, so importing this
package (and rendering procedural faces) does not pay the seconds-long import of diffusers.
"""

from __future__ import annotations

import importlib
from typing import Any

from engine._validation import InvalidInputError
from engine.latent.base import PRIOR_BOUND, LatentSpace, LatentSpaceError
from engine.latent.png import encode_png
from engine.latent.procedural import AGE_INDEX, DIMENSION_NAMES, ProceduralFaceSpace

__all__ = [
    "AGE_INDEX",
    "BACKEND_NAMES",
    "DIMENSION_NAMES",
    "PRIOR_BOUND",
    "DiffusionFaceSpace",
    "LatentSpace",
    "LatentSpaceError",
    "ProceduralFaceSpace",
    "create_latent_space",
    "encode_png",
    "save_random_pipeline",
]

# Registry name -> (module, class name); modules are imported only when a backend is built.
_BACKENDS: dict[str, tuple[str, str]] = {
    "procedural": ("engine.latent.procedural", "ProceduralFaceSpace"),
    "diffusion": ("engine.latent.diffusion", "DiffusionFaceSpace"),
}

#: Names accepted by ``create_latent_space``, sorted (for settings validation and help texts).
BACKEND_NAMES: tuple[str, ...] = tuple(sorted(_BACKENDS))

_LAZY = {"DiffusionFaceSpace": "engine.latent.diffusion", "save_random_pipeline": "engine.latent.diffusion"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def create_latent_space(name: str, **options: Any) -> LatentSpace:
    """Build the backend registered as ``name`` with its keyword-only ``options``.

    Raises
    ------
    InvalidInputError
        If ``name`` is not a registered backend (the message lists the valid ones).
    LatentSpaceError
        If the backend rejects its options or cannot be built.
    """
    if not isinstance(name, str) or name not in _BACKENDS:
        valid = ", ".join(repr(k) for k in BACKEND_NAMES)
        raise InvalidInputError(f"unknown latent space backend {name!r}; valid backends: {valid}")
    module_name, class_name = _BACKENDS[name]
    backend = getattr(importlib.import_module(module_name), class_name)
    return backend(**options)
