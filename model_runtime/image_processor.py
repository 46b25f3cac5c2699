"""Kimi-VL image preprocessing: PIL image -> MoonViT patches, with numpy only (no torch here).

Per image: downscale (PIL bicubic, never upscale) when the 14-px patch count exceeds
`in_token_limit`; zero-pad right/bottom to multiples of 28 (on the PIL image, before RGB
conversion, like torchvision's `pad`); scale to [0, 1]; normalise with mean/std; cut into
14x14 channel-first patches in raster order. `num_image_tokens` is the same arithmetic without
pixels, shared with the processor and tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from kimi_agent.errors import AgentError, ConfigError
from kimi_agent.model_runtime.config import MAX_MERGE_KERNEL, VISION_LIMITS, read_json_object

POS_TABLE_SIZE = 512  # MoonViT's 2D RoPE table covers grids up to 511 x 511 patches
MAX_PATCH_SIZE = VISION_LIMITS["patch_size"][1]
# Pixels of one image after the token-limit downscale: in_token_limit x patch_size^2 is at most this
# (Kimi-VL: 4096 x 196 = 0.8 M; a 16x raised limit still fits). Each pixel costs 12 bytes as float32 RGB.
MAX_IMAGE_PIXELS = 1 << 25


class ImageSizeError(AgentError, ValueError):
    """An image's patch grid does not fit MoonViT's position table (>= 512 patches a side)."""


@dataclass(frozen=True, slots=True)
class PreprocessorConfig:
    """`preprocessor_config.json` of a Kimi-VL checkpoint (unknown keys ignored).

    in_token_limit: most 14-px patches before downscaling (4096 for A3B-Instruct).
    patch_size: patch side in pixels. merge_kernel_size: (rows, cols) of patches merged into one
    LM token. image_mean/image_std: per-channel normalisation of [0, 1] values.
    """

    in_token_limit: int = 4096
    patch_size: int = 14
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    merge_kernel_size: tuple[int, int] = (2, 2)

    def __post_init__(self) -> None:
        if not 1 <= self.patch_size <= MAX_PATCH_SIZE:
            raise ConfigError(f"key 'patch_size' must be in [1, {MAX_PATCH_SIZE}], got {self.patch_size:,}")
        check_token_limit(self.in_token_limit, self.patch_size, "key 'in_token_limit'")
        merge = self.merge_kernel_size
        if len(merge) != 2 or not all(1 <= m <= MAX_MERGE_KERNEL for m in merge):
            raise ConfigError(f"key 'merge_kernel_size' must be two ints in [1, {MAX_MERGE_KERNEL}], got {merge}")
        if not all(math.isfinite(m) for m in self.image_mean):
            raise ConfigError(f"key 'image_mean' must hold finite numbers, got {list(self.image_mean)}")
        if not all(math.isfinite(s) and s > 0 for s in self.image_std):
            raise ConfigError(f"key 'image_std' must hold finite numbers > 0, got {list(self.image_std)}")

    @classmethod
    def from_file(cls, path: str | Path) -> PreprocessorConfig:
        """Parse `preprocessor_config.json`; a missing or invalid key raises `ConfigError` naming
        the key and file. `merge_kernel_size` defaults to [2, 2] (the official file omits it)."""
        path = Path(path)
        raw = read_json_object(path)
        if raw.get("pad_input", True) is not True:
            raise ConfigError(f"{path}: key 'pad_input' must be true (center-crop mode is not supported).")
        try:
            return cls(
                in_token_limit=_int(raw, "in_token_limit", path),
                patch_size=_int(raw, "patch_size", path),
                image_mean=_floats(raw, "image_mean", path, 3),
                image_std=_floats(raw, "image_std", path, 3),
                merge_kernel_size=_ints2(raw.get("merge_kernel_size", [2, 2]), "merge_kernel_size", path),
            )
        except ConfigError as e:
            if str(path) in str(e):
                raise
            raise ConfigError(f"{path}: {e}") from None


def _int(raw: dict[str, Any], key: str, path: Path) -> int:
    if key not in raw:
        raise ConfigError(f"{path}: key {key!r} is missing.")
    v = raw[key]
    if not isinstance(v, int) or isinstance(v, bool):
        raise ConfigError(f"{path}: key {key!r} must be an integer, got {v!r}.")
    return v


def _floats(raw: dict[str, Any], key: str, path: Path, n: int) -> tuple[float, float, float]:
    if key not in raw:
        raise ConfigError(f"{path}: key {key!r} is missing.")
    v = raw[key]
    ok = isinstance(v, list) and len(v) == n and all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in v)
    if not ok:
        raise ConfigError(f"{path}: key {key!r} must be a list of {n} numbers, got {v!r}.")
    return (float(v[0]), float(v[1]), float(v[2]))


def check_token_limit(limit: int, patch_size: int, what: str = "in_token_limit") -> int:
    """`limit` (14-px patches per image), unless it is < 1 or lets one image reach `MAX_IMAGE_PIXELS`."""
    most = min(MAX_IMAGE_PIXELS // (patch_size * patch_size), (POS_TABLE_SIZE - 1) ** 2)
    if not 1 <= limit <= most:
        raise ConfigError(f"{what} must be in [1, {most:,}] for {patch_size}-px patches (at most "
                          f"{MAX_IMAGE_PIXELS:,} pixels an image), got {limit:,}")
    return limit


def _ints2(v: Any, key: str, path: Path) -> tuple[int, int]:
    if not (isinstance(v, list | tuple) and len(v) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v)):
        raise ConfigError(f"{path}: key {key!r} must be two positive integers, got {v!r}.")
    return (v[0], v[1])


def resized_size(width: int, height: int, *, in_token_limit: int = 4096, patch_size: int = 14) -> tuple[int, int]:
    """(width, height) in pixels after the token-limit downscale (unchanged if within the limit)."""
    patches = (width // patch_size) * (height // patch_size)
    if patches <= in_token_limit:
        return width, height
    scale = math.sqrt(in_token_limit / patches)
    return int(width * scale), int(height * scale)


def image_grid(width: int, height: int, *, in_token_limit: int = 4096, patch_size: int = 14,
               merge: int = 2) -> tuple[int, int]:
    """Patch grid (rows h, cols w) MoonViT sees for a `width` x `height` pixel image.

    Raises `ImageSizeError` when a side reaches 512 patches (the position table's size).
    """
    if width < 1 or height < 1:
        raise ImageSizeError(f"image size must be positive, got {width}x{height}")
    w, h = resized_size(width, height, in_token_limit=in_token_limit, patch_size=patch_size)
    unit = merge * patch_size
    grid_h, grid_w = -(-h // unit) * merge, -(-w // unit) * merge  # padded up to multiples of `unit` px
    if grid_h >= POS_TABLE_SIZE or grid_w >= POS_TABLE_SIZE:
        raise ImageSizeError(
            f"a {width}x{height} image gives a {grid_h}x{grid_w} patch grid, which exceeds the position "
            f"table ({POS_TABLE_SIZE - 1} patches a side max); crop it or lower in_token_limit "
            f"({in_token_limit}).")
    return grid_h, grid_w


def num_image_tokens(width: int, height: int, in_token_limit: int = 4096, patch_size: int = 14,
                     merge: int = 2) -> int:
    """LM tokens (`<|media_pad|>` copies) for a `width` x `height` pixel image.

    1920x1080 -> 1032, 1024x768 -> 1036, 448x448 -> 256 at the default limit of 4096 patches.
    """
    gh, gw = image_grid(width, height, in_token_limit=in_token_limit, patch_size=patch_size, merge=merge)
    return (gh // merge) * (gw // merge)


def pad_right_bottom(image: Image.Image, pad_w: int, pad_h: int) -> Image.Image:
    """Zero-pad a PIL image on the right and bottom, with torchvision `pad(img, (0, 0, pad_w,
    pad_h))` semantics: fill 0 in every band of the image's own mode (palette index 0 for "P")."""
    if pad_w == 0 and pad_h == 0:
        return image
    bands = len(image.getbands())
    fill: float | tuple[float, ...] = (0,) * bands if bands > 1 else 0
    if image.mode == "F":
        fill = 0.0
    # PIL's annotation of `fill` leaves out the float fill that mode "F" takes
    out = ImageOps.expand(image, border=(0, 0, pad_w, pad_h), fill=fill)  # type: ignore[arg-type]
    if image.mode == "P":
        out.putpalette(image.getpalette())  # type: ignore[arg-type]
    return out


@dataclass(frozen=True, slots=True)
class ImageBatch:
    """Preprocessed images, ready for the vision tower.

    pixel_values: float32 [L, 3, p, p], all images' patches concatenated, each image row-major
    (patch r*w + c holds pixel rows p*r.., cols p*c..). image_grid_hws: int64 [N, 2] (h, w) per image.
    """

    pixel_values: np.ndarray
    image_grid_hws: np.ndarray
    merge: int = 2  # patch-merger side: merge x merge patches become one LM token

    @property
    def num_tokens(self) -> list[int]:
        """LM tokens per image, (h/merge)(w/merge)."""
        return [int(h // self.merge) * int(w // self.merge) for h, w in self.image_grid_hws]


class ImageProcessor:
    """Kimi-VL image preprocessing with a given config; `in_token_limit` may be overridden (e.g.
    raised for high-resolution screens, up to what MoonViT's 512x512 position table allows)."""

    def __init__(self, config: PreprocessorConfig | None = None, *, in_token_limit: int | None = None) -> None:
        self.config = config or PreprocessorConfig()
        limit = self.config.in_token_limit if in_token_limit is None else in_token_limit
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise ConfigError(f"in_token_limit must be an integer, got {limit!r}")
        self.in_token_limit = check_token_limit(limit, self.config.patch_size)
        p = self.config.patch_size
        self._mean = np.asarray(self.config.image_mean, dtype=np.float32)[:, None]  # [3, 1]
        self._std = np.asarray(self.config.image_std, dtype=np.float32)[:, None]
        self._unit = self.config.merge_kernel_size[0] * p
        if self.config.merge_kernel_size[0] != self.config.merge_kernel_size[1]:
            raise ConfigError(f"merge_kernel_size must be square, got {self.config.merge_kernel_size}")

    @classmethod
    def from_dir(cls, path: str | Path, *, in_token_limit: int | None = None) -> ImageProcessor:
        """Read `preprocessor_config.json` from a checkpoint directory."""
        return cls(PreprocessorConfig.from_file(Path(path) / "preprocessor_config.json"), in_token_limit=in_token_limit)

    def num_image_tokens(self, width: int, height: int) -> int:
        """LM tokens for a `width` x `height` image under this processor's settings."""
        return num_image_tokens(width, height, self.in_token_limit, self.config.patch_size,
                                self.config.merge_kernel_size[0])

    def prepare(self, image: Image.Image) -> Image.Image:
        """Downscale and pad one PIL image (mode preserved); its size is a multiple of 28 px."""
        p = self.config.patch_size
        w, h = image.size
        image_grid(w, h, in_token_limit=self.in_token_limit, patch_size=p,
                   merge=self.config.merge_kernel_size[0])  # raises early on oversized grids
        nw, nh = resized_size(w, h, in_token_limit=self.in_token_limit, patch_size=p)
        if (nw, nh) != (w, h):
            image = image.resize((nw, nh), Image.Resampling.BICUBIC)
        u = self._unit
        return pad_right_bottom(image, (u - nw % u) % u, (u - nh % u) % u)

    def patchify(self, image: Image.Image) -> tuple[np.ndarray, tuple[int, int]]:
        """One prepared image -> (float32 patches [h*w, 3, p, p], (h, w))."""
        p = self.config.patch_size
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)  # [H, W, 3]
        H, W, _ = rgb.shape
        gh, gw = H // p, W // p
        patches = rgb.reshape(gh, p, gw, p, 3).transpose(0, 2, 4, 1, 3)  # [h, w, 3, p, p] uint8 view
        # torchvision's op order, all float32: to_tensor (x / 255), then normalize ((x - mean) / std).
        out = patches.astype(np.float32).reshape(gh * gw, 3, p * p)  # contiguous copy in patch layout
        out /= np.float32(255)
        out -= self._mean
        out /= self._std
        return out.reshape(gh * gw, 3, p, p), (gh, gw)

    def __call__(self, images: Sequence[Image.Image]) -> ImageBatch:
        """Preprocess images in order; see `ImageBatch` for shapes."""
        p = self.config.patch_size
        chunks, grids = [], []
        for img in images:
            if not isinstance(img, Image.Image):
                raise TypeError(f"images must be PIL images, got {type(img).__name__}")
            patches, grid = self.patchify(self.prepare(img))
            chunks.append(patches)
            grids.append(grid)
        pixels = np.concatenate(chunks) if chunks else np.zeros((0, 3, p, p), dtype=np.float32)
        return ImageBatch(pixel_values=pixels, image_grid_hws=np.asarray(grids, dtype=np.int64).reshape(-1, 2),
                          merge=self.config.merge_kernel_size[0])
