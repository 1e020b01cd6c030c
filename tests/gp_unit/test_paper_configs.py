"""The paper's task configs: published image counts per folder, and where each setting comes from."""
import re
from pathlib import Path

import pytest
import torch
import yaml

from gpunit.engine.config import load_config
from gpunit.gp_unit.config import Stage1Config, Stage2Config

REPO = Path(__file__).resolve().parents[2]
STAGE2 = sorted((REPO / "configs/gp_unit/stage2").glob("*.yaml"))
# Tasks whose training command the authors did not publish: every setting says where it comes from.
UNPUBLISHED = ["dog2cat", "face2cat", "bird2dog", "face2metface"]
TAG = re.compile(r"#\s*(paper|authors' README|ours)\b")
KEY = re.compile(r"^\s*([A-Za-z_]\w*):(.*)$")


def test_stage1_uses_the_published_image_counts():
    """Published: 600 images per class folder and all 29,000 CelebA-HQ faces, ~14% of the real images."""
    d = load_config(REPO / "configs/gp_unit/stage1/synimagenet291.yaml", Stage1Config).data
    assert d.images_per_domain == 600
    assert d.domain_counts == {"1001_face": 29000}
    faces = d.domain_counts["1001_face"]
    assert 0.14 < faces / (291 * d.images_per_domain + faces) < 0.15


def test_stage1_rejects_an_unknown_folder_in_domain_counts(tiny_synthetic, tmp_path):
    from gpunit.gp_unit.stage1 import Stage1Trainer

    sets = [f"data.paired_root={tiny_synthetic}/pairs", f"data.paired_mask_root={tiny_synthetic}/pairs_mask",
            f"data.unpaired_root={tiny_synthetic}/unpaired", f"data.unpaired_mask_root={tiny_synthetic}/unpaired_mask",
            "data.test_root=null", "data.num_workers=0", "model.base_channels=8", "model.max_channels=16",
            "train.batch_size=2", f"out_dir={tmp_path}"]
    folder = sorted(p.name for p in (tiny_synthetic / "unpaired").iterdir())[0]
    stage1 = REPO / "configs/gp_unit/stage1/synthetic.yaml"
    cfg = load_config(stage1, Stage1Config, sets + [f"data.domain_counts={{{folder}: 1}}"])
    trainer = Stage1Trainer(cfg, torch.device("cpu"))
    counts = {}
    for it in trainer.unpaired.items:
        counts[trainer.unpaired.domains[it.domain]] = counts.get(trainer.unpaired.domains[it.domain], 0) + 1
    assert counts[folder] == 1 and all(n == 4 for name, n in counts.items() if name != folder)
    cfg = load_config(stage1, Stage1Config, sets + ["data.domain_counts={1001_fcae: 9}"])
    with pytest.raises(ValueError, match="domain_counts names \\['1001_fcae'\\]"):
        Stage1Trainer(cfg, torch.device("cpu"))


@pytest.mark.parametrize("path", STAGE2, ids=[p.stem for p in STAGE2])
def test_every_folder_list_has_explicit_counts(path):
    """A config that lists folders says how many images of each it uses (0 = all), in the same file."""
    data = (yaml.safe_load(path.read_text()) or {}).get("data", {})
    for side in ("source", "target"):
        if side in data:
            assert len(data.get(f"{side}_counts", [])) == len(data[side]), f"{path.name}: {side}_counts"


def test_published_counts():
    counts = {p.stem: load_config(p, Stage2Config).data for p in STAGE2 if p.stem != "paper"}
    expected = {"cat2dog": ([4000], [4000]), "dog2cat": ([4000], [4000]), "cat2face": ([4000], [0]),
                "face2cat": ([0], [4000]), "male2female": ([0], [0]), "bird2dog": ([600] * 4, [600] * 4),
                "bird2car": ([600] * 4, [600] * 4), "face2metface": ([0, 0], [0])}
    for task, (source, target) in expected.items():
        assert (counts[task].source_counts, counts[task].target_counts) == (source, target), task


@pytest.mark.parametrize("task", UNPUBLISHED)
def test_unpublished_task_settings_say_where_they_come_from(task):
    """Each setting (besides base and name) carries a '# paper', '# authors' README' or '# ours' comment."""
    blocks = []
    for line in (REPO / f"configs/gp_unit/stage2/{task}.yaml").read_text().splitlines():
        match = KEY.match(line)
        if match:
            blocks.append((match.group(1), match.group(2).split("#")[0].strip(), [line]))
        elif blocks:
            blocks[-1][2].append(line)  # continuation of a multi-line value
    leaves = [(key, lines) for key, value, lines in blocks if value and key not in ("base", "name")]
    assert len(leaves) >= 3
    for key, lines in leaves:
        assert any(TAG.search(line) for line in lines), f"{task}: '{key}' does not say where it comes from"
