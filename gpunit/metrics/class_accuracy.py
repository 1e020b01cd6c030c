"""Translation accuracy of many-class translation: DeepI2I's RC and FC (Wang et al., NeurIPS 2020, Sec. 4
"Evaluation metrics", after Shmelkov et al.'s GAN-train/GAN-test; Suppl. A: a ResNet-50 backbone followed by
one fully connected layer).

- RC (real classifier): trained on real images of the classes; the share of translations it assigns to their
  target class.
- FC (fake classifier): trained on the translations, labelled by their target class; its accuracy on held-out
  real images.

With torchvision's ImageNet ResNet-50 weights on disk the backbone stays frozen and only the linear layer
learns, on features computed once (a linear probe: cheap, and what "ResNet-50 + one linear layer" needs).
Without them the whole network trains from scratch on the evaluation data, which gives a weaker classifier:
the results then carry a note, and RC/FC are not comparable with the paper's.

The real-image classifier is cached beside the data, keyed by a fingerprint of its files and settings (as
:mod:`gpunit.metrics.domain_classifier` caches its classifier), so a changed data set retrains.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.data import DataLoader

from gpunit.data.datasets import ImageFolderDataset
from gpunit.engine.checkpoints import atomic_save
from gpunit.engine.pretrained import MissingWeightsError, hub_checkpoint_dir, load_state_dict
from gpunit.metrics.domain_classifier import files_fingerprint, load_fingerprinted_cache

log = logging.getLogger(__name__)

# torchvision's ImageNet weights (IMAGENET1K_V2, IMAGENET1K_V1): either file will do
RESNET50_WEIGHTS_FILES = ("resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth")
RESNET50_URL = "https://download.pytorch.org/models/"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FEATURE_DIM = 2048
CACHE_VERSION = 1  # bump when the network or its training changes, so old caches retrain


@dataclass
class ClassifierSettings:
    """How the RC/FC classifiers are built and trained (the same for both)."""
    image_size: int = 224                # ResNet-50's ImageNet input size; images are resized to it
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3                     # Adam
    seed: int = 0
    weights: str | None = None           # a ResNet-50 weights file or folder (default: the torch hub cache)
    cache: str | None = None             # the real classifier's cache file (default: beside the real folders)


def find_resnet50_weights(path: str | os.PathLike | None = None) -> Path | None:
    """torchvision's ResNet-50 ImageNet weights: ``path`` (a file, or a folder holding one of the standard
    names), else the torch hub cache. None when the cache has none (the classifier then trains from scratch);
    an explicit ``path`` without weights is an error, since the user asked for them."""
    if path:
        p = Path(path).expanduser()
        candidates = [p / name for name in RESNET50_WEIGHTS_FILES] if p.is_dir() else [p]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise MissingWeightsError(f"ResNet-50 (RC/FC classifier): no weights file at {p} (expected "
                                  f"{' or '.join(RESNET50_WEIGHTS_FILES)}, from {RESNET50_URL}<name>)")
    for name in RESNET50_WEIGHTS_FILES:
        if (hub_checkpoint_dir() / name).is_file():
            return hub_checkpoint_dir() / name
    return None


def scratch_note() -> str:
    return (f"no ResNet-50 ImageNet weights found, so the RC/FC classifiers were trained from scratch on the "
            f"evaluation data: weaker classifiers, RC and FC not comparable with the paper's. Put "
            f"{' or '.join(RESNET50_WEIGHTS_FILES)} (from {RESNET50_URL}<name>) in {hub_checkpoint_dir()} "
            f"or pass --resnet-weights")


class ResNetLinearClassifier(nn.Module):
    """ResNet-50 (no ImageNet head) + one linear layer over ``class_names``.

    ``weights_file`` given: the backbone is that ImageNet ResNet-50, frozen; :meth:`fit` trains the linear
    layer on centred features divided by their overall spread (an affine map, so still one linear layer; one
    learning rate then fits any feature scale; one scale for all features, because dividing each by its own
    spread blows up features that happen to be constant on the training images). None: :meth:`fit` trains
    everything from scratch.
    """

    def __init__(self, class_names: list[str], image_size: int = 224, weights_file: Path | None = None):
        super().__init__()
        self.class_names, self.image_size, self.weights_file = list(class_names), image_size, weights_file
        self.backbone = torchvision.models.resnet50(weights=None)
        self.backbone.fc = nn.Identity()  # (N, 2048) pooled features
        if weights_file is not None:
            state = {k: v for k, v in load_state_dict(weights_file).items() if not k.startswith("fc.")}
            try:
                self.backbone.load_state_dict(state)
            except RuntimeError as err:
                raise ValueError(f"{weights_file} is not torchvision's ResNet-50 weights file: {err}") from err
            self.backbone.requires_grad_(False)
        self.head = nn.Linear(FEATURE_DIM, len(class_names))
        self.register_buffer("feature_mean", torch.zeros(FEATURE_DIM))
        self.register_buffer("feature_scale", torch.ones(()))
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.eval()

    @property
    def frozen(self) -> bool:
        return self.weights_file is not None

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] of any size -> ImageNet-normalised (N, 3, image_size, image_size)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
        x = images.to(self.device, torch.float32).clamp(-1, 1)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                              antialias=True)
        return ((x + 1) / 2 - self.image_mean) / self.image_std

    def classify_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.head((features - self.feature_mean) / self.feature_scale)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> (N, num_classes) logits."""
        return self.classify_features(self.backbone(self.prepare(images)))

    @torch.inference_mode()
    def predict(self, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
        """(N,) class indices (on the CPU) of images in [-1, 1]."""
        self.eval()
        return torch.cat([self(batch).argmax(1).cpu() for batch in images.split(batch_size)])

    @torch.inference_mode()
    def training_inputs(self, images: torch.Tensor) -> torch.Tensor:
        """What :meth:`fit` learns from, computed batch by batch so a large training set fits in memory:
        frozen backbone features (N, 2048) float32, or uint8 images at image_size for a from-scratch network."""
        self.eval()
        if self.frozen:
            return self.backbone(self.prepare(images)).float().cpu()
        x = F.interpolate(images.float().clamp(-1, 1), size=(self.image_size, self.image_size), mode="bilinear",
                          align_corners=False, antialias=True)
        return ((x + 1) * 127.5).round().to(torch.uint8).cpu()

    def fit(self, inputs: torch.Tensor, labels: torch.Tensor, epochs: int, batch_size: int = 64, lr: float = 1e-3,
            seed: int = 0) -> "ResNetLinearClassifier":
        """Train on :meth:`training_inputs` and their class indices with Adam and cross-entropy."""
        if len(inputs) != len(labels) or len(inputs) < 2:
            raise ValueError(f"need at least 2 labelled training inputs, got {len(inputs)} and {len(labels)} labels")
        with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's random state
            torch.manual_seed(seed)
            if self.frozen:
                self.feature_mean.copy_(inputs.mean(0))
                self.feature_scale.copy_((inputs - inputs.mean(0)).pow(2).mean().sqrt() + 1e-6)
                trained = self.head.parameters()
            else:
                self.train()
                trained = self.parameters()
            optimizer = torch.optim.Adam(trained, lr=lr)
            for _ in range(epochs):
                for batch in _batches(len(inputs), batch_size):
                    loss = F.cross_entropy(self._training_logits(inputs[batch]), labels[batch].to(self.device))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
        return self.eval()

    def _training_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            return self.classify_features(inputs.to(self.device))
        x = inputs.to(self.device).float() / 127.5 - 1
        flip = torch.rand(len(x), device=x.device) < 0.5  # horizontal flips: the only augmentation
        return self(torch.where(flip[:, None, None, None], x.flip(-1), x))

    def trained_state(self) -> dict:
        """What training changed (the cache's content): the head and statistics, plus the backbone if not frozen."""
        return {k: v.cpu() for k, v in self.state_dict().items() if not (self.frozen and k.startswith("backbone."))}


def _batches(n: int, batch_size: int) -> list[torch.Tensor]:
    """A shuffled epoch; a last batch of one joins the previous one (BatchNorm cannot train on one image)."""
    batches = list(torch.randperm(n).split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


def accuracy_per_class(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float | None]:
    """Share of each class's items predicted as that class (None for a class without items)."""
    return [float((predictions[labels == c] == c).float().mean()) if (labels == c).any() else None
            for c in range(num_classes)]


# ----------------------------------------------------------------------------- the real-image classifier
def labelled_training_inputs(classifier: ResNetLinearClassifier, class_folders: list[Path], load_size: int,
                             batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """:meth:`~ResNetLinearClassifier.training_inputs` of every image of each class folder and its class index.
    Images are first resized to ``load_size`` (the translator's), as the translations were made."""
    inputs, labels = [], []
    for label, folder in enumerate(class_folders):
        for batch in DataLoader(ImageFolderDataset([str(folder)], load_size), batch_size=batch_size):
            inputs.append(classifier.training_inputs(batch["x"]))
            labels.append(torch.full((len(batch["x"]),), label))
    return torch.cat(inputs), torch.cat(labels)


def load_or_train_real_classifier(class_folders: dict[str, Path], load_size: int, settings: ClassifierSettings,
                                  device: str | torch.device = "cpu") -> ResNetLinearClassifier:
    """RC's classifier, trained on the real images of ``{class name: folder}`` (all images of each folder,
    recursive), or loaded from its cache when the files and settings are the same.

    The cache defaults to ``<the folders' common parent>/.rc_classifier_resnet50.pt`` (hidden, so that a shell
    glob over the class folders, ``data/animals/train/*``, does not list it); an unwritable place
    only costs the cache (a warning). Sets ``num_train_images`` and ``cache_path`` on the classifier.
    """
    names, folders = list(class_folders), [Path(f) for f in class_folders.values()]
    weights_file = find_resnet50_weights(settings.weights)
    root = Path(os.path.commonpath([str(f.resolve()) for f in folders]))
    cache_path = Path(settings.cache) if settings.cache else root / ".rc_classifier_resnet50.pt"
    files = {name: ImageFolderDataset([str(f.resolve())], load_size).paths for name, f in zip(names, folders)}
    fingerprint_settings = {**asdict(settings), "cache": None, "weights": _describe_file(weights_file),
                            "load_size": load_size, "classes": names}
    fingerprint = files_fingerprint(files, root, fingerprint_settings, version=CACHE_VERSION)

    classifier = ResNetLinearClassifier(names, settings.image_size, weights_file).to(device)
    cached = _load_cache(cache_path, fingerprint)
    if cached is not None:
        classifier.load_state_dict(cached["state"], strict=False)
        classifier.num_train_images, classifier.cache_path = cached["num_train_images"], cache_path
        return classifier.eval()

    start = time.perf_counter()
    inputs, labels = labelled_training_inputs(classifier, folders, load_size, settings.batch_size)
    classifier.fit(inputs, labels, settings.epochs, settings.batch_size, settings.lr, settings.seed)
    classifier.num_train_images, classifier.cache_path = len(labels), cache_path
    log.info("trained the RC classifier (ResNet-50 %s + linear) on %d real images of %d classes in %.1fs",
             "frozen" if classifier.frozen else "from scratch", len(labels), len(names), time.perf_counter() - start)
    try:
        atomic_save({"state": classifier.trained_state(), "fingerprint": fingerprint,
                     "num_train_images": len(labels)}, cache_path)
    except OSError as err:
        log.warning("could not cache the RC classifier at %s (%s); pass a writable cache file", cache_path, err)
        classifier.cache_path = None
    return classifier


def _describe_file(path: Path | None) -> list | None:
    if path is None:
        return None
    stat = path.stat()
    return [path.name, stat.st_size, stat.st_mtime_ns]


def _load_cache(cache_path: Path, fingerprint: str) -> dict | None:
    return load_fingerprinted_cache(cache_path, fingerprint, "RC classifier")
