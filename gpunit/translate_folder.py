"""Translate folders of images with a trained translator (paper Sec. 4: exemplar- and latent-guided translation).

    translator = gpunit.load_translator("checkpoints/cat2dog/translator.pt", device="cuda")
    summary = translate_folder(translator, "photos/", "out/", style="dogs/")  # every photo x every dog
    summary = translate_folder(translator, "photos/", "out/", num_styles=4, seed=0)  # sampled styles
    print(describe_summary(summary))

Output names: ``<content stem>__<style stem>.png`` (exemplar-guided) or ``<content stem>__s<k>.png``
(latent-guided), in the sub-folder of ``output_dir`` that mirrors the content image's sub-folder of
the input, plus ``<content stem>__grid.png`` per content image (input, styles, results).

Latent-guided translation samples ``num_styles`` codes once from ``seed`` and gives every content
image the same ones: ``s<k>`` is the same style across the whole folder, and results do not depend
on which other images are in the folder or on the batch size. The same holds for
``style_pairing="random"``: the style of a content image is drawn from ``seed`` and its path only.

Work is batched as in Sec. 4's inference: Ec runs once per content image and Es once per style
image; G runs over (content, style) pairs in batches. Existing outputs are kept (unless
``overwrite``), so an interrupted run continues where it stopped; every PNG is written to a
temporary name and renamed, so an interruption never leaves a half-written file.

DeepI2I checkpoints translate to target classes instead (:func:`translate_folder_classes`):
``<content stem>__<class>__s<k>.png`` plus overview pages with one row per input and one column per
class, as in the DeepI2I paper's Fig. 14.
"""
from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torchvision.utils
from PIL import Image, ImageDraw
from tqdm import tqdm

from gpunit.data.images import (
    RESIZE_POLICIES,
    UnreadableImageError,
    load_rgb,
    model_input,
    scan_images,
    to_pil,
    to_tensor,
    write_png_atomic,
)
from gpunit.engine.progress import logging_above, progress_bar

if TYPE_CHECKING:  # for the annotations only: this module works on any method's translator and imports none
    from gpunit.deepi2i.translator import DeepI2ITranslator
    from gpunit.gp_unit.translator import Translator

log = logging.getLogger(__name__)

STYLE_PAIRINGS = ("all", "random")
GRID_COLUMNS = 8  # results per grid row; more styles wrap onto further rows


@dataclass
class _ContentJob:
    """One content image: its outputs (one per style it is paired with) and what is left to do."""
    path: Path
    style_indices: list[int]  # row of the style codes for each output
    outputs: list[Path]
    grid: Path | None
    todo: list[int] = field(default_factory=list)  # positions in ``outputs`` still to translate
    write_grid: bool = False


