"""Shape figures on the synthetic prior: a rendered star scores as a star, a star-textured ellipse does not."""
import math

import numpy as np
import pytest

from gpunit.data import synthetic
from gpunit.metrics.shape import shape_consistency, silhouette_ious

SIZE = 64
ROWS = [{"seed": 0, "index": synthetic.latent_index("domains/test", k), "class": "ellipse"} for k in range(12)]
STAR = synthetic.CLASS_NAMES.index("star")


def rendered(class_name, rows=ROWS):
    return [synthetic.render(r["seed"], r["index"], synthetic.CLASS_NAMES.index(class_name), SIZE)[0] for r in rows]


def star_textured_ellipses(rows=ROWS):
    """The failure the shape metric must catch: the ellipse's silhouette in the star's palette and checker."""
    out = []
    for r in rows:
        _, mask, _ = synthetic.render(r["seed"], r["index"], 0, SIZE)
        background = synthetic.render_background(r["seed"], r["index"], SIZE)
        yy, xx = np.mgrid[:SIZE, :SIZE]
        checker = np.where(((yy // 4 + xx // 4) % 2 == 0)[..., None], [240, 150, 20], [140, 30, 230])
        out.append((mask[..., None] * checker + (1 - mask[..., None]) * background).round().astype(np.uint8))
    return out


def test_a_rendered_star_scores_as_a_star_and_a_textured_ellipse_does_not():
    stars = shape_consistency(rendered("star"), ROWS, "star")
    assert stars["shape_accuracy"] == 1.0 and stars["silhouette_iou"] > 0.85 and stars["shape_found"] == 1.0
    fakes = shape_consistency(star_textured_ellipses(), ROWS, "star")
    assert fakes["shape_accuracy"] == 0.0 and fakes["silhouette_iou"] < 0.75 and fakes["shape_found"] == 1.0
    # baselines: the untranslated ellipses are no stars, and another image's pose fits worse than the own
    assert stars["source_shape_accuracy"] == 0.0 and stars["source_silhouette_iou"] < 0.75
    assert stars["random_silhouette_iou"] < stars["silhouette_iou"] - 0.2


@pytest.mark.parametrize("name", synthetic.CLASS_NAMES)
def test_every_class_is_recognised_by_its_silhouette(name):
    scores = shape_consistency(rendered(name, ROWS[:4]), ROWS[:4], name)
    assert scores["shape_accuracy"] == 1.0


def test_a_shifted_star_is_still_a_star():
    """The silhouettes move onto the translation's centroid: a small position error is not a shape error."""
    image = rendered("star")[0]
    background = synthetic.render_background(ROWS[0]["seed"], ROWS[0]["index"], SIZE)
    mask = synthetic.object_mask(image, background)
    ious = silhouette_ious(np.roll(mask, (2, -3), axis=(0, 1)), ROWS[0]["seed"], ROWS[0]["index"])
    assert int(np.argmax(ious)) == STAR and ious[STAR] > 0.85


def test_translations_without_objects_are_counted():
    blank = [synthetic.render_background(r["seed"], r["index"], SIZE) for r in ROWS]
    scores = shape_consistency(blank, ROWS, "star")
    assert scores["shape_found"] == 0.0 and math.isnan(scores["shape_accuracy"])
    with pytest.raises(ValueError, match="unknown synthetic class"):
        shape_consistency(blank, ROWS, "dragon")


def test_a_star_turned_where_the_ellipse_cannot_show_it_is_still_a_star():
    """An ellipse is a disk under the pose: the star's points may take any turn inside it. A crescent
    shows every turn, so there the same star is the wrong pose."""
    turn = np.radians(36.0)  # the inverted star: half of the star's 72-degree period, the farthest off
    star = synthetic.render_silhouette(ROWS[0]["seed"], ROWS[0]["index"], STAR, SIZE, spin=turn) >= 0.5
    from_ellipse = silhouette_ious(star, ROWS[0]["seed"], ROWS[0]["index"], synthetic.CLASS_NAMES.index("ellipse"))
    from_crescent = silhouette_ious(star, ROWS[0]["seed"], ROWS[0]["index"], synthetic.CLASS_NAMES.index("crescent"))
    assert int(np.argmax(from_ellipse)) == STAR and from_ellipse[STAR] > 0.85
    assert from_crescent[STAR] < from_ellipse[STAR] - 0.1


def test_silhouettes_are_the_rendered_masks():
    for name in ("star", "heart"):
        c = synthetic.CLASS_NAMES.index(name)
        image_mask = synthetic.render(ROWS[1]["seed"], ROWS[1]["index"], c, SIZE)[1]
        assert np.array_equal(synthetic.render_silhouette(ROWS[1]["seed"], ROWS[1]["index"], c, SIZE), image_mask)
