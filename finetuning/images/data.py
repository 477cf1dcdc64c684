"""Labelled image sets, the class mapping, and a stratified train / validation / test split.

Images are held as one float tensor ``(n, C, H, W)`` in ``[0, 1]``; labels as class indices into
a :class:`ClassMapping` (index ↔ class name, saved as ``class_mapping.json``).

- :func:`load_digits_dataset`: scikit-learn's ``load_digits`` (1,797 real 8×8 digit images),
- :func:`load_image_folder`: ``root/<class name>/<image files>`` read with Pillow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class ClassMapping:
    """Class names in index order."""

    names: tuple[str, ...]

    @classmethod
    def from_labels(cls, labels: list[str]) -> "ClassMapping":
        return cls(tuple(sorted(set(labels))))

    def index(self, name: str) -> int:
        return self.names.index(name)

    def name(self, index: int) -> str:
        return self.names[index]

    def to_dict(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self.names)}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "ClassMapping":
        mapping = json.loads(Path(path).read_text())
        return cls(tuple(name for name, _ in sorted(mapping.items(), key=lambda item: item[1])))


@dataclass
class LabelledImages:
    images: torch.Tensor  # (n, C, H, W) float in [0, 1]
    labels: torch.Tensor  # (n,) long class indices
    classes: ClassMapping

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: np.ndarray | list[int] | torch.Tensor) -> "LabelledImages":
        index = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return LabelledImages(self.images[index], self.labels[index], self.classes)

    def only_classes(self, names: list[str]) -> "LabelledImages":
        wanted = torch.tensor([self.classes.index(name) for name in names])
        return self.subset(torch.nonzero(torch.isin(self.labels, wanted)).flatten())


@dataclass
class Splits:
    train: LabelledImages
    val: LabelledImages
    test: LabelledImages


def stratified_split(data: LabelledImages, val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0) -> Splits:
    """Train / validation / test, each with the class proportions of ``data`` (seeded)."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(data))
    labels = data.labels.numpy()
    rest, test = train_test_split(indices, test_size=test_fraction, stratify=labels, random_state=seed)
    train, val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction), stratify=labels[rest], random_state=seed)
    return Splits(data.subset(train), data.subset(val), data.subset(test))


def load_digits_dataset() -> LabelledImages:
    """scikit-learn's 8×8 digits (values 0–16) as ``(1797, 1, 8, 8)`` in [0, 1], classes ``"0"``…``"9"``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    classes = ClassMapping(tuple(str(i) for i in range(10)))
    return LabelledImages(images, torch.tensor(digits.target, dtype=torch.long), classes)


def load_image_folder(root: str | Path, image_size: int = 224, channels: int = 3) -> LabelledImages:
    """``root/<class>/<file>`` images, resized to ``image_size`` squares, ``channels`` 1 (L) or 3 (RGB)."""
    from PIL import Image

    root = Path(root)
    class_dirs = sorted(path for path in root.iterdir() if path.is_dir())
    classes = ClassMapping(tuple(path.name for path in class_dirs))
    images, labels = [], []
    for index, class_dir in enumerate(class_dirs):
        for file in sorted(class_dir.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            with Image.open(file) as image:
                image = image.convert("L" if channels == 1 else "RGB").resize((image_size, image_size))
                array = np.asarray(image, dtype=np.float32) / 255.0
            images.append(torch.from_numpy(array).reshape(image_size, image_size, -1).permute(2, 0, 1))
            labels.append(index)
    if not images:
        raise ValueError(f"no images found under {root}")
    return LabelledImages(torch.stack(images), torch.tensor(labels, dtype=torch.long), classes)