def translate_folder(translator: Translator, input_path: str | os.PathLike, output_dir: str | os.PathLike,
                     style: str | os.PathLike | None = None, style_pairing: str = "all", num_styles: int = 1,
                     seed: int = 0, batch_size: int = 8, resize: str = "shortside_crop", grid: bool = True,
                     overwrite: bool = False, progress: bool = True) -> dict:
    """Translate an image or a folder (recursively) into ``output_dir``; see the module docstring.

    Exemplar-guided when ``style`` (an image or a folder) is given: each content image with each style
    image (``style_pairing="all"``) or with one style image drawn from ``seed`` (``"random"``).
    Latent-guided otherwise: ``num_styles`` styles sampled from ``seed``.

    Returns ``{"translated", "skipped_existing", "unreadable": counts, "written": [result paths],
    "grids": [grid paths], "unreadable_files": [paths], "output_dir": Path}``. Unreadable images are
    skipped with a warning; raises ValueError when nothing at all could be translated.
    """
    _check_options(style, style_pairing, num_styles, batch_size, resize)
    input_path, output_dir = Path(input_path), Path(output_dir)
    contents, input_root = _list_inputs(input_path, "input")
    contents = _outside(contents, output_dir)
    summary = {"translated": 0, "skipped_existing": 0, "unreadable": 0, "written": [], "grids": [],
               "unreadable_files": [], "output_dir": output_dir}

    if style is None:
        if translator.sampler is None:
            raise ValueError("latent-guided translation needs a style sampler, and this translator has none; "
                             "give style images instead (--style)")
        codes = translator.sample_styles(num_styles, seed)  # (K, style_dim), shared by every content image
        style_names, style_images = [f"s{k}" for k in range(num_styles)], None
    else:
        style_paths, _ = _list_inputs(Path(style), "style")
        style_paths, style_images = _load_styles(style_paths, translator.image_size, resize, summary)
        codes = _style_codes(translator, style_images, batch_size)
        style_names = [p.stem for p in style_paths]

    jobs = _plan_jobs(contents, input_root, output_dir, style_names, style_pairing, seed, grid)
    for job in jobs:
        job.todo = [k for k, out in enumerate(job.outputs) if overwrite or not out.exists()]
        job.write_grid = job.grid is not None and (overwrite or bool(job.todo) or not job.grid.exists())
        summary["skipped_existing"] += len(job.outputs) - len(job.todo)

    pending = [job for job in jobs if job.todo or job.write_grid]
    total = sum(len(job.todo) for job in pending)
    with progress_bar(total=total, desc="translating", unit="img", disable=not progress or total == 0,
                      dynamic_ncols=True) as bar, logging_above(bar):
        for start in range(0, len(pending), batch_size):
            _run_chunk(translator, pending[start:start + batch_size], codes, style_images, batch_size, resize,
                       summary, bar)

    if summary["translated"] == 0 and summary["skipped_existing"] == 0:
        raise ValueError(f"nothing translated: none of the {len(contents)} input image(s) under {input_path} "
                         "could be read (see the warnings above); replace or delete the broken files")
    return summary


def describe_summary(summary: dict) -> str:
    """One line for the end of a run: what was written, what was skipped and why."""
    out, done, kept = summary["output_dir"], summary["translated"], summary["skipped_existing"]
    if done == 0:
        text = f"nothing new: all {kept} output(s) already exist in {out} (use --overwrite to redo them)"
    else:
        text = f"translated {done} image(s) into {out}"
        if kept:
            text += f"; skipped {kept} that already existed (use --overwrite to redo them)"
    if summary["grids"]:
        text += f"; wrote {len(summary['grids'])} overview grid(s)"
    if summary["unreadable"]:
        text += f"; skipped {summary['unreadable']} unreadable file(s): " + ", ".join(
            str(p) for p in summary["unreadable_files"][:5]) + (" ..." if summary["unreadable"] > 5 else "")
    return text


@torch.no_grad()
def translate_pairs(translator: Translator, content: torch.Tensor, codes: torch.Tensor,
                    pairs: Sequence[tuple[int, int]], batch_size: int = 8) -> Iterator[torch.Tensor]:
    """G(Ec(x_i), s_j) for each (i, j) in ``pairs``, yielded in batches of up to ``batch_size``.

    ``content``: (N, 3, S, S) at the model's size; ``codes``: (M, style_dim). Ec runs once per content
    image, however many styles it is paired with.
    """
    features = translator.content_features(content)  # deepest first
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start:start + batch_size]
        ci = torch.tensor([i for i, _ in batch], device=translator.device)
        si = torch.tensor([j for _, j in batch], device=codes.device)
        yield translator.generate([f[ci] for f in features], codes[si])


