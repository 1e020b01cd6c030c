"""A web page that translates uploaded images with any translator ``gpunit.load_translator`` opens (Gradio).

    translator = gpunit.load_translator("runs/stage2_ellipse2star/translator.pt")
    app = build_app(translator, "stage2_ellipse2star")
    app.launch(server_name="127.0.0.1")          # or: python scripts/app.py --checkpoint ...

GP-UNIT: content images, then an exemplar style image or N styles sampled with a seed (paper Sec. 4).
DeepI2I: input images, target classes by name and N noise vectors with a seed (DeepI2I Sec. 4.2).
Results come as a gallery, overview grids and files to download (PNGs and one zip).

Uploads are decoded as ``scripts/translate.py`` decodes files (:func:`gpunit.data.images.load_rgb`: EXIF
orientation, any mode, 16-bit, transparency on white) and translated by the same code
(:mod:`gpunit.translate_folder`), so the page and the command line give the same images. A user's
mistake (a file that is no image, no style image, an unknown class) is a message in the page, never a
traceback; a huge image is downscaled first, and the page says so. Requests queue: one runs at a time.
"""
from __future__ import annotations

import re
import shutil
import tempfile
from functools import partial
from pathlib import Path

import gradio as gr

from gpunit.data.images import RESIZE_POLICIES, UnreadableImageError, load_rgb
from gpunit.translate_folder import translate_folder, translate_folder_classes

# The translators the demos train (python scripts/demo.py [--method deepi2i]), relative to where it ran.
DEMO_CHECKPOINTS = {"gp_unit": Path("runs/stage2_ellipse2star/translator.pt"),
                    "deepi2i": Path("runs/deepi2i_synthetic/deepi2i.pt")}
MAX_SIDE = 2048    # longer uploads are downscaled first: the model sees S x S anyway, and a 100-megapixel
                   # photo would hold the queue for seconds of resizing
MAX_OUTPUTS = 16   # sampled styles / noise vectors per image
SAMPLED, EXEMPLAR = "sampled styles", "exemplar image"


def demo_checkpoint(method: str) -> Path:
    """The demo's translator of ``method``; a FileNotFoundError that says how to get one when it is missing."""
    path = DEMO_CHECKPOINTS[method]
    if not path.is_file():
        flag = " --method deepi2i" if method == "deepi2i" else ""
        raise FileNotFoundError(
            f"no --checkpoint given, and the demo's translator {path} does not exist here. Train it with "
            f"`python scripts/demo.py{flag}` (minutes on a CPU), or pass --checkpoint with your own run's file or "
            "the authors' published files (README.md, 'Translate a photo with the authors' weights')")
    return path


# ----------------------------------------------------------------------------- requests
def _file_stem(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", Path(name).stem).strip("._") or "image"


def read_uploads(paths, folder: Path, notes: list[str]) -> list[Path]:
    """Each readable upload as an 8-bit RGB PNG in ``folder`` (what translate.py would feed the model);
    unreadable files and downscaled ones are noted."""
    folder.mkdir(parents=True)
    saved: list[Path] = []
    for path in paths or []:
        name = Path(path).name
        try:
            img = load_rgb(path)
        except UnreadableImageError as err:
            reason = err.reason.replace(str(path), name)  # the server's temporary path means nothing to the user
            notes.append(f"**{name}** is not an image that can be read ({reason}); skipped")
            continue
        if max(img.size) > MAX_SIDE:
            size = img.size
            img.thumbnail((MAX_SIDE, MAX_SIDE))
            notes.append(f"**{name}** is {size[0]}x{size[1]}: downscaled to {img.width}x{img.height} first")
        stem, k = _file_stem(name), 1
        while folder / f"{stem}.png" in saved:  # two uploads named alike keep both
            stem, k = f"{_file_stem(name)}_{k}", k + 1
        img.save(folder / f"{stem}.png")
        saved.append(folder / f"{stem}.png")
    return saved


def _results(summary: dict, work: Path, notes: list[str]):
    """(gallery, grids, files to download, status text) of a finished request."""
    written, grids = summary["written"], summary["grids"]
    archive = shutil.make_archive(str(work / "translations"), "zip", work / "out")
    status = f"Translated {len(written)} image(s)." + "".join(f"\n- {n}" for n in notes)
    for note in notes:
        gr.Warning(note)
    return ([(str(p), p.stem) for p in written], [str(p) for p in grids],
            [archive] + [str(p) for p in written + grids], status)


def _fail(message: str, notes: list[str]):
    raise gr.Error(message + "".join(f" {n}." for n in notes).replace("**", ""))


def translate_gp_unit(translator, work_root: Path, contents, guidance: str, style, num_styles, seed, resize):
    """One GP-UNIT request: every content image with the style image, or with ``num_styles`` sampled styles."""
    notes: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="request_", dir=work_root))
    inputs = read_uploads(contents, work / "in", notes)
    if not inputs:
        _fail("Upload at least one content image (JPEG, PNG, WebP, TIFF, BMP).", notes)
    style_image = None
    if guidance == EXEMPLAR:
        styles = read_uploads([style] if style else [], work / "style", notes)
        if not styles:
            _fail("Exemplar-guided translation needs a style image: upload one, or choose sampled styles.", notes)
        style_image = styles[0]
    try:
        summary = translate_folder(translator, work / "in", work / "out", style=style_image,
                                   num_styles=1 if style_image else int(num_styles), seed=int(seed), resize=resize,
                                   progress=False)
    except ValueError as err:  # the library's messages for what a user can get wrong
        _fail(str(err), notes)
    return _results(summary, work, notes)


