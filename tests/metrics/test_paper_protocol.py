"""The paper's evaluation protocol (GP-UNIT Table 1: StarGAN v2's FID and LPIPS diversity) against the fixture in
../shared/fixtures/eval_protocol, and the published inference resize.

The random-weight Inception and AlexNet of the fixture's README (section 5) are written under torchvision's file
names into a temporary $TORCH_HOME, so every value comes through the loading path real weights take. Tolerances
are the README's (section 7): features 1e-5 relative, FID 1e-5 relative, LPIPS 1e-6 absolute. Its FID is ~1.9e23
(random features ~1e10), so it is compared relatively; the observed spread over threads, batch sizes, shuffles and
SciPy versions is below 1e-7.
"""
import json
from pathlib import Path

import numpy as np
import PIL
import pytest
import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms.functional as TF
from helpers import run_script
from PIL import Image

from gpunit.data.datasets import ImageFolderDataset
from gpunit.data.images import load_rgb, model_input, resize_for_model
from gpunit.engine.pretrained import MissingWeightsError
from gpunit.gp_unit.evaluate import evaluate, format_report
from gpunit.gp_unit.evaluate_paper import write_translations
from gpunit.gp_unit.models import ContentEncoder, Generator, StyleSampler
from gpunit.gp_unit.translator import Translator
from gpunit.gp_unit.weights import save_translator
from gpunit.metrics import paper_protocol as pp
from gpunit.metrics.lpips_diversity import ALEXNET_WEIGHTS_FILE
from gpunit.metrics.paper_networks import INCEPTION_WEIGHTS_FILE

REPO = Path(__file__).resolve().parents[2]
FID_RTOL, FEATURE_RTOL, LPIPS_ATOL = 1e-5, 1e-5, 1e-6  # the fixture README, section 7
SIZE = 64  # the tiny translator's image size


@pytest.fixture(scope="module")
def fx(fixtures_dir):
    root = fixtures_dir / "eval_protocol"
    return {"root": root, **torch.load(root / "fixture.pt", weights_only=True)}


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """A $TORCH_HOME whose hub cache holds the README's seeded random networks under torchvision's names."""
    home = tmp_path_factory.mktemp("torch_home")
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        inception = torchvision.models.inception_v3(weights=None, aux_logits=True, transform_input=True,
                                                    init_weights=True)
    torch.save(inception.state_dict(), checkpoints / INCEPTION_WEIGHTS_FILE)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        alexnet = torchvision.models.alexnet(weights=None)
    torch.save(alexnet.state_dict(), checkpoints / ALEXNET_WEIGHTS_FILE)
    return home


@pytest.fixture(scope="module")
def networks(torch_home):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(torch_home))
        return pp.load_networks()


def score_fixture_folders(fx, torch_home, out: Path) -> tuple[dict, str]:
    status, stdout, stderr = run_script("scripts/evaluate.py", "--protocol", "paper", "--real", fx["root"] / "real",
                                        "--fake", fx["root"] / "fake", "--output", out, "--no-progress",
                                        env={"TORCH_HOME": str(torch_home)})
    assert status == 0, stderr[-3000:]
    return json.loads(out.read_text()), stdout