# ----------------------------------------------------------------------------- planning
def _check_options(style, style_pairing: str, num_styles: int, batch_size: int, resize: str) -> None:
    if resize not in RESIZE_POLICIES:
        raise ValueError(f"unknown resize policy {resize!r}; choose one of {', '.join(RESIZE_POLICIES)}")
    if style_pairing not in STYLE_PAIRINGS:
        raise ValueError(f"unknown style pairing {style_pairing!r}; choose one of {', '.join(STYLE_PAIRINGS)}")
    if style is None and style_pairing != "all":
        raise ValueError("style pairing 'random' picks among style images; give them (--style)")
    if num_styles < 1:
        raise ValueError(f"the number of styles must be at least 1, got {num_styles}")
    if batch_size < 1:
        raise ValueError(f"the batch size must be at least 1, got {batch_size}")


def _list_inputs(path: Path, what: str) -> tuple[list[Path], Path]:
    """(image files, the root their output sub-folders are relative to) for an image or a folder."""
    if path.is_dir():
        return scan_images(path), path
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path} (give an image file or a folder of images)")
    return [path], path.parent


def _outside(paths: list[Path], output_dir: Path) -> list[Path]:
    """Leave out earlier results when the output folder sits inside the input folder."""
    out = output_dir.resolve()
    kept = [p for p in paths if out not in p.resolve().parents]
    if len(kept) < len(paths):
        log.info("ignoring %d image(s) inside the output folder %s", len(paths) - len(kept), output_dir)
    if not kept:
        raise ValueError(f"no input images outside the output folder {output_dir}")
    return kept


def _pair_styles(num_styles: int, pairing: str, seed: int, content_key: str) -> list[int]:
    if pairing == "all":
        return list(range(num_styles))
    # Seeded by the content path, not its position: adding images to the folder keeps earlier choices.
    return [random.Random(f"{seed}/{content_key}").randrange(num_styles)]


def _plan_jobs(contents: list[Path], input_root: Path, output_dir: Path, style_names: list[str], pairing: str,
               seed: int, grid: bool) -> list[_ContentJob]:
    jobs = []
    for path in contents:
        rel = path.relative_to(input_root)
        out_folder = output_dir / rel.parent  # mirrors the input's sub-folders
        indices = _pair_styles(len(style_names), pairing, seed, rel.as_posix())
        jobs.append(_ContentJob(path, indices, [out_folder / f"{path.stem}__{style_names[j]}.png" for j in indices],
                                out_folder / f"{path.stem}__grid.png" if grid else None))
    _check_unique_outputs(jobs)
    return jobs


def _check_unique_outputs(jobs: list[_ContentJob]) -> None:
    """Two inputs mapping to one output name (a.jpg and a.png, or a style named 'grid') would overwrite each other."""
    seen: dict[Path, Path] = {}
    for job in jobs:
        for out in job.outputs + ([job.grid] if job.grid else []):
            if out in seen:
                raise ValueError(f"{seen[out]} and {job.path} would both write {out}; rename one of the "
                                 "images (outputs are named by file stem)")
            seen[out] = job.path


# ----------------------------------------------------------------------------- images
def _load_for_model(path: Path, size: int, resize: str) -> torch.Tensor | None:
    """The model input for ``path``, or None (with a warning) when the file cannot be decoded."""
    try:  # a float tensor: "published" resizes floats, never rounded to 8 bits (to_tensor passes it through)
        return model_input(load_rgb(path), size, resize)
    except UnreadableImageError as err:
        log.warning("skipping: %s", err)
        return None


def _load_many(paths: Sequence[Path], size: int, resize: str) -> list[torch.Tensor | None]:
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
        return list(pool.map(lambda p: _load_for_model(p, size, resize), paths))


def _count_unreadable(summary: dict, path: Path) -> None:
    summary["unreadable"] += 1
    summary["unreadable_files"].append(path)


def _load_styles(paths: list[Path], size: int, resize: str, summary: dict) -> tuple[list[Path], list[Image.Image]]:
    images = _load_many(paths, size, resize)
    for path, img in zip(paths, images):
        if img is None:
            _count_unreadable(summary, path)
    kept = [(p, img) for p, img in zip(paths, images) if img is not None]
    if not kept:
        raise ValueError(f"none of the {len(paths)} style image(s) could be read (see the warnings above)")
    return [p for p, _ in kept], [img for _, img in kept]


