"""Training datasets of GP-UNIT (Sec. 3.2: Stage I prior pairs with instance masks; Sec. 3.3: unpaired Stage II)
and of DeepI2I and BigGAN (labelled class folders).

Preprocessing follows the published code: resize to load_size x load_size (286, bilinear), random-crop
image_size (256), random horizontal flip.

Determinism: an item is a pure function of (dataset seed, index). Every random choice is drawn from a
``torch.Generator`` seeded from both, never from a global RNG, so batches do not depend on the number of
workers and a resumed run sees exactly the data it would have seen. Datasets accept any index i >= 0 (the
loader passes global sample ids ``epoch * len + j``): the item is ``i % len``, the randomness uses all of i.
"""
from __future__ import annotations

import logging
import signal
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from gpunit.data.images import (
    RESIZE_POLICIES,
    filter_readable,
    load_mask,
    load_rgb,
    model_input,
    natural_key,
    scan_images,
    to_tensor,
)

log = logging.getLogger("gpunit.data")


def item_generator(seed: int, index: int) -> torch.Generator:
    """A generator for one item; SeedSequence mixes (seed, index) so nearby pairs give unrelated streams."""
    state = np.random.SeedSequence([seed % 2**64, index]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def _randint(high: int, generator: torch.Generator) -> int:
    """Uniform integer in [0, high)."""
    return int(torch.randint(high, (), generator=generator))


# ----------------------------------------------------------------------------- augmentation
@dataclass(frozen=True)
class CropFlip:
    top: int
    left: int
    flip: bool


@dataclass(frozen=True)
class Augment:
    """Resize + random crop + random flip, with parameters drawn once and applied to an image and its mask.

    load_size > image_size: resize to load_size x load_size, crop image_size at a random position.
    load_size <= image_size (or 0): resize to image_size x image_size, no crop.
    """
    image_size: int
    load_size: int = 0
    flip: bool = True

    @property
    def resize_to(self) -> int:
        return max(self.load_size, self.image_size)

    def sample(self, generator: torch.Generator) -> CropFlip:
        slack = self.resize_to - self.image_size
        top, left = _randint(slack + 1, generator), _randint(slack + 1, generator)
        flip = self.flip and bool(torch.rand((), generator=generator) < 0.5)
        return CropFlip(top, left, flip)

    def __call__(self, img: Image.Image, params: CropFlip) -> Image.Image:
        img = F.resize(img, [self.resize_to] * 2, interpolation=F.InterpolationMode.BILINEAR)
        img = F.crop(img, params.top, params.left, self.image_size, self.image_size)
        return F.horizontal_flip(img) if params.flip else img


# ----------------------------------------------------------------------------- folders and labels
def class_folders(root: str | Path) -> list[str]:
    """Names of the non-hidden sub-folders of ``root`` in natural order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    names = sorted((p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=natural_key)
    if not names:
        raise ValueError(f"no class folders in {root}; expected sub-folders named <label>_<name>, e.g. 3_star")
    return names


def domain_labels(*roots: str | Path | None) -> dict[str, int]:
    """Label of every class folder under the roots (None skipped): its position in the natural-sorted union.

    The numeric prefix of a folder name (``3_star``) only orders the folders; it is not the label.
    """
    names = {name for root in roots if root is not None for name in class_folders(root)}
    return {name: i for i, name in enumerate(sorted(names, key=natural_key))}


def _first_n(paths: list[Path], n: int | None) -> list[Path]:
    return paths[:n] if n else paths


def _collect(folders: Sequence[str | Path], counts: Sequence[int] | None, what: str) -> list[Path]:
    """Images of every folder (recursive, natural order), the first counts[k] of folder k (0 = all)."""
    if isinstance(folders, (str, Path)):
        folders = [folders]
    if not folders:
        raise ValueError(f"no {what} folders given")
    counts = list(counts or [0] * len(folders))
    if len(counts) != len(folders):
        raise ValueError(f"{what}_counts has {len(counts)} entries for {len(folders)} {what} folders; "
                         f"give one count per folder (0 = all) or leave it empty")
    return [p for folder, n in zip(folders, counts) for p in _first_n(scan_images(folder), n)]


def _readable_or_fail(paths: list[Path], what: str) -> list[Path]:
    good, _ = filter_readable(paths)
    if not good:
        raise ValueError(f"none of the {len(paths)} {what} images can be decoded")
    return good


# ----------------------------------------------------------------------------- Stage I
@dataclass(frozen=True)
class _PriorItem:
    domain: int      # index into PriorImageDataset.domains
    stem: str
    image: Path
    mask: Path


class PriorImageDataset(Dataset):
    """Images of labelled class folders with instance masks (Stage I, Sec. 3.2).

    ``<image_root>/<cls>/<stem>.<ext>`` has its mask at ``<mask_root>/<cls>/<stem>.<any image ext>``.
    Each class folder keeps its first ``per_domain`` images (0 = all), or ``domain_counts[cls]`` when named there.
    Items: ``x`` (3,S,S), ``l_x`` (long), ``m_x`` (1,S,S), all images in [-1, 1]. With ``paired=True`` also
    ``y``, ``l_y``, ``m_y``: the same stem (same latent) from another, randomly chosen class folder, with the
    same crop and flip as x.
    """

    def __init__(self, image_root: str | Path, mask_root: str | Path, labels: dict[str, int], image_size: int,
                 load_size: int = 286, flip: bool = True, per_domain: int = 600, paired: bool = False,
                 seed: int = 0, domain_counts: Mapping[str, int] | None = None):
        self.augment = Augment(image_size, load_size, flip)
        self.paired, self.seed = paired, seed
        self.domains = class_folders(image_root)
        unknown = [d for d in self.domains if d not in labels]
        if unknown:
            raise ValueError(f"class folders {unknown} of {image_root} have no label; build the labels with "
                             f"domain_labels() over every data root")
        self.labels = [labels[d] for d in self.domains]
        if paired and len(self.domains) < 2:
            raise ValueError(f"paired data needs at least 2 class folders in {image_root}, found {self.domains}")

        counts = {name: (domain_counts or {}).get(name, per_domain) for name in self.domains}
        items = self._match_masks(Path(image_root), Path(mask_root), counts)
        good, _ = filter_readable([p for it in items for p in (it.image, it.mask)])
        good = set(good)
        items = [it for it in items if it.image in good and it.mask in good]
        if paired:
            items = self._complete_pairs(items, image_root)
        if not items:
            raise ValueError(f"no readable image/mask pairs in {image_root}")
        self.items = items
        self.by_key = {(it.domain, it.stem): it for it in items}

    def _match_masks(self, image_root: Path, mask_root: Path, counts: dict[str, int]) -> list[_PriorItem]:
        if not mask_root.is_dir():
            raise FileNotFoundError(f"mask folder not found: {mask_root}")
        items, missing = [], []
        for d, name in enumerate(self.domains):
            mask_dir = mask_root / name
            masks = {}
            for p in scan_images(mask_dir, recursive=False) if mask_dir.is_dir() else []:
                masks.setdefault(p.stem, p)  # natural order: 0.jpg wins over 0.png
            seen = set()
            for image in _first_n(scan_images(image_root / name, recursive=False), counts[name]):
                if image.stem in seen:  # 0.jpg and 0.png: the same latent twice
                    continue
                seen.add(image.stem)
                if image.stem in masks:
                    items.append(_PriorItem(d, image.stem, image, masks[image.stem]))
                else:
                    missing.append(image)
        if missing:
            examples = ", ".join(str(p) for p in missing[:5])
            raise FileNotFoundError(
                f"{len(missing)} image(s) in {image_root} have no mask under {mask_root} (expected "
                f"<mask_root>/<class>/<stem>.png or .jpg), e.g. {examples}; create the masks or remove the images")
        return items

    def _complete_pairs(self, items: list[_PriorItem], image_root) -> list[_PriorItem]:
        """Keep only stems present in every class folder, so any class can be the partner."""
        stems_per_domain = [{it.stem for it in items if it.domain == d} for d in range(len(self.domains))]
        common = set.intersection(*stems_per_domain)
        kept = [it for it in items if it.stem in common]
        if not kept:
            raise ValueError(f"no file name of {image_root} is present in every class folder, so no pairs; "
                             f"paired data needs <class>/<k>.png for the same k in each class")
        if len(kept) < len(items):
            log.warning("paired data %s: dropping %d of %d images whose file name is missing from another class "
                        "folder", image_root, len(items) - len(kept), len(items))
        return kept

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, item: _PriorItem, params: CropFlip) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image = to_tensor(self.augment(load_rgb(item.image), params))
        mask = to_tensor(self.augment(load_mask(item.mask), params))  # (1, S, S)
        return image, torch.tensor(self.labels[item.domain]), mask

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = item_generator(self.seed, i)
        item = self.items[i % len(self)]
        params = self.augment.sample(g)
        out = dict(zip(("x", "l_x", "m_x"), self._load(item, params)))
        if self.paired:
            other = _randint(len(self.domains) - 1, g)
            other += other >= item.domain  # never the class of x
            out.update(zip(("y", "l_y", "m_y"), self._load(self.by_key[other, item.stem], params)))
        return out


# ----------------------------------------------------------------------------- Stage II
class UnpairedDataset(Dataset):
    """Source image i and a random target image (Stage II, Sec. 3.3): items ``x``, ``y`` (3,S,S) in [-1, 1].

    Each folder is scanned recursively; ``*_counts`` keep the first n images of each folder (0 or empty = all).
    x and y get independent crops and flips: they are independent draws of the two domains. ``same_crop=True``
    gives y the crop and flip of x, as the published loader does (it comes from SPADE's paired loader).
    """

    def __init__(self, source_folders: Sequence[str], target_folders: Sequence[str],
                 source_counts: Sequence[int] | None = None, target_counts: Sequence[int] | None = None,
                 image_size: int = 256, load_size: int = 286, flip: bool = True, seed: int = 0,
                 same_crop: bool = False):
        self.augment = Augment(image_size, load_size, flip)
        self.seed, self.same_crop = seed, same_crop
        self.source = _readable_or_fail(_collect(source_folders, source_counts, "source"), "source")
        self.target = _readable_or_fail(_collect(target_folders, target_counts, "target"), "target")

    def __len__(self) -> int:
        return len(self.source)

    @property
    def len_target(self) -> int:
        return len(self.target)

    def _load(self, path: Path, params: CropFlip) -> torch.Tensor:
        return to_tensor(self.augment(load_rgb(path), params))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = item_generator(self.seed, i)
        params_x = self.augment.sample(g)
        target = self.target[_randint(self.len_target, g)]
        params_y = params_x if self.same_crop else self.augment.sample(g)
        return {"x": self._load(self.source[i % len(self)], params_x), "y": self._load(target, params_y)}


class ImageFolderDataset(Dataset):
    """Images of one or more folders (recursive), items ``x`` (3,S,S) in [-1, 1] and ``path`` (str).

    Used for the target set's style codes and for evaluation; by default a plain resize, no jitter.
    ``resize`` names an inference policy of :func:`gpunit.data.images.model_input` instead ("stretch" gives the
    default's pixels; "published" the authors' float resize).
    """

    def __init__(self, folders: str | Sequence[str], image_size: int, counts: Sequence[int] | None = None,
                 load_size: int = 0, flip: bool = False, seed: int = 0, resize: str | None = None):
        if resize is not None and resize not in RESIZE_POLICIES:
            raise ValueError(f"unknown resize policy {resize!r}; choose one of {', '.join(RESIZE_POLICIES)}")
        if resize is not None and (load_size > image_size or flip):
            raise ValueError("a resize policy is for inference inputs: it takes no load_size crop and no flip")
        self.augment = Augment(image_size, load_size, flip)
        self.seed, self.resize = seed, resize
        self.paths = _readable_or_fail(_collect(folders, counts, "image"), "image")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        path = self.paths[i % len(self)]
        if self.resize is not None:
            return {"x": model_input(load_rgb(path), self.augment.image_size, self.resize), "path": str(path)}
        params = self.augment.sample(item_generator(self.seed, i))
        return {"x": to_tensor(self.augment(load_rgb(path), params)), "path": str(path)}


# ----------------------------------------------------------------------------- DeepI2I and BigGAN
def labelled_classes(root: str | Path, classes: Sequence[str] = ()) -> list[str]:
    """The class names of a labelled folder: its non-hidden sub-folders in natural order, or ``classes``
    (in that order) after checking that each is one of them."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root} (set data.root to a folder of class folders)")
    found = sorted((p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=natural_key)
    if not found:
        raise ValueError(f"no class folders in {root}; expected one sub-folder of images per class, "
                         f"<root>/<class name>/*.png")
    if not classes:
        return found
    missing = [c for c in classes if c not in found]
    if missing:
        raise ValueError(f"classes {missing} have no folder in {root}; it has {found[:20]}"
                         f"{' ...' if len(found) > 20 else ''}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"data.classes lists a class twice: {list(classes)}")
    return [str(c) for c in classes]


class LabelledImageDataset(Dataset):
    """Labelled class folders (DeepI2I, BigGAN): ``<root>/<class>/[<subfolder>/]**/<image>``. The class name is
    the folder name, its label the position in :attr:`class_names`; ``per_class`` keeps the first n images of
    each class in natural order (0 = all).

    Items: ``x`` (3,S,S) in [-1, 1] and its label ``l_x`` (long). With ``with_real=True`` also ``y``, ``l_y``:
    an image drawn uniformly from all images, with its own crop and flip: the discriminator's real batch,
    which the published DeepI2I code draws from a second, independent shuffle of the same data.
    """

    def __init__(self, root: str | Path, image_size: int, load_size: int = 0, flip: bool = True,
                 classes: Sequence[str] = (), per_class: int = 0, subfolder: str = "", seed: int = 0,
                 with_real: bool = False):
        self.augment = Augment(image_size, load_size, flip)
        self.seed, self.with_real = seed, with_real
        self.class_names = labelled_classes(root, classes)
        self.paths: list[Path] = []
        self.labels: list[int] = []
        self.counts: dict[str, int] = {}
        for label, name in enumerate(self.class_names):
            folder = Path(root) / name / subfolder if subfolder else Path(root) / name
            if not folder.is_dir():
                raise FileNotFoundError(f"class folder {folder} not found (data.class_subfolder='{subfolder}')")
            good, _ = filter_readable(_first_n(scan_images(folder), per_class))
            if not good:
                raise ValueError(f"class '{name}' has no readable images in {folder}")
            self.paths += good
            self.labels += [label] * len(good)
            self.counts[name] = len(good)

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, index: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        image = to_tensor(self.augment(load_rgb(self.paths[index]), self.augment.sample(g)))
        return image, torch.tensor(self.labels[index])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = item_generator(self.seed, i)
        x, l_x = self._load(i % len(self), g)
        if not self.with_real:
            return {"x": x, "l_x": l_x}
        y, l_y = self._load(_randint(len(self), g), g)
        return {"x": x, "l_x": l_x, "y": y, "l_y": l_y}


# ----------------------------------------------------------------------------- sampling
class InfiniteSampler(Sampler[int]):
    """Global sample ids forever: epoch e is ``e * length + torch.randperm(length, seed + e)``.

    ``start`` ids are skipped without loading anything, so a resumed run continues the same sequence.
    Each ``iter()`` restarts at ``start``: create one iterator per run.
    """

    def __init__(self, length: int, seed: int, start: int = 0):
        if length <= 0:
            raise ValueError(f"cannot sample from an empty dataset (length {length})")
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.length, self.seed, self.start = length, seed, start

    def __iter__(self) -> Iterator[int]:
        epoch, offset = divmod(self.start, self.length)
        while True:
            order = torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed + epoch))
            for p in order[offset:].tolist():
                yield epoch * self.length + p
            epoch, offset = epoch + 1, 0


class RankSlice(Sampler[int]):
    """One process's share of every global batch of ``sampler``'s stream (distributed training):
    process r of n takes ids ``[r*B/n, (r+1)*B/n)`` of each global batch of B."""

    def __init__(self, sampler: Sampler[int], global_batch: int, rank: int, world: int):
        self.sampler, self.global_batch, self.rank, self.world = sampler, global_batch, rank, world

    def __iter__(self) -> Iterator[int]:
        local = self.global_batch // self.world
        stream = iter(self.sampler)
        while True:
            batch = [next(stream) for _ in range(self.global_batch)]
            yield from batch[self.rank * local:(self.rank + 1) * local]


def _leave_stop_signals_to_the_main_process(worker_id: int) -> None:
    """Ctrl+C in a terminal, Slurm and ``kill -- -PGID`` signal every process of the job. A worker that
    died of it would fail the main process's next batch before it can checkpoint; ignoring the signal
    here lets the main process finish its step, save and shut the workers down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(dataset: Dataset, batch_size: int, seed: int, start: int = 0, num_workers: int = 0,
                device_type: str = "cpu", rank: int = 0, world: int = 1) -> DataLoader:
    """An endless loader over ``dataset`` starting after ``start`` consumed samples (batches * batch_size).

    ``batch_size`` is the global batch; with ``world`` > 1 processes each loads its slice of it.
    """
    sampler: Sampler[int] = InfiniteSampler(len(dataset), seed, start)
    if world > 1:
        sampler = RankSlice(sampler, batch_size, rank, world)
    return DataLoader(
        dataset, batch_size=batch_size // world, sampler=sampler,
        num_workers=num_workers, pin_memory=device_type == "cuda", persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),  # worker base seeds without touching the global RNG
        worker_init_fn=_leave_stop_signals_to_the_main_process if num_workers > 0 else None,
    )
