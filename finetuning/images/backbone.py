"""Image embedding backbones loaded from a weights directory, behind one small interface.

``load_backbone(directory)`` recognises three layouts:

- ours: ``clicktune_image_backbone.json`` (``{"kind": "small_cnn", "config": {...}}``) plus
  ``model.safetensors`` — the small CNN used by the digits demo and the tests;
- Hugging Face CLIP: ``config.json`` with ``model_type`` ``clip_vision_model``
  (``CLIPVisionModelWithProjection``) or ``clip`` (``CLIPModel``, image tower only), with the
  normalisation read from ``preprocessor_config.json`` when present;
- timm: ``config.json`` with an ``architecture`` key plus ``model.safetensors`` /
  ``pytorch_model.bin`` (needs the optional ``timm`` package).

Every backbone maps a float batch ``(n, C, H, W)`` in ``[0, 1]`` (any size, 1 or 3 channels)
to embeddings ``(n, dim)``; :meth:`ImageEmbeddingBackbone.prepare` resizes, adapts channels and
normalises. ``save(directory)`` writes the same layout back, so an optimized backbone loads
like the original. Nothing is pickled.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

BACKBONE_CONFIG_FILE = "clicktune_image_backbone.json"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ImageEmbeddingBackbone(nn.Module, ABC):
    """An image tower. Subclasses set ``kind``, ``image_size``, ``in_channels``, ``mean``, ``std``."""

    kind: str = "abstract"
    image_size: int = 224
    in_channels: int = 3
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)

    @abstractmethod
    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Embeddings of an already prepared batch (``prepare`` output)."""

    @abstractmethod
    def save(self, directory: str | Path) -> Path: ...

    @property
    @abstractmethod
    def embedding_dim(self) -> int: ...

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """``(n, C, H, W)`` floats in [0, 1] → resized, channel-adapted, normalised pixel values."""
        images = images.float()
        if images.dim() == 3:
            images = images.unsqueeze(1)
        if images.shape[1] != self.in_channels:
            if images.shape[1] == 1:
                images = images.expand(-1, self.in_channels, -1, -1)
            elif self.in_channels == 1:
                images = images.mean(dim=1, keepdim=True)
            else:
                raise ValueError(f"cannot adapt {images.shape[1]} channels to {self.in_channels}")
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        mean = torch.tensor(self.mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
        return (images - mean) / std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(self.prepare(images))

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Embeddings of ``images`` without gradients, in eval mode, on the backbone's device (CPU out)."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        try:
            parts = [self(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(parts) if parts else torch.empty(0, self.embedding_dim)


def _write_json(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2))


class SmallCNN(ImageEmbeddingBackbone):
    """Three conv blocks + a linear projection; a fast backbone for small images (digits)."""

    kind = "small_cnn"

    def __init__(self, in_channels: int = 1, image_size: int = 32, width: int = 32, dim: int = 64,
                 mean: tuple[float, ...] = (0.5,), std: tuple[float, ...] = (0.5,)) -> None:
        super().__init__()
        self.in_channels, self.image_size, self.width, self.dim = in_channels, image_size, width, dim
        self.mean, self.std = tuple(mean), tuple(std)

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))

        self.features = nn.Sequential(
            block(in_channels, width), nn.MaxPool2d(2),
            block(width, 2 * width), nn.MaxPool2d(2),
            block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.projection = nn.Linear(4 * width, dim)

    @property
    def embedding_dim(self) -> int:
        return self.dim

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.projection(self.features(pixel_values))

    def config(self) -> dict[str, Any]:
        return {"in_channels": self.in_channels, "image_size": self.image_size, "width": self.width,
                "dim": self.dim, "mean": list(self.mean), "std": list(self.std)}

    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous().cpu() for k, v in self.state_dict().items()}, str(directory / "model.safetensors"))
        _write_json(directory / BACKBONE_CONFIG_FILE, {"kind": self.kind, "config": self.config()})
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "SmallCNN":
        from safetensors.torch import load_file

        directory = Path(directory)
        config = json.loads((directory / BACKBONE_CONFIG_FILE).read_text())["config"]
        model = cls(**config)
        model.load_state_dict(load_file(str(directory / "model.safetensors")))
        return model