def _style_codes(translator: Translator, images: list[Image.Image], batch_size: int) -> torch.Tensor:
    """Es(y) once per style image: (M, style_dim)."""
    return torch.cat([translator.style_codes(torch.stack([to_tensor(img) for img in images[i:i + batch_size]]))
                      for i in range(0, len(images), batch_size)])


def _grid_image(content: torch.Tensor, styles: list[torch.Tensor] | None, results: list[torch.Tensor]) -> Image.Image:
    """Rows of [input, result...]; exemplar-guided adds a row [blank, style...] above each."""
    blank = torch.ones_like(content)  # white
    columns = min(GRID_COLUMNS, len(results))
    tiles = []
    for start in range(0, len(results), columns):
        padding = [blank] * (columns - len(results[start:start + columns]))
        if styles is not None:
            tiles += [blank] + styles[start:start + columns] + padding
        tiles += [content] + results[start:start + columns] + padding
    grid = torchvision.utils.make_grid(torch.stack(tiles), nrow=columns + 1, padding=2, pad_value=1.0)
    return to_pil(grid)


# ----------------------------------------------------------------------------- the work
def _run_chunk(translator: Translator, jobs: list[_ContentJob], codes: torch.Tensor,
               style_images: list[Image.Image] | None, batch_size: int, resize: str, summary: dict, bar: tqdm) -> None:
    """Translate the missing outputs of up to ``batch_size`` content images and write their grids."""
    loaded = []
    for job, img in zip(jobs, _load_many([job.path for job in jobs], translator.image_size, resize)):
        if img is None:
            _count_unreadable(summary, job.path)
            bar.update(len(job.todo))
        else:
            loaded.append((job, img))
    if not loaded:
        return
    content = torch.stack([to_tensor(img) for _, img in loaded])  # (N, 3, S, S)
    pairs = [(i, job.style_indices[k]) for i, (job, _) in enumerate(loaded) for k in job.todo]
    outputs = [job.outputs[k] for job, _ in loaded for k in job.todo]
    written = iter(outputs)
    for y_hat in translate_pairs(translator, content, codes, pairs, batch_size):
        for image in y_hat:
            path = next(written)
            write_png_atomic(to_pil(image), path)
            summary["written"].append(path)
        summary["translated"] += len(y_hat)
        bar.update(len(y_hat))

    for i, (job, _) in enumerate(loaded):
        if job.write_grid:
            _write_grid(job, content[i], style_images, summary)


def _write_grid(job: _ContentJob, content: torch.Tensor, style_images: list[Image.Image] | None, summary: dict) -> None:
    # Results come back from disk: this also covers outputs kept from an earlier run, and keeps memory flat.
    try:
        results = [to_tensor(load_rgb(path)) for path in job.outputs]
    except UnreadableImageError as err:
        log.warning("no grid for %s: %s", job.path, err)
        return
    styles = [to_tensor(style_images[j]) for j in job.style_indices] if style_images is not None else None
    write_png_atomic(_grid_image(content, styles, results), job.grid)
    summary["grids"].append(job.grid)


# ============================================================================= DeepI2I: many target classes
GRID_CLASSES_PER_PAGE = 16  # columns of an overview page (Fig. 14 layout: one column per target class)
GRID_HEADER = 14            # px of the strip above a class page that names its columns
GRID_INPUTS_PER_PAGE = 16  # input images per page (each gives num_styles rows)


@dataclass
class _ClassJob:
    """One input image: an output per (target class, noise vector), and which of them are still to do."""
    path: Path
    outputs: list[Path]  # in the order of the (class, style) targets
    todo: list[int] = field(default_factory=list)


