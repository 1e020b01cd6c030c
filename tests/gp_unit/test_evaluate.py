"""scripts/evaluate.py and the demo's pieces on tiny synthetic data; scripts/benchmark.py smoke run."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import record_calls, run_script

from gpunit.data.datasets import ImageFolderDataset
from gpunit.gp_unit.evaluate import evaluate, format_report, translate_test_set
from gpunit.gp_unit.models import ContentEncoder, Generator, StyleSampler
from gpunit.gp_unit.translator import Translator
from gpunit.gp_unit.weights import save_translator
from gpunit.metrics.content import content_consistency
from gpunit.metrics.domain_classifier import load_or_train_domain_classifier
from gpunit.metrics.fid import INCEPTION_WEIGHTS_FILE, InceptionFeatures, build_fid_inception, fid_from_features
from gpunit.metrics.kid import kernel_inception_distance

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no weights found unless given


@pytest.fixture(scope="module")
def translator():
    return Translator(ContentEncoder(64, 8, 8, 16), Generator(64, 8, 8, 16, style_dim=16, style_base_channels=8,
                                                               style_hidden=8), StyleSampler(8, 16, 16)).eval()


def test_content_consistency_is_zero_for_the_content_image_itself(tiny_synthetic):
    from gpunit.data import synthetic
    from gpunit.metrics.content import content_rows
    rows = [r for r in content_rows(tiny_synthetic / "domains").values() if "/test/" in r["path"]][:6]
    images = [synthetic.render(r["seed"], r["index"], synthetic.CLASS_NAMES.index(r["class"]), 64)[0] for r in rows]
    result = content_consistency(images, rows)
    assert result["object_found"] == 1.0
    assert result["centroid_px"] < 1.0 and result["scale_rel"] < 0.1
    assert result["random_centroid_px"] > 3 * result["centroid_px"]  # other content is far off


def test_evaluate_synthetic_reports_and_skips_missing_weights(tiny_synthetic, translator, tmp_path):
    root = tiny_synthetic
    content = ImageFolderDataset([str(root / "domains/ellipse/test")], 64, resize="stretch")
    results = evaluate(translator, [str(root / "domains/ellipse/test")], [str(root / "domains/star/test")],
                       num_outputs=2, synthetic_root=str(root), progress=False)
    assert results["num_inputs"] == 4 and results["num_outputs"] == 2
    # directly: the share of the same translations (seed 0) that the domain classifier (the one evaluate trained,
    # read back from its cache) calls "star", and its accuracy on the held-out real images of every domain
    classifier = load_or_train_domain_classifier(root / "domains")
    outputs = torch.cat([out for _, out, _ in translate_test_set(translator, content, None, 2, 0, 16, False)])
    assert results["domain_accuracy"] == sum(p == "star" for p in classifier.predict(outputs)) / 8
    hits = []
    for name in classifier.domain_names:
        held_out = ImageFolderDataset([str(root / "domains" / name / "test")], 64)
        hits += [p == name for p in classifier.predict(torch.stack([held_out[i]["x"] for i in range(len(held_out))]))]
    assert len(hits) == 12 and results["domain_classifier_test_accuracy"] == pytest.approx(np.mean(hits))
    assert {"content_centroid_px", "content_random_centroid_px", "content_object_found"} <= set(results)
    assert {"shape_accuracy", "silhouette_iou", "source_shape_accuracy", "random_silhouette_iou"} <= set(results)
    assert results["source_shape_accuracy"] == 0.0  # the untranslated ellipses are no stars
    assert "pt_inception-2015-12-05-6726825d.pth" in results["skipped"]["fid_kid"]
    assert "alexnet-owt-7be5be79.pth" in results["skipped"]["lpips_diversity"]
    report = format_report(results)
    assert "Domain accuracy" in report and "Shape accuracy" in report and "skipped" in report


def test_evaluate_fid_with_weights_file(tiny_synthetic, translator, tmp_path, monkeypatch):
    torch.save(build_fid_inception().state_dict(), tmp_path / INCEPTION_WEIGHTS_FILE)
    content, real = tiny_synthetic / "domains/ellipse/test", tiny_synthetic / "domains/star/test"
    inception_calls = record_calls(monkeypatch, InceptionFeatures, "forward")
    results = evaluate(translator, [str(content)], [str(real)], mode="reference", num_outputs=2,
                       inception_weights=str(tmp_path), progress=False)
    assert "fid_kid" not in results["skipped"]
    assert results["weights"]["inception"] == str(tmp_path / INCEPTION_WEIGHTS_FILE)
    assert results["num_fake"] == 8 and results["num_real"] == 4
    # Inception saw the exemplar translations (seed 0) and the real images, and FID and KID are those of its
    # features (Inception itself: tests/metrics/)
    fakes = torch.cat([out for _, out, _ in translate_test_set(
        translator, ImageFolderDataset([str(content)], 64, resize="stretch"),
        ImageFolderDataset([str(real)], 64, resize="stretch"), 2, 0, 16, False)])
    reals = ImageFolderDataset([str(real)], 64)
    assert torch.equal(torch.cat([x for x, _ in inception_calls]),
                       torch.cat([fakes, torch.stack([reals[i]["x"] for i in range(len(reals))])]))
    features = torch.cat([f for _, f in inception_calls]).double().numpy()
    assert results["fid"] == pytest.approx(fid_from_features(features[:8], features[8:]), rel=1e-6)
    assert results["kid"] == pytest.approx(kernel_inception_distance(features[:8], features[8:])[0], rel=1e-6,
                                           abs=1e-9)


def test_evaluate_script(tiny_synthetic, translator, tmp_path):
    path = save_translator(tmp_path / "t.pt", translator.content_encoder, translator.generator, translator.sampler)
    out = tmp_path / "eval.json"
    root = tiny_synthetic
    done = run_script("scripts/evaluate.py", "--checkpoint", path, "--content", root / "domains/ellipse/test",
                      "--real", root / "domains/star/test", "--num-outputs", 2, "--synthetic-root", root,
                      "--output", out, env={"TORCH_HOME": tmp_path})
    assert done.status == 0, done.err[-2000:]
    assert json.loads(out.read_text())["num_outputs"] == 2 and "Centroid error" in done.out


def test_benchmark_script(tmp_path):
    out = tmp_path / "bench.json"
    common = ["model.base_channels=8", "model.max_channels=16", "train.batch_size=2", "data.num_workers=0"]
    stage2 = ["model.style_base_channels=8", "model.style_dim=16", "model.style_hidden=8", "model.disc_base_channels=8",
              "model.disc_max_channels=16"]
    result = run_script("scripts/benchmark.py", "--stage2", "configs/gp_unit/stage2/synthetic.yaml", "--stage1",
                        "configs/gp_unit/stage1/synthetic.yaml", "--set", *common, "--set2", *stage2, "--steps", 1,
                        "--warmup", 0, "--device", "cpu", "--agreement-steps", 2, "--translate-batch", 3,
                        "--output", out)
    assert result.status == 0, result.err[-2000:]
    report = json.loads(out.read_text())
    rows = {r["measure"]: r for r in report["rows"]}
    assert {"stage1 step (data)", "stage2 G step", "stage2 D step", "stage2 loader", "translate (exemplar, batch 3)",
            "stage2 step (G+D+EMA, data)", "stage2 step, published fp32"} <= set(rows)
    # each row's two figures measure the same time: images per step (batch 2; Stage II: x and y, Stage I: the
    # pair and an unpaired image) over its seconds per step
    images = {measure: 4 for measure in rows} | {"stage1 step (data)": 6, "translate (exemplar, batch 3)": 3}
    for measure, row in rows.items():
        seconds = row["ms_per_step"] / 1000
        assert seconds > 0 and row["images_per_s"] == pytest.approx(images[measure] / seconds), measure
    speedup = rows["stage2 step (G+D+EMA, data)"]["images_per_s"] / rows["stage2 step, published fp32"]["images_per_s"]
    assert report["stage2_speedup_over_published"] == pytest.approx(speedup)
    assert f"{speedup:.2f}x the images/s of the published step" in result.out
    # the published step and ours, side by side from the same weights, report the same loss terms
    agreement = {r["term"]: r for r in report["loss_agreement"]}
    assert set(agreement) == {"loss/g/adv", "loss/g/con", "loss/g/sty", "loss/g/msk", "loss/g/rec", "loss/d/adv",
                              "loss/d/r1"}
    assert agreement["loss/d/adv"]["relative_difference"] < 0.05  # two steps: still close to log(4)
    assert "rel. diff" in result.out


def test_benchmark_reads_the_configs_folders_when_present(tiny_synthetic, tmp_path):
    from gpunit.engine.config import load_config
    from gpunit.gp_unit.benchmark import stage2_trainers
    from gpunit.gp_unit.config import Stage2Config

    sets = ["model.base_channels=8", "model.max_channels=16", "model.style_base_channels=8", "model.style_dim=16",
            "model.style_hidden=8", "model.disc_base_channels=8", "model.disc_max_channels=16",
            "train.batch_size=2", "data.num_workers=0"]
    source = tiny_synthetic / "domains" / "ellipse" / "train"
    cfg = load_config(REPO / "configs/gp_unit/stage2/synthetic.yaml", Stage2Config,
                      sets + [f"data.source=[{source}]", f"data.target=[{tiny_synthetic}/domains/star/train]"])
    with stage2_trainers(cfg, torch.device("cpu")) as (ours, reference):
        assert all(Path(p).parent == source for p in ours.dataset.source)
        assert reference.cfg.train.precision == "fp32" and not reference.cfg.train.channels_last
    cfg.data.source = [str(tmp_path / "not_there")]
    with stage2_trainers(cfg, torch.device("cpu")) as (ours, _):
        assert all(Path(p).parent.name == "source" for p in ours.dataset.source)  # random stand-ins


def test_benchmark_reference_runs_the_published_layer_order_with_the_same_result():
    """Our G and D fold nearest upsampling and average pooling into their convs and move them past
    AdaIN and the 1x1 shortcuts; the benchmark's published step puts them back where the authors
    have them. Same function, other order."""
    import copy
    from types import SimpleNamespace

    from gpunit.gp_unit.benchmark import use_published_layer_order
    from gpunit.gp_unit.models import Discriminator
    from gpunit.gp_unit.models.discriminator import DownResBlock
    from gpunit.gp_unit.models.generator import AdaResBlock, DynamicSkipLayer

    torch.manual_seed(0)
    G = Generator(64, 8, 8, 16, style_dim=16, style_base_channels=8, style_hidden=8).double()
    D = Discriminator(64, 8, 16).double()
    published = SimpleNamespace(generator=copy.deepcopy(G), generator_ema=copy.deepcopy(G),
                                discriminator=copy.deepcopy(D))
    use_published_layer_order(published)
    content = ContentEncoder(64, 8, 8, 16).double()(torch.rand(2, 3, 64, 64, dtype=torch.double) * 2 - 1,
                                                    all_features=True)
    style = torch.rand(2, 16, dtype=torch.double)
    images = torch.rand(2, 3, 64, 64, dtype=torch.double) * 2 - 1
    with torch.no_grad():
        ours = G(content, style)[0], D(images, 3)
        theirs = published.generator(content, style)[0], published.discriminator(images, 3)
    torch.testing.assert_close(ours, theirs)  # float64: the reordering is exact up to rounding
    replaced = [m for net in vars(published).values() for m in net.modules()
                if "forward" in m.__dict__ or "transition" in m.__dict__]
    blocks = [m for net in (G, G, D) for m in net.modules()
              if isinstance(m, (AdaResBlock, DownResBlock, DynamicSkipLayer)) and getattr(m, "upsample", True)]
    assert len(replaced) == len(blocks) > 0