def translate_deepi2i(translator, work_root: Path, images, target_classes, num_styles, seed, resize):
    """One DeepI2I request: every image to every chosen class, ``num_styles`` noise vectors each."""
    notes: list[str] = []
    if not target_classes:
        _fail("Choose at least one target class.", notes)
    try:
        for name in target_classes:
            translator.class_index(name)  # an unknown name: a message that lists the known ones
    except ValueError as err:
        _fail(str(err), notes)
    work = Path(tempfile.mkdtemp(prefix="request_", dir=work_root))
    inputs = read_uploads(images, work / "in", notes)
    if not inputs:
        _fail("Upload at least one image (JPEG, PNG, WebP, TIFF, BMP).", notes)
    try:
        summary = translate_folder_classes(translator, work / "in", work / "out", target_classes=list(target_classes),
                                           num_styles=int(num_styles), seed=int(seed), resize=resize,
                                           progress=False, classes_per_page=len(target_classes))
    except ValueError as err:
        _fail(str(err), notes)
    return _results(summary, work, notes)


# ----------------------------------------------------------------------------- the page
def _class_choices(translator) -> list[str]:
    """Class names; indices as text when the checkpoint carries none (``class_index`` reads both)."""
    return list(translator.class_names) if translator.class_names else [str(c) for c in range(translator.num_classes)]


def build_app(translator, name: str = "translator") -> gr.Blocks:
    """The page for ``translator`` (loaded once, shared by every request); requests queue, one at a time."""
    work_root = Path(tempfile.mkdtemp(prefix="gpunit_app_"))
    method = "GP-UNIT" if translator.method == "gp_unit" else "DeepI2I"
    size = translator.image_size
    with gr.Blocks(title=f"gpunit: {name}", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(f"## {method}: {name}\n{size}x{size} px translator on {translator.device} "
                    f"({translator.precision}). Uploads of any size are resized as chosen below.")
        with gr.Row():
            with gr.Column():
                images = gr.File(label="Images to translate", file_count="multiple", file_types=["image"],
                                 elem_id="inputs")
                if translator.method == "gp_unit":
                    has_sampler = translator.sampler is not None
                    guidance = gr.Radio([SAMPLED, EXEMPLAR] if has_sampler else [EXEMPLAR],
                                        value=SAMPLED if has_sampler else EXEMPLAR, label="Style")
                    style = gr.File(label="Style image (exemplar)", file_types=["image"], visible=not has_sampler,
                                    elem_id="style")
                    guidance.change(lambda g: gr.update(visible=g == EXEMPLAR), guidance, style,
                                    api_visibility="private")
                    count_label = "Sampled styles per image"
                else:
                    choices = _class_choices(translator)
                    classes = gr.Dropdown(choices, value=choices[:1], multiselect=True, allow_custom_value=True,
                                          label=f"Target classes ({len(choices)})", elem_id="classes")
                    count_label = "Noise vectors per image and class"
                count = gr.Slider(1, MAX_OUTPUTS, value=4 if translator.method == "gp_unit" else 2, step=1,
                                  label=count_label)
                seed = gr.Number(0, precision=0, label="Seed")
                resize = gr.Dropdown(list(RESIZE_POLICIES), value="shortside_crop", label="Resize",
                                     info="shortside_crop: resize the short side, centre-crop; published: as the "
                                          "authors' inference.py")
                button = gr.Button("Translate", variant="primary", elem_id="translate")
            with gr.Column():
                status = gr.Markdown(elem_id="status", label="status")
                gallery = gr.Gallery(label="Translations", columns=4, object_fit="contain", elem_id="results")
                grids = gr.Gallery(label="Grid", columns=1, object_fit="contain", height="auto", elem_id="grids")
                files = gr.File(label="Download", file_count="multiple", elem_id="downloads")
        outputs = [gallery, grids, files, status]
        if translator.method == "gp_unit":
            button.click(partial(translate_gp_unit, translator, work_root),
                         [images, guidance, style, count, seed, resize], outputs, api_name="translate")
        else:
            button.click(partial(translate_deepi2i, translator, work_root),
                         [images, classes, count, seed, resize], outputs, api_name="translate")
    return app.queue(default_concurrency_limit=1)  # one request at a time on the one model; others wait


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           block: bool = True):
    """Serve the page (local only unless ``host`` says otherwise; a public link only with ``share``).
    ``block=False`` returns at once (tests); returns the local URL."""
    _, url, _ = app.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block,
                           ssr_mode=False, quiet=not block)
    return url