def translate_folder_classes(translator: DeepI2ITranslator, input_path: str | os.PathLike,
                             output_dir: str | os.PathLike, target_classes: Sequence | None = None,
                             num_styles: int = 1, seed: int = 0, batch_size: int = 8,
                             resize: str = "shortside_crop", grid: bool = True, overwrite: bool = False,
                             progress: bool = True,
                             classes_per_page: int = GRID_CLASSES_PER_PAGE,
                             inputs_per_page: int = GRID_INPUTS_PER_PAGE) -> dict:
    """DeepI2I: translate an image or a folder (recursively) to each target class (Sec. 4.2).

    ``target_classes``: names or indices (default: every class of the translator). Each image gets
    ``num_styles`` results per class, from noise vectors drawn once from ``seed``: ``s<k>`` is the same
    noise for every image and class, and results do not depend on the folder or the batch size.
    Outputs: ``<stem>__<class>__s<k>.png`` in the sub-folder mirroring the input's, plus overview pages
    ``grids/grid_<i>_<j>.png``: one row per input image (and noise vector), the input then one column
    per target class; page i holds inputs i*inputs_per_page..., page j classes j*classes_per_page...
    Existing outputs are kept unless ``overwrite``; unreadable images are skipped and counted.
    Returns the same summary as :func:`translate_folder`.
    """
    _check_options(None, "all", num_styles, batch_size, resize)
    if classes_per_page < 1 or inputs_per_page < 1:
        raise ValueError("grid pages need at least one class and one input each")
    classes = list(range(translator.num_classes)) if target_classes is None else \
        [translator.class_index(c) for c in target_classes]
    if not classes:
        raise ValueError("no target classes given")
    if len(set(classes)) != len(classes):
        raise ValueError("a target class is given twice")
    input_path, output_dir = Path(input_path), Path(output_dir)
    contents, input_root = _list_inputs(input_path, "input")
    contents = _outside(contents, output_dir)
    summary = {"translated": 0, "skipped_existing": 0, "unreadable": 0, "written": [], "grids": [],
               "unreadable_files": [], "output_dir": output_dir}

    labels = [_file_label(translator.class_label(c)) for c in classes]
    targets = [(j, k) for j in range(len(classes)) for k in range(num_styles)]  # (class position, noise row)
    jobs = []
    for path in contents:
        rel = path.relative_to(input_root)
        jobs.append(_ClassJob(path, [output_dir / rel.parent / f"{path.stem}__{labels[j]}__s{k}.png"
                                     for j, k in targets]))
    _check_unique_class_outputs(jobs)
    for job in jobs:
        job.todo = [t for t, out in enumerate(job.outputs) if overwrite or not out.exists()]
        summary["skipped_existing"] += len(job.outputs) - len(job.todo)

    z = translator.sample_z(num_styles, seed)  # (K, dim_z), shared by every image and class
    class_tensor = torch.tensor(classes, dtype=torch.long)
    unreadable: set[Path] = set()
    fresh: set[Path] = set()
    pending = [job for job in jobs if job.todo]
    total = sum(len(job.todo) for job in pending)
    with progress_bar(total=total, desc="translating", unit="img", disable=not progress or total == 0,
                      dynamic_ncols=True) as bar, logging_above(bar):
        for start in range(0, len(pending), batch_size):
            chunk = pending[start:start + batch_size]
            loaded = []
            for job, img in zip(chunk, _load_many([job.path for job in chunk], translator.image_size, resize)):
                if img is None:
                    _count_unreadable(summary, job.path)
                    unreadable.add(job.path)
                    bar.update(len(job.todo))
                else:
                    loaded.append((job, img))
            if not loaded:
                continue
            features = translator.features(torch.stack([to_tensor(img) for _, img in loaded]))  # E + A once per image
            work = [(i, t) for i, (job, _) in enumerate(loaded) for t in job.todo]
            for b in range(0, len(work), batch_size):
                batch = work[b:b + batch_size]
                rows = torch.tensor([i for i, _ in batch], device=translator.device)
                y_hat = translator.generate({r: f[rows] for r, f in features.items()},
                                            z[[targets[t][1] for _, t in batch]],
                                            class_tensor[[targets[t][0] for _, t in batch]])
                for (i, t), image in zip(batch, y_hat):
                    path = loaded[i][0].outputs[t]
                    write_png_atomic(to_pil(image), path)
                    summary["written"].append(path)
                    fresh.add(path)
                summary["translated"] += len(batch)
                bar.update(len(batch))

    if summary["translated"] == 0 and summary["skipped_existing"] == 0:
        raise ValueError(f"nothing translated: none of the {len(contents)} input image(s) under {input_path} "
                         "could be read (see the warnings above); replace or delete the broken files")
    if grid:
        shown = [job for job in jobs if job.path not in unreadable]
        _write_class_grids(shown, [translator.class_label(c) for c in classes], num_styles, output_dir / "grids",
                           translator.image_size, resize,
                           classes_per_page, inputs_per_page, fresh, overwrite, summary)
    return summary