@pytest.fixture(scope="module")
def folder_run(fx, torch_home, tmp_path_factory):
    """scripts/evaluate.py --protocol paper on the fixture's folders, as a user runs it, except for its two costly
    pieces (80 s of a 2-core CPU): Inception's 100 forward passes give the fixture's own features (looked up by
    file; our network computes five of them in test_inception_features_match_the_fixture, and all in the slow
    test_full_cli_run_reproduces_the_fixture_fid), and the 2048x2048 sqrtm of those features gives the fixture's
    FID only if our Frechet distance is handed exactly those features. LPIPS, file discovery, grouping, weights
    and the report run for real."""
    files = {name: row for split in ("real", "fake") for row, name in enumerate(fx["files"][split])}
    stored = {"real": fx["inception"]["features_real"].numpy(), "fake": fx["inception"]["features_fake"].numpy()}
    seen = {}

    def fixture_features(inception, paths, *args, **kwargs):
        split = Path(paths[0]).parent.name
        seen[split] = [Path(p).name for p in paths]
        return stored[split][[files[Path(p).name] for p in paths]]

    def fixture_fid(real, fake):
        rows = {split: [files[n] for n in seen[split]] for split in seen}
        assert np.array_equal(real, stored["real"][rows["real"]]) and np.array_equal(fake, stored["fake"][rows["fake"]])
        assert sorted(rows["real"]) == list(range(40)) and sorted(rows["fake"]) == list(range(60))
        return float(fx["fid"]["fid_file_order_bs50"])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pp, "inception_features", fixture_features)
        mp.setattr(pp, "fid_from_features", fixture_fid)
        return score_fixture_folders(fx, torch_home, tmp_path_factory.mktemp("paper_eval") / "eval.json")


def fingerprint(t: torch.Tensor) -> torch.Tensor:
    """The fixture's [numel, sum, sum |x|, sum x^2, x0, x1, x2, x_last] in float64."""
    x = t.detach().double().flatten()
    first = [x[i] if i < len(x) else torch.zeros((), dtype=torch.float64) for i in range(3)]
    return torch.stack([torch.tensor(float(x.numel()), dtype=torch.float64), x.sum(), x.abs().sum(), (x * x).sum(),
                        *first, x[-1]])


def assert_same_tensors(ours: dict, reference: dict):
    assert len(ours) == len(reference)
    for (name, tensor), (ref_name, ref) in zip(ours.items(), reference.items()):
        got = fingerprint(tensor)
        assert torch.equal(got[[0, 4, 5, 6, 7]], ref[[0, 4, 5, 6, 7]]), (name, ref_name)
        # sums: the same values summed in another order (README: ~1e-15), relative to sum |x|
        assert (got[1:4] - ref[1:4]).abs().max() <= 1e-12 * max(ref[2].item(), ref[3].item(), 1e-300), name


# ----------------------------------------------------------------------------- networks, files, pixels
def test_networks_loaded_from_the_hub_cache_are_the_fixtures_and_wired_as_stargan_v2(networks, fx):
    inception, lpips_net = networks
    construction = fx["construction"]
    # StarGAN v2's block1..block4 hold exactly these tensors in this order: no AuxLogits, no fc.
    assert_same_tensors(inception.blocks.state_dict(), construction["inception"]["fingerprint_wrapper"])
    assert_same_tensors(lpips_net.alexnet.state_dict(), construction["alexnet"]["fingerprint_features"])
    for i, lin in enumerate(lpips_net.lins):  # the lpips package's v0.1 layers = StarGAN v2's lpips_weights.ckpt
        reference = construction["lpips_linear_weights"][f"lpips_weights.{i}.main.1.weight"]
        assert torch.equal(lin.model[-1].weight, reference)
    assert inception.weights_file.name == "inception_v3_google-0cc3c7bd.pth"
    assert lpips_net.weights_file.name == "alexnet-owt-7be5be79.pth"


def test_files_decoding_resizing_and_normalisation_are_exact(fx, tmp_path):
    root = fx["root"]
    assert [p.name for p in pp.list_images(root / "real")] == fx["files"]["real"]
    assert [p.name for p in pp.list_images(root / "fake")] == fx["files"]["fake"]
    for name, pixels in fx["files"]["jpeg_decoded_uint8_hwc"].items():
        assert np.array_equal(np.asarray(pp.load_image(root / "real" / name)), pixels.numpy())
    for rel, after_256 in fx["preprocess"]["after_first_resize_uint8_hwc"].items():
        first = pp.squash(pp.load_image(root / rel), 256)
        assert np.array_equal(np.asarray(first), after_256.numpy()), rel
        second = fx["preprocess"]["after_second_resize_uint8_hwc"][rel]
        assert np.array_equal(np.asarray(pp.squash(first, 299)), second.numpy()), rel
    torch.testing.assert_close(pp.fid_input(pp.load_image(root / "real/real_002.png")),
                               fx["preprocess"]["fid_input_real_002"], rtol=0, atol=1e-6)
    torch.testing.assert_close(pp.lpips_input(pp.load_image(root / "fake/0001_01.png")),
                               fx["preprocess"]["lpips_input_fake_0001_01"], rtol=0, atol=1e-6)
    # recursive and case-sensitive, as StarGAN v2's listdir
    for name in ["a.png", "b.PNG", "sub/c.jpg", "d.webp", "e.JPG", "f.jpeg"]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / name, format="PNG")
    assert [p.relative_to(tmp_path).as_posix() for p in pp.list_images(tmp_path)] == \
        ["a.png", "e.JPG", "f.jpeg", "sub/c.jpg"]