class HFClipVisionBackbone(ImageEmbeddingBackbone):
    """The image tower of a Hugging Face CLIP checkpoint (projected ``image_embeds``)."""

    kind = "hf_clip"

    def __init__(self, model: nn.Module, mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD) -> None:
        super().__init__()
        self.model = model
        config = model.config
        vision = getattr(config, "vision_config", config)
        self.image_size = int(vision.image_size)
        self.in_channels = int(getattr(vision, "num_channels", 3))
        self.mean, self.std = tuple(mean), tuple(std)
        self._full_clip = hasattr(model, "get_image_features")
        self._dim = int(getattr(config, "projection_dim", vision.hidden_size))

    @property
    def embedding_dim(self) -> int:
        return self._dim

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self._full_clip:
            features = self.model.get_image_features(pixel_values=pixel_values)
            return getattr(features, "pooler_output", features)
        return self.model(pixel_values=pixel_values).image_embeds

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        self.model.save_pretrained(directory)
        _write_json(directory / "preprocessor_config.json", {"image_mean": list(self.mean), "image_std": list(self.std),
                                                              "crop_size": self.image_size})
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "HFClipVisionBackbone":
        from transformers import CLIPModel, CLIPVisionModelWithProjection

        directory = Path(directory)
        model_type = json.loads((directory / "config.json").read_text()).get("model_type")
        model = (CLIPModel if model_type == "clip" else CLIPVisionModelWithProjection).from_pretrained(directory)
        mean, std = CLIP_MEAN, CLIP_STD
        preprocessor = directory / "preprocessor_config.json"
        if preprocessor.exists():
            values = json.loads(preprocessor.read_text())
            mean, std = tuple(values.get("image_mean", mean)), tuple(values.get("image_std", std))
        return cls(model, mean=mean, std=std)


class TimmBackbone(ImageEmbeddingBackbone):
    """A timm model saved in timm's hub layout (``config.json`` with ``architecture``); pooled
    features (``num_classes=0``) are the embedding. Requires the optional ``timm`` package."""

    kind = "timm"

    def __init__(self, model: nn.Module, config: dict[str, Any]) -> None:
        super().__init__()
        self.model, self.timm_config = model, config
        pretrained = config.get("pretrained_cfg", config)
        size = pretrained.get("input_size", [3, 224, 224])
        self.in_channels, self.image_size = int(size[0]), int(size[-1])
        self.mean = tuple(pretrained.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(pretrained.get("std", (0.229, 0.224, 0.225)))

    @property
    def embedding_dim(self) -> int:
        return int(self.model.num_features)

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values)

    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous().cpu() for k, v in self.model.state_dict().items()}, str(directory / "model.safetensors"))
        _write_json(directory / "config.json", {**self.timm_config, "num_classes": 0})
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "TimmBackbone":
        try:
            import timm
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError("a timm weights directory needs the optional 'timm' package") from error
        directory = Path(directory)
        config = json.loads((directory / "config.json").read_text())
        model = timm.create_model(config["architecture"], pretrained=False, num_classes=0)
        weights = directory / "model.safetensors"
        if weights.exists():
            from safetensors.torch import load_file

            state = load_file(str(weights))
        else:
            state = torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith(model.default_cfg.get("classifier", "head"))}, strict=False)
        return cls(model, config)


def detect_layout(directory: str | Path) -> str:
    """``small_cnn`` | ``hf_clip`` | ``timm``, from the files in ``directory``."""
    directory = Path(directory)
    if (directory / BACKBONE_CONFIG_FILE).exists():
        return json.loads((directory / BACKBONE_CONFIG_FILE).read_text())["kind"]
    config_path = directory / "config.json"
    if config_path.exists():
        config = json.loads(config_path.read_text())
        if config.get("model_type") in ("clip", "clip_vision_model"):
            return "hf_clip"
        if "architecture" in config:
            return "timm"
    raise ValueError(f"{directory} is not a known image backbone layout (ours, HF CLIP, timm)")


BACKBONE_KINDS: dict[str, type[ImageEmbeddingBackbone]] = {
    "small_cnn": SmallCNN,
    "hf_clip": HFClipVisionBackbone,
    "timm": TimmBackbone,
}


def load_backbone(directory: str | Path) -> ImageEmbeddingBackbone:
    """Load any supported backbone layout (see the module docstring)."""
    return BACKBONE_KINDS[detect_layout(directory)].load(directory)  # type: ignore[attr-defined]
