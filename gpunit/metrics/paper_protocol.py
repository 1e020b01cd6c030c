"""GP-UNIT's Table 1 evaluation protocol: StarGAN v2's FID and LPIPS diversity (paper Sec. 5.1).

GP-UNIT scored every method of Table 1 with StarGAN v2's metric code (``metrics/fid.py``, ``metrics/lpips.py``,
the loaders of ``core/data_loader.py``) run from GP-UNIT's ``notebooks/evaluation.ipynb``. This module computes
what that code computes:

- files: ``*.png``, ``*.jpg``, ``*.jpeg``, ``*.JPG`` anywhere under a folder (recursive, case-sensitive),
  sorted; decoded with PIL's ``convert("RGB")`` (no EXIF rotation, no compositing);
- FID: each image squashed to 256x256, then resized to 299x299, both with PIL's bilinear filter on 8-bit
  pixels; ToTensor, ImageNet mean/std; torchvision's Inception-v3 pool features without its
  ``transform_input`` (:mod:`gpunit.metrics.paper_networks`); mean in float32, unbiased covariance in float64;
  ``scipy.linalg.sqrtm`` of the covariance product, no regularisation, the imaginary part dropped. The real
  set is the target domain's *training* images; the fake set all outputs of the task;
- LPIPS diversity: the fakes in sorted order, 10 consecutive files per input; images squashed to 256x256 (PIL,
  twice, as the loader does), to [-1, 1]; the mean LPIPS over the 45 pairs of each input (float32), then the
  mean over inputs (float64).

These FIDs are not pytorch-fid's (:mod:`gpunit.metrics.fid`): other weights, input values and resizing.
"""
from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from scipy import linalg

from gpunit.data.images import _DECODE_ERRORS, IMAGE_EXTENSIONS, UnreadableImageError
from gpunit.engine.pretrained import MissingWeightsError
from gpunit.engine.progress import progress_bar
from gpunit.metrics.paper_networks import PaperInception, PaperLPIPS, describe_weights

log = logging.getLogger("gpunit.metrics.paper_protocol")

EXTENSIONS = ("png", "jpg", "jpeg", "JPG")  # StarGAN v2's listdir, case-sensitive
IMG_SIZE, FID_SIZE = 256, 299
FID_BATCH_SIZE = 50  # GP-UNIT's notebook; the batch size only changes float rounding
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
OUTPUTS_PER_INPUT = 10
DESCRIPTION = ("GP-UNIT Table 1 protocol: StarGAN v2's FID (torchvision Inception-v3 pool3, PIL 256->299, "
               "ImageNet normalisation, real = target training set) and LPIPS diversity (AlexNet LPIPS v0.1, "
               "mean over the pairs of each input's outputs, then over inputs)")


