"""Labelled image sets, the class mapping, and a stratified train / validation / test split.

Images are held as one float tensor ``(n, C, H, W)`` in ``[0, 1]``; labels as class indices into
a :class:`ClassMapping` (index ↔ class name, saved as ``class_mapping.json``).

- :func:`load_digits_dataset`: scikit-learn's ``load_digits`` (1,797 real 8×8 digit images),
- :func:`load_image_folder`: ``root/<class name>/<image files>`` read with Pillow.

The same images one by one, as the labelled-image optimizer's users hold them: a list of
:class:`LabelledImage` (``id``, ``image_data``, ``object_class``; ``IRImage`` is the same
class under the name their scripts import), wrapped for torch by :class:`IRImageDataset`.
:meth:`LabelledImages.records` and :meth:`LabelledImages.from_records` convert between both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

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

    def records(self, id_prefix: str = "img") -> list["LabelledImage"]:
        """One :class:`LabelledImage` per image, ids ``{id_prefix}_{index}``."""
        return [LabelledImage(f"{id_prefix}_{index}", self.images[index], self.classes.name(int(label)))
                for index, label in enumerate(self.labels.tolist())]

    @classmethod
    def from_records(cls, records: Sequence["LabelledImage"], classes: "ClassMapping | None" = None) -> "LabelledImages":
        """Stack ``records`` (all of one size) into one tensor; ``classes`` defaults to their sorted names."""
        if not records:
            raise ValueError("no images given")
        classes = classes or ClassMapping.from_labels([record.object_class for record in records])
        images = torch.stack([image_tensor(record.image_data) for record in records])
        labels = torch.tensor([classes.index(record.object_class) for record in records], dtype=torch.long)
        return cls(images, labels, classes)


def image_tensor(image: Any) -> torch.Tensor:
    """One image as a float ``(C, H, W)`` tensor in [0, 1]. Accepts numpy arrays or tensors shaped
    ``(H, W)``, ``(C, H, W)`` or ``(H, W, C)`` (channels-last when the last axis is 1, 3 or 4 and
    the first is neither 1 nor 3; a fourth, alpha channel is dropped). Integer pixels are read as 8-bit (scaled by 1/255); floats are
    taken as already in [0, 1]."""
    tensor = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image)
    integer = not tensor.is_floating_point()
    tensor = tensor.float()
    if tensor.dim() == 2:
        tensor = tensor.unsqueeze(0)
    elif tensor.dim() == 3 and tensor.shape[0] not in (1, 3) and tensor.shape[-1] in (1, 3, 4):
        tensor = tensor.permute(2, 0, 1)
    if tensor.dim() != 3:
        raise ValueError(f"expected one image (H, W), (C, H, W) or (H, W, C), got shape {tuple(tensor.shape)}")
    if tensor.shape[0] == 4:  # RGBA: drop alpha
        tensor = tensor[:3]
    if integer:
        tensor = tensor / 255.0
    return tensor.contiguous()


@dataclass
class LabelledImage:
    """One labelled image: ``image_data`` (array or tensor, see :func:`image_tensor`) of class
    ``object_class``; ``id`` names it in the similarity searcher's collection."""

    id: str
    image_data: Any
    object_class: str


IRImage = LabelledImage


class IRImageDataset(Dataset):
    """A torch dataset of :class:`LabelledImage`: item ``i`` is ``(image (C, H, W) float, label index)``.

    ``transform`` is applied to the ``image_data`` before it becomes a tensor; the label indices
    follow ``class_to_idx`` (default: the sorted class names of ``images``), so a training and a
    validation set can share one mapping.
    """

    def __init__(self, images: Sequence[LabelledImage], transform: Callable[[Any], Any] | None = None,
                 class_to_idx: dict[str, int] | None = None) -> None:
        self.images = list(images)
        self.transform = transform
        self.class_to_idx = class_to_idx if class_to_idx is not None else self._build_class_mapping()

    def _build_class_mapping(self) -> dict[str, int]:
        """Class name → index over the sorted class names of this dataset's images."""
        return ClassMapping.from_labels([image.object_class for image in self.images]).to_dict()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        data = self.transform(image.image_data) if self.transform is not None else image.image_data
        return image_tensor(data), self.class_to_idx[image.object_class]

    def to_labelled_images(self) -> LabelledImages:
        """All items stacked (after ``transform``), with this dataset's class mapping."""
        names = tuple(name for name, _ in sorted(self.class_to_idx.items(), key=lambda item: item[1]))
        if len(self) == 0:
            raise ValueError("no images given")
        items = [self[index] for index in range(len(self))]
        return LabelledImages(torch.stack([image for image, _ in items]),
                              torch.tensor([label for _, label in items], dtype=torch.long), ClassMapping(names))


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