def _file_label(label: str) -> str:
    """A class name as a file-name part: anything but letters, digits, '.', '-' and '_' becomes '_'."""
    return re.sub(r"[^\w.-]+", "_", label).strip("._") or "class"


def _check_unique_class_outputs(jobs: list[_ClassJob]) -> None:
    seen: dict[Path, Path] = {}
    for job in jobs:
        for out in job.outputs:
            if out in seen:
                raise ValueError(f"{seen[out]} and {job.path} would both write {out}; rename one of the images or "
                                 "the classes (outputs are named by file stem and class name)")
            seen[out] = job.path


def _write_class_grids(jobs: list[_ClassJob], class_names: list[str], num_styles: int, folder: Path, size: int,
                       resize: str, classes_per_page: int, inputs_per_page: int, fresh: set[Path], overwrite: bool,
                       summary: dict) -> None:
    """Overview pages: rows [input, result for class 1, class 2, ...], one per input and noise vector, under a
    strip that names the columns."""
    num_classes = len(class_names)
    for pi, first in enumerate(range(0, len(jobs), inputs_per_page)):
        page_jobs = jobs[first:first + inputs_per_page]
        for pj, c0 in enumerate(range(0, num_classes, classes_per_page)):
            cols = range(c0, min(c0 + classes_per_page, num_classes))
            cells = [[job.outputs[j * num_styles + k] for j in cols] for job in page_jobs for k in range(num_styles)]
            path = folder / f"grid_{pi:03d}_{pj:03d}.png"
            if not (overwrite or not path.exists() or any(c in fresh for row in cells for c in row)):
                continue
            inputs = _load_many([job.path for job in page_jobs], size, resize)
            tiles = []
            try:
                for job_index, img in enumerate(inputs):
                    if img is None:  # gone unreadable since its results were written
                        continue
                    for k in range(num_styles):
                        row = cells[job_index * num_styles + k]
                        tiles += [to_tensor(img)] + [to_tensor(load_rgb(p)) for p in row]
            except UnreadableImageError as err:
                log.warning("no overview page %s: %s", path, err)
                continue
            if not tiles:
                continue
            page = torchvision.utils.make_grid(torch.stack(tiles), nrow=len(cols) + 1, padding=2, pad_value=1.0)
            write_png_atomic(_with_column_labels(to_pil(page), ["input"] + [class_names[j] for j in cols], size + 2),
                             path)
            summary["grids"].append(path)


def _with_column_labels(page: Image.Image, labels: list[str], cell: int) -> Image.Image:
    """``page`` under a white strip naming each ``cell``-wide column (names cut to fit)."""
    out = Image.new("RGB", (page.width, page.height + GRID_HEADER), "white")
    out.paste(page, (0, GRID_HEADER))
    draw = ImageDraw.Draw(out)
    for i, text in enumerate(labels):
        while len(text) > 1 and draw.textlength(text) > cell - 4:
            text = text[:-1]
        draw.text((i * cell + 4, 1), text, fill="black")
    return out