# ----------------------------------------------------------------------------- files
def list_images(folders: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """StarGAN v2's file list: the four extensions, recursive and case-sensitive, sorted paths."""
    folders = [folders] if isinstance(folders, (str, os.PathLike)) else list(folders)
    found = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder not found: {folder}")
        files = [p for ext in EXTENSIONS for p in folder.rglob(f"*.{ext}")]
        # A case-insensitive file system matches *.jpg and *.JPG to one file: count it once.
        files = list(dict.fromkeys(files))
        taken = set(files)
        ignored = sum(1 for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p not in taken)
        if ignored:
            log.warning("%s: %d image file(s) left out, as the protocol does: it reads *.png, *.jpg, *.jpeg and "
                        "*.JPG only (not .PNG, .webp, ...)", folder, ignored)
        if not files:
            raise ValueError(f"no images in {folder} (the protocol reads *.png, *.jpg, *.jpeg and *.JPG, "
                             "in sub-folders too)")
        found += files
    return sorted(found)


def load_image(path: str | os.PathLike) -> Image.Image:
    """``Image.open(path).convert("RGB")``, as the protocol decodes; a clear error for a broken file."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except _DECODE_ERRORS as e:
        raise UnreadableImageError(path, f"{type(e).__name__}: {e}") from e


def group_outputs(paths: Sequence[Path], per_input: int = OUTPUTS_PER_INPUT) -> list[list[Path]]:
    """The protocol's groups: each ``per_input`` consecutive files (sorted) are the outputs of one input.

    That holds only when every input has exactly ``per_input`` files whose names sort together; we check
    it on the names, ``<input>_<k>.<ext>`` (the part before the last '_' and the folder name the input).
    """
    paths = sorted(paths)
    def prefix(p: Path) -> tuple[str, str]:
        return str(p.parent), p.stem.rsplit("_", 1)[0]
    counts: dict = {}
    for p in paths:
        counts[prefix(p)] = counts.get(prefix(p), 0) + 1
    wrong = [(k, n) for k, n in counts.items() if n != per_input]
    groups = [list(paths[i:i + per_input]) for i in range(0, len(paths), per_input)]
    mixed = next((g for g in groups if len({prefix(p) for p in g}) > 1), None)
    if wrong or mixed:
        example = (f"'{os.path.join(*wrong[0][0])}_*' has {wrong[0][1]} file(s)" if wrong else
                   f"{mixed[0].name} and {mixed[-1].name} fall in one group of {per_input}")
        raise ValueError(f"the fake folder must hold exactly {per_input} outputs per input, named so that they "
                         f"sort together (<input>_<k>.png, e.g. 0001_01.png ... 0001_{per_input:02d}.png) and "
                         f"nothing else; {example} ({len(paths)} files in all; leave out overview grids)")
    return groups


# ----------------------------------------------------------------------------- preprocessing
def squash(img: Image.Image, size: int) -> Image.Image:
    """size x size, aspect ratio not kept: torchvision's Resize on a PIL image, i.e. PIL's bilinear filter."""
    return TF.resize(img, [size, size], interpolation=TF.InterpolationMode.BILINEAR)  # PIL bilinear on uint8


def fid_input(img: Image.Image) -> torch.Tensor:
    """(3, 299, 299): PIL bilinear to 256x256, then to 299x299, ToTensor, ImageNet mean/std."""
    return TF.normalize(TF.to_tensor(squash(squash(img, IMG_SIZE), FID_SIZE)), IMAGENET_MEAN, IMAGENET_STD)


def lpips_input(img: Image.Image) -> torch.Tensor:
    """(3, 256, 256) in [-1, 1]: the loader resizes to 256x256 twice (the second a no-op), Normalize(0.5, 0.5)."""
    return TF.normalize(TF.to_tensor(squash(squash(img, IMG_SIZE), IMG_SIZE)), [0.5] * 3, [0.5] * 3)


def _load_many(paths: Sequence[Path], transform) -> list[torch.Tensor]:
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
        return list(pool.map(lambda p: transform(load_image(p)), paths))


# ----------------------------------------------------------------------------- FID
def inception_features(inception: PaperInception, paths: Sequence[Path], batch_size: int = FID_BATCH_SIZE,
                       progress: bool = False, desc: str = "Inception features") -> np.ndarray:
    """(N, 2048) float32 features in the order of ``paths`` (the protocol shuffles: only rounding differs)."""
    starts = range(0, len(paths), batch_size)
    feats = [inception(torch.stack(_load_many(paths[i:i + batch_size], fid_input))).cpu()
             for i in progress_bar(starts, desc=desc, unit="batch", disable=not progress, leave=False)]
    return torch.cat(feats).numpy()


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """StarGAN v2's statistics: the mean stays float32 (as the features), the unbiased covariance is float64."""
    return np.mean(features, axis=0), np.cov(features, rowvar=False)


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    # StarGAN v2 calls sqrtm(..., disp=False); SciPy deprecated `disp` in 1.16 (same result) and drops it in 1.18.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", linalg.LinAlgWarning)  # singular: reported by evaluate_folders
            return linalg.sqrtm(matrix, disp=False)[0]
    except TypeError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", linalg.LinAlgWarning)
            return linalg.sqrtm(matrix)


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """StarGAN v2's Fréchet distance: |mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)), real part.

    No epsilon, no check of the imaginary part: deliberately, so that the number is the paper's. (With few
    images the covariances are singular and sqrtm is ill-conditioned; the code returns a value anyway.)
    """
    cc = _sqrtm(np.dot(cov1, cov2))
    dist = np.sum((mu1 - mu2) ** 2) + np.trace(cov1 + cov2 - 2 * cc)
    return float(np.real(dist))


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake))


# ----------------------------------------------------------------------------- LPIPS diversity
def lpips_diversity(net: PaperLPIPS, groups: Iterable[Sequence[Path]],
                    progress: bool = False) -> tuple[float, list[float]]:
    """(mean over inputs, per-input means) of the LPIPS over all pairs i < j of each group's images."""
    groups = list(groups)
    per_input = []
    for group in progress_bar(groups, desc="LPIPS diversity", unit="input", disable=not progress, leave=False):
        feats = [net.features(x[None]) for x in _load_many(group, lpips_input)]  # one image at a time, as the protocol
        values = [net.distance(feats[i], feats[j]) for i in range(len(feats)) for j in range(i + 1, len(feats))]
        per_input.append(torch.mean(torch.stack(values)).item())
    return float(np.array(per_input).mean()), per_input