def test_inception_features_match_the_fixture(networks, fx):
    names = ["real_002.png", "real_003.png", "real_006.png", "real_038.jpg", "real_039.jpg"]  # 320x240, 64, 512,
    if int(PIL.__version__.split(".")[0]) >= 13:  # JPEGs; the fixtures' Pillow 13.0.0 resizes 200x300 a level off
        names.append("real_005.png")              # Pillow 12's (which gradio's pillow<13 installs) on 0.1% of pixels
    rows = [fx["files"]["real"].index(n) for n in names]
    ours = pp.inception_features(networks[0], [fx["root"] / "real" / n for n in names])
    reference = fx["inception"]["features_real"][rows].numpy()
    assert ours.dtype == np.float32 and ours.shape == (len(names), 2048)
    assert np.abs(ours - reference).max() / np.abs(reference).max() <= FEATURE_RTOL


def test_lpips_pairs_and_one_inputs_diversity_match_the_fixture(networks, fx):
    net, root = networks[1], fx["root"]
    features = lambda rel: net.features(pp.lpips_input(pp.load_image(root / rel))[None])  # noqa: E731
    for pair in fx["lpips"]["pairs"]:
        fa, fb = features(pair["a"]), features(pair["b"])
        assert abs(net.distance(fa, fb).item() - pair["lpips"]) <= LPIPS_ATOL, pair
        per_layer = torch.stack(net.distance(fa, fb, per_layer=True))
        torch.testing.assert_close(per_layer, torch.as_tensor(pair["per_layer"]), rtol=0, atol=LPIPS_ATOL)
    group = [root / "fake" / n for n in fx["lpips"]["per_input_files"][0]]
    mean, per_input = pp.lpips_diversity(net, [group])
    assert abs(mean - fx["lpips"]["per_input_diversity"][0].item()) <= LPIPS_ATOL and per_input == [mean]


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow  # 100 Inception passes at 299 px and a 2048x2048 sqrtm: ~90 s on a 2-core CPU
def test_full_cli_run_reproduces_the_fixture_fid(fx, torch_home, tmp_path):
    results, _ = score_fixture_folders(fx, torch_home, tmp_path / "eval.json")
    assert results["fid"] == pytest.approx(fx["fid"]["fid_calculate_fid_given_paths"], rel=FID_RTOL)
    assert results["lpips_diversity"] == pytest.approx(fx["lpips"]["diversity"], abs=LPIPS_ATOL)


