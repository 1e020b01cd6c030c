"""scripts/benchmark_deepi2i.py on tiny data and networks: every variant trains, scores and lands in the table."""
import json

import pytest

from gpunit.deepi2i.benchmark import COLUMNS, Job, format_table, job_overrides, run_benchmark
from gpunit.deepi2i.config import DeepI2IConfig
from gpunit.deepi2i.evaluate import score_on_synthetic_data
from gpunit.deepi2i.trainer import DeepI2ITrainer
from gpunit.deepi2i.translator import load_deepi2i_translator
from gpunit.engine.config import load_config

TINY = ["model.g_ch=4", "model.d_ch=4", "model.dim_z=20", "model.shared_dim=8", "model.d_attention=[16]",
        "train.batch_size=4"]


def test_each_variant_sets_what_it_names(tmp_path):
    def cfg(variant, size):
        config, sets = job_overrides(Job(variant, size, 3), tmp_path, tmp_path / "b.pt", tmp_path, 7, 5)
        return load_config(config, DeepI2IConfig, sets)
    transfer, scratch, plain = cfg("transfer", "small"), cfg("scratch", "large"), cfg("no_adaptor", "large")
    assert transfer.init.source == "gpunit_biggan" and transfer.data.per_class == 5 and transfer.train.seed == 3
    assert scratch.init.source == "scratch" and scratch.data.per_class == 0 and scratch.train.phase1_steps == 0
    assert plain.model.no_adaptor == [16, 8, 4] and transfer.model.no_adaptor == []
    assert transfer.train.iterations == scratch.train.iterations == 7


def test_the_benchmark_runs_every_variant_and_reuses_finished_runs(tiny_synthetic, tiny_biggan, tmp_path,
                                                                     monkeypatch):
    import gpunit.deepi2i.benchmark as bench
    real = bench.job_overrides
    monkeypatch.setattr(bench, "job_overrides", lambda *a, **k: (real(*a, **k)[0], real(*a, **k)[1] + TINY))
    # the benchmark's logic, not DeepI2I's training or its step-1 sample grids (tests/deepi2i/test_deepi2i_train.py)
    monkeypatch.setattr(DeepI2ITrainer, "sample_images", lambda self, step: {})
    out = tmp_path / "bench"
    options = dict(seeds=[4], iterations=1, small_per_class=2, eval_inputs_per_class=1, num_outputs=1, jobs=1)
    result = run_benchmark(tiny_synthetic, tiny_biggan, out, **options)
    runs = result["runs"]
    assert len(runs) == 3 * 2 and {(r["variant"], r["size"]) for r in runs} == {
        (v, s) for v in ("transfer", "scratch", "no_adaptor") for s in ("small", "large")}
    # a run's scores are its translator's, scored again here
    run = next(r for r in runs if (r["variant"], r["size"]) == ("scratch", "small"))
    translator = load_deepi2i_translator(out / "scratch_small_seed4" / "deepi2i.pt")
    again = score_on_synthetic_data(translator, tiny_synthetic / "domains", 1, 1, seed=1004)
    assert {k: run[k] for k in again} == json.loads(json.dumps(again))
    # the table: one row per variant and size, each the run's own figures (one seed: spread 0)
    table = (out / "benchmark.md").read_text()
    for r in runs:
        cells = " | ".join(f"{fmt.format(r[k])} ± {fmt.format(0.0)}" for k, _, fmt in COLUMNS)
        assert f"| {r['variant']} | {r['size']} | {cells} |" in table
    assert len([line for line in table.splitlines() if line.startswith("| ")]) == 2 + 6 and "seeds [4]" in table
    saved = json.loads((out / "benchmark.json").read_text())
    assert saved["runs"] == json.loads(json.dumps(runs))
    # a second start trains nothing: every run's scores are read back
    monkeypatch.setattr("gpunit.deepi2i.benchmark.run_deepi2i", lambda *a, **k: pytest.fail("trained again"))
    assert run_benchmark(tiny_synthetic, tiny_biggan, out, **options)["table"] == result["table"]


def test_bad_requests_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="demo.py --method deepi2i"):
        run_benchmark(tmp_path, tmp_path / "missing.pt", tmp_path)
    (tmp_path / "b.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="unknown variants"):
        run_benchmark(tmp_path, tmp_path / "b.pt", tmp_path, variants=["magic"])


def test_the_table_gives_mean_and_spread_over_seeds():
    base = {"texture_accuracy": 0.5, "shape_accuracy": 0.25, "silhouette_iou": 0.5, "centroid_px": 1.0,
            "angle_deg": 10.0, "random_centroid_px": 11.0, "random_angle_deg": 50.0, "chance": 0.125}
    runs = [{**base, "variant": "transfer", "size": "small", "seed": s, "shape_accuracy": a}
            for s, a in ((0, 0.2), (1, 0.4))]
    table = format_table(runs)
    assert "| transfer | small | 0.50 ± 0.00 | 0.30 ± 0.10 |" in table