# ----------------------------------------------------------------------------- both
def evaluate_folders(real: str | os.PathLike | Sequence, fake: str | os.PathLike, per_input: int = OUTPUTS_PER_INPUT,
                     inception_weights: str | os.PathLike | None = None,
                     alexnet_weights: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                     batch_size: int = FID_BATCH_SIZE, progress: bool = True,
                     networks: tuple[PaperInception, PaperLPIPS] | None = None) -> dict:
    """FID (real vs fake) and LPIPS diversity (fake) under the paper's protocol, with what they were computed on.

    ``networks``: from :func:`load_networks` (else loaded here from the weights arguments).
    """
    fake_paths, real_paths = list_images(fake), list_images(real)
    groups = group_outputs(fake_paths, per_input)  # fails before any network work when the folder is not laid out
    inception, lpips_net = networks or load_networks(inception_weights, alexnet_weights, device)
    real_feats = inception_features(inception, real_paths, batch_size, progress, "Inception features (real)")
    fake_feats = inception_features(inception, fake_paths, batch_size, progress, "Inception features (fake)")
    if min(len(real_paths), len(fake_paths)) <= real_feats.shape[1]:
        log.warning("%d real / %d fake images for %d-d features: a covariance is singular. The protocol computes "
                    "the FID anyway (as for the paper's bird/dog/car tasks, with 2,000 fakes), but it is less stable",
                    len(real_paths), len(fake_paths), real_feats.shape[1])
    fid = fid_from_features(real_feats, fake_feats)
    diversity, per_input_values = lpips_diversity(lpips_net, groups, progress)
    real_folders = [real] if isinstance(real, (str, os.PathLike)) else list(real)
    weights = {"inception": describe_weights(inception.weights_file),
               "alexnet": describe_weights(lpips_net.weights_file),
               "lpips_linear": describe_weights(lpips_net.linear_weights_file)}
    del weights["lpips_linear"]["published"]  # the lpips package's file carries no hash in its name
    return {"protocol": "paper", "protocol_description": DESCRIPTION,
            "real": [str(Path(f).resolve()) for f in real_folders], "fake": str(Path(fake).resolve()),
            "num_real": len(real_paths), "num_fake": len(fake_paths), "num_inputs": len(groups),
            "num_outputs": per_input, "fid": fid, "lpips_diversity": diversity,
            "lpips_per_input_min": min(per_input_values), "lpips_per_input_max": max(per_input_values),
            "weights": weights}


def load_networks(inception_weights: str | os.PathLike | None = None, alexnet_weights: str | os.PathLike | None = None,
                  device: str | torch.device = "cpu") -> tuple[PaperInception, PaperLPIPS]:
    """Both networks, or one MissingWeightsError naming every missing file."""
    built, missing = [], []
    for build in (lambda: PaperInception(inception_weights, device), lambda: PaperLPIPS(alexnet_weights, device)):
        try:
            built.append(build())
        except MissingWeightsError as err:
            missing.append(str(err))
    if missing:
        raise MissingWeightsError("the paper protocol needs both weights files; " + " Also: ".join(missing))
    return built[0], built[1]


def format_paper_report(results: dict) -> str:
    """The printed table: the protocol, both image sets, the weights files, then the figures."""
    weights = results["weights"]
    lines = [f"protocol: paper ({results['protocol_description']})",
             f"real: {', '.join(results['real'])} ({results['num_real']} images)",
             f"fake: {results['fake']} ({results['num_fake']} images = {results['num_inputs']} inputs x "
             f"{results['num_outputs']} outputs" + (f", {results['mode']}-guided, resize {results['resize']}"
                                                   if "mode" in results else "") + ")"]
    for name, info in weights.items():
        flag = {True: "", False: "  <- NOT the published file: numbers not comparable with the paper",
                None: ""}[info.get("published")]
        lines.append(f"weights {name}: {info['file']} (sha256 {info['sha256'][:12]}...){flag}")
    lines += [f"  {'FID':<22} {results['fid']:.6g}", f"  {'Diversity (LPIPS)':<22} {results['lpips_diversity']:.6g}"]
    return "\n".join(lines)