def test_frechet_distance_is_the_protocols_formula_with_scipys_sqrtm():
    """|mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)) on small full-rank statistics, against the same formula
    through the eigenvalues of S2^1/2 S1 S2^1/2 (the fixture-sized case runs in the slow tests)."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 16)).astype(np.float32), (rng.normal(size=(150, 16)) * 1.5 + 0.3).astype(np.float32)
    (mu1, s1), (mu2, s2) = pp.feature_statistics(a), pp.feature_statistics(b)
    assert mu1.dtype == np.float32 and s1.dtype == np.float64  # StarGAN v2's dtypes
    w, v = np.linalg.eigh(s2)
    root = (v * np.sqrt(w)) @ v.T
    expected = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
                     - 2 * np.sqrt(np.linalg.eigvalsh(root @ s1 @ root)).sum())
    assert pp.fid_from_features(a, b) == pytest.approx(expected, rel=1e-9)
    assert pp.fid_from_features(a, a) == pytest.approx(0.0, abs=1e-9)


def test_cli_scores_a_folder_of_outputs_as_the_papers_code(folder_run, fx):
    results, stdout = folder_run
    assert results["fid"] == pytest.approx(fx["fid"]["fid_calculate_fid_given_paths"], rel=FID_RTOL)
    assert results["lpips_diversity"] == pytest.approx(fx["lpips"]["diversity"], abs=LPIPS_ATOL)
    # pytorch-fid's preprocessing on the same network is 91% off: the tolerance separates the protocols
    assert abs(fx["contrast"]["pytorch_fid_preprocessing"]["fid"] / results["fid"] - 1) > 100 * FID_RTOL


def test_cli_reports_protocol_sets_counts_and_weights(folder_run, fx, torch_home):
    results, stdout = folder_run
    assert results["protocol"] == "paper" and "StarGAN v2" in results["protocol_description"]
    assert results["real"] == [str((fx["root"] / "real").resolve())]
    assert results["fake"] == str((fx["root"] / "fake").resolve())
    assert (results["num_real"], results["num_fake"], results["num_inputs"], results["num_outputs"]) == (40, 60, 6, 10)
    weights = results["weights"]
    assert Path(weights["inception"]["file"]) == torch_home / "hub/checkpoints" / INCEPTION_WEIGHTS_FILE
    assert Path(weights["alexnet"]["file"]).name == ALEXNET_WEIGHTS_FILE
    assert Path(weights["lpips_linear"]["file"]).parts[-3:] == ("weights", "v0.1", "alex.pth")
    # random stand-ins under published names: their sha256 does not start with the name's hash
    assert weights["inception"]["published"] is False and weights["alexnet"]["published"] is False
    assert len(weights["inception"]["sha256"]) == 64
    for text in ["protocol: paper", "(40 images)", "(60 images = 6 inputs x 10 outputs)", INCEPTION_WEIGHTS_FILE,
                 ALEXNET_WEIGHTS_FILE, "NOT the published file", "FID", "Diversity (LPIPS)"]:
        assert text in stdout, text


@pytest.mark.slow  # one more 2048x2048 sqrtm (~15 s on one core); the CLI test covers the same function
def test_frechet_distance_of_the_fixtures_features(fx):
    fid = pp.fid_from_features(fx["inception"]["features_real"].numpy(), fx["inception"]["features_fake"].numpy())
    assert fid == pytest.approx(fx["fid"]["fid_file_order_bs50"], rel=2e-6)


def test_missing_weights_stop_with_the_file_names(fx, tmp_path, torch_home):
    args = ["--protocol", "paper", "--real", fx["root"] / "real", "--fake", fx["root"] / "fake",
            "--output", tmp_path / "eval.json"]
    status, _, stderr = run_script("scripts/evaluate.py", *args, env={"TORCH_HOME": str(tmp_path / "empty")})
    assert status == 2 and not (tmp_path / "eval.json").exists()
    hub = str(tmp_path / "empty" / "hub" / "checkpoints")
    assert INCEPTION_WEIGHTS_FILE in stderr and ALEXNET_WEIGHTS_FILE in stderr and hub in stderr
    assert "download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth" in stderr
    # one file present: the message names the other only
    only_alexnet = tmp_path / "one" / "hub" / "checkpoints"
    only_alexnet.mkdir(parents=True)
    (only_alexnet / ALEXNET_WEIGHTS_FILE).symlink_to(torch_home / "hub" / "checkpoints" / ALEXNET_WEIGHTS_FILE)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(tmp_path / "one"))
        with pytest.raises(MissingWeightsError, match=INCEPTION_WEIGHTS_FILE) as err:
            pp.load_networks()
    assert ALEXNET_WEIGHTS_FILE not in str(err.value)


def test_fake_folder_must_hold_ten_outputs_per_input_sorted_together(tmp_path):
    ours = [Path(f"out/cat{i}__s{k}.png") for i in (1, 2) for k in range(10)]  # scripts/translate.py names
    gpunit_published = [Path(f"{i:04d}_{k}.jpg") for i in range(3) for k in range(10)]  # GP-UNIT's NNNN_K.jpg
    assert [len(g) for g in pp.group_outputs(ours)] == [10, 10]
    assert pp.group_outputs(gpunit_published)[1] == gpunit_published[10:20]
    with pytest.raises(ValueError, match="has 11 file"):  # an overview grid among the outputs
        pp.group_outputs(ours + [Path("out/cat1__grid.png")])
    with pytest.raises(ValueError, match="has 9 file"):
        pp.group_outputs(gpunit_published[:-1])
    with pytest.raises(ValueError, match="exactly 10 outputs per input"):
        pp.group_outputs([Path(f"img{k}.png") for k in range(20)])  # no <input>_<k> names


# ----------------------------------------------------------------------------- published resize
def published_by_hand(img: Image.Image, size: int) -> torch.Tensor:
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 127.5 - 1
    return F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=True)[0]


def photo(path: Path, size=(40, 30), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_published_resize_is_a_float_align_corners_interpolation(tmp_path):
    img = load_rgb(photo(tmp_path / "x.png", (90, 40)))  # downscaled and squashed
    ours = model_input(img, SIZE, "published")
    by_hand = published_by_hand(img, SIZE)
    torch.testing.assert_close(ours, by_hand, rtol=0, atol=1e-6)
    # what the tolerance rules out: PIL's antialiased resize, align_corners=False, 8-bit rounding
    assert (model_input(img, SIZE, "stretch") - by_hand).abs().max() > 0.05
    x = TF.normalize(TF.to_tensor(img), [0.5] * 3, [0.5] * 3)[None]
    assert (F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[0] - by_hand).abs().max() > 0.05
    rounded = TF.to_tensor(resize_for_model(img, SIZE, "published")) * 2 - 1
    assert 0 < (rounded - ours).abs().max() <= 1.01 / 255
    # the evaluation loader takes the policy; "stretch" keeps the pixels of the standard protocol's loader
    assert torch.equal(ImageFolderDataset([str(tmp_path)], SIZE, resize="published")[0]["x"], ours)
    assert torch.equal(ImageFolderDataset([str(tmp_path)], SIZE, resize="stretch")[0]["x"],
                       ImageFolderDataset([str(tmp_path)], SIZE)[0]["x"])


@pytest.fixture(scope="module")
def translator():
    torch.manual_seed(0)
    return Translator(ContentEncoder(SIZE, 8, 8, 16), Generator(SIZE, 8, 8, 16, style_dim=16, style_base_channels=8,
                                                                 style_hidden=8), StyleSampler(8, 16, 16)).eval()


def as_uint8(images: torch.Tensor) -> np.ndarray:
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_translate_script_resize_published(translator, tmp_path):
    checkpoint = save_translator(tmp_path / "t.pt", translator.content_encoder, translator.generator,
                                 translator.sampler)
    source = photo(tmp_path / "in" / "cat.png", (90, 40))
    status, _, stderr = run_script("scripts/translate.py", "--checkpoint", checkpoint, "--input", tmp_path / "in",
                                   "--output", tmp_path / "out", "--num-styles", 2, "--resize", "published",
                                   "--no-grid", "--no-progress", "--device", "cpu")
    assert status == 0, stderr[-2000:]
    codes = translator.sample_styles(2, seed=0)  # translate_folder's shared styles
    x = published_by_hand(load_rgb(source), SIZE)[None].repeat(2, 1, 1, 1)
    expected = as_uint8(translator.translate_codes(x, codes))
    stretch = model_input(load_rgb(source), SIZE, "stretch")[None].repeat(2, 1, 1, 1)
    stretched = as_uint8(translator.translate_codes(stretch, codes))
    for k in range(2):
        written = np.asarray(Image.open(tmp_path / "out" / f"cat__s{k}.png"))
        assert np.abs(written.astype(int) - expected[k]).max() <= 1  # float rounding of the same input
        assert np.abs(written.astype(int) - stretched[k]).max() > 1  # and not what the stretch input gives


def test_paper_outputs_of_a_translator_are_named_and_made_from_published_inputs(translator, tmp_path):
    sources = [photo(tmp_path / "in" / f"{name}.png", (90, 40), seed=i) for i, name in enumerate(["a", "b", "c"])]
    count = write_translations(translator, [str(tmp_path / "in")], tmp_path / "fake", num_outputs=3, seed=5,
                               batch_size=2, progress=False)
    files = pp.list_images(tmp_path / "fake")
    assert count == 9 and [p.name for p in files] == [f"{i:04d}_{k:02d}.png" for i in (1, 2, 3) for k in (1, 2, 3)]
    assert [len(g) for g in pp.group_outputs(files, 3)] == [3, 3, 3]
    # the first batch (a, b): latent-guided, one seed drawn from --seed per batch, inputs resized as published
    rng = torch.Generator().manual_seed(5)
    x = torch.stack([published_by_hand(load_rgb(p), SIZE) for p in sources[:2]])
    expected = as_uint8(translator.translate(x, num_styles=3, seed=int(torch.randint(0, 2**31 - 1, (), generator=rng))))
    for j, path in enumerate(files[:6]):
        assert np.abs(np.asarray(Image.open(path)).astype(int) - expected[j]).max() <= 1, path.name
    with pytest.raises(ValueError, match="not empty"):  # the protocol would score old files too
        write_translations(translator, [str(tmp_path / "in")], tmp_path / "fake", progress=False)


# ----------------------------------------------------------------------------- standard protocol
def test_standard_protocol_reports_itself_and_rejects_paper_options(translator, tmp_path, fx):
    for i in range(3):
        photo(tmp_path / "content" / f"{i}.png", seed=i)
        photo(tmp_path / "real" / f"{i}.png", seed=10 + i)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(tmp_path / "empty"))
        results = evaluate(translator, [str(tmp_path / "content")], [str(tmp_path / "real")], num_outputs=2,
                           progress=False, resize="published")
    assert results["protocol"] == "standard" and results["resize"] == "published"
    assert results["real"] == [str((tmp_path / "real").resolve())] and "fid_kid" in results["skipped"]
    assert format_report(results).startswith("protocol: standard")
    status, _, stderr = run_script("scripts/evaluate.py", "--checkpoint", "x.pt", "--content", tmp_path,
                                   "--real", tmp_path, "--fake", fx["root"] / "fake")
    assert status == 2 and "--fake is for --protocol paper" in stderr
    status, _, stderr = run_script("scripts/evaluate.py", "--protocol", "paper", "--real", tmp_path)
    assert status == 2 and "needs --fake" in stderr


@pytest.mark.slow  # a second full FID (sqrtm of 2048x2048, ~20 s on one core)
def test_cli_translates_then_scores_under_the_paper_protocol(translator, torch_home, tmp_path):
    checkpoint = save_translator(tmp_path / "t.pt", translator.content_encoder, translator.generator,
                                 translator.sampler)
    for i in range(2):
        photo(tmp_path / "content" / f"{i}.png", (90, 40), seed=i)
    for i in range(4):
        photo(tmp_path / "real" / f"{i}.jpg", (50, 50), seed=10 + i)
    status, stdout, stderr = run_script(
        "scripts/evaluate.py", "--protocol", "paper", "--checkpoint", checkpoint, "--content", tmp_path / "content",
        "--real", tmp_path / "real", "--fake", tmp_path / "fake", "--output", tmp_path / "eval.json",
        "--no-progress", "--device", "cpu", env={"TORCH_HOME": str(torch_home)})
    assert status == 0, stderr[-3000:]
    results = json.loads((tmp_path / "eval.json").read_text())
    assert (results["num_real"], results["num_fake"], results["num_inputs"]) == (4, 20, 2)
    assert results["resize"] == "published" and results["mode"] == "latent" and np.isfinite(results["fid"])
    assert results["lpips_diversity"] > 0 and "latent-guided, resize published" in stdout
