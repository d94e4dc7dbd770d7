
import numpy as np


def disk_image(shape=(96, 96), n=8, seed=0, radius=(5, 9), noise=0.08, gradient=0.0):
    """Bright disks (instance labels 1..n) on a dark noisy background; float32 image, int32 labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    k = 0
    for _ in range(n * 10):
        if k == n:
            break
        r = rng.uniform(*radius)
        cy, cx = rng.uniform(r, shape[0] - r), rng.uniform(r, shape[1] - r)
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        if labels[disk].any():
            continue
        k += 1
        labels[disk] = k
    image = 0.1 + 0.6 * (labels > 0) + gradient * xx / shape[1]
    image = image + rng.normal(0, noise, shape)
    return image.astype(np.float32), labels


def disk_set(n_images, seed=0, **kw):
    pairs = [disk_image(seed=seed * 1000 + i, **kw) for i in range(n_images)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2 * np.logical_and(a, b).sum() / s


# ---------------------------------------------------------------- tests
import pytest
import torch

from napari_microseg.errors import InputError
from napari_microseg.training.augment import AugmentConfig, augment_batch
from napari_microseg.training.data import (
    IGNORE,
    PatchSampler,
    find_image_label_pairs,
    load_training_pairs,
    make_target,
    prepare_training_data,
    split_train_val,
    tile_for_validation,
)


def test_three_class_target_separates_touching_nuclei():
    lab = np.zeros((12, 12), np.int32)
    lab[2:10, 1:6] = 1
    lab[2:10, 6:11] = 2  # touching at columns 5|6
    t = make_target(lab, "three_class")
    assert set(np.unique(t)) == {0, 1, 2}
    assert (t[4:8, 5] == 2).all() and (t[4:8, 6] == 2).all()  # inner borders on both sides
    interior = t == 1
    from scipy import ndimage as ndi

    assert ndi.label(interior)[1] == 2  # interiors are separate objects
    assert (t[lab == 0] == 0).all()


def test_binary_and_multiclass_targets_and_ignore():
    lab = np.array([[0, 3, -1], [1, 0, 2]])
    np.testing.assert_array_equal(make_target(lab, "binary"), [[0, 1, IGNORE], [1, 0, 1]])
    np.testing.assert_array_equal(make_target(lab, "multiclass", n_classes=4), [[0, 3, IGNORE], [1, 0, 2]])
    with pytest.raises(InputError):
        make_target(lab, "multiclass", n_classes=3)
    # sparse painting: 0 = not annotated, 5 = painted background
    sparse = np.array([[0, 5, 2], [5, 0, 1]])
    np.testing.assert_array_equal(
        make_target(sparse, "binary", unlabelled_is_ignored=True, background_value=5), [[IGNORE, 0, 1], [0, IGNORE, 1]]
    )
    mask = np.array([[True, False, False], [False, False, True]])
    np.testing.assert_array_equal(make_target(np.ones((2, 3), int), "binary", ignore_mask=mask), [[IGNORE, 1, 1], [1, 1, IGNORE]])


def test_prepare_stack_uses_only_annotated_frames_and_checks_input():
    imgs, labs = disk_set(4)
    stack = np.stack(imgs)
    lstack = np.zeros(stack.shape, np.int32)
    lstack[1], lstack[3] = labs[1], labs[3]
    td = prepare_training_data(stack, lstack)
    assert [it.name for it in td.items] == ["image 1", "image 3"]
    assert td.items[0].image.shape == (1, 96, 96) and td.items[0].image.dtype == np.float32
    # a stack inside a list (the Training widget's layers) is split the same way, beside a 2-D image
    mixed = prepare_training_data([stack, imgs[0]], [lstack, labs[0]])
    assert len(mixed) == 3
    np.testing.assert_array_equal(mixed.items[2].target, prepare_training_data(imgs[0], labs[0]).items[0].target)
    with pytest.raises(InputError, match="shape"):
        prepare_training_data([imgs[0]], [labs[0][:50]])
    with pytest.raises(InputError, match="no annotated"):
        prepare_training_data([imgs[0]], [np.full((96, 96), -1)])
    bad = imgs[0].copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        prepare_training_data([bad], [labs[0]])


def test_empty_fields_are_negative_examples_and_background_only_painting_is_refused(tmp_path):
    import tifffile

    imgs, labs = disk_set(3)
    empty = np.zeros_like(labs[0])
    # separate images: one labelled all 0 is an empty field, used (it teaches what is not an object)
    td = prepare_training_data([imgs[0], imgs[1], imgs[2]], [labs[0], labs[1], empty])
    assert len(td) == 3
    # frames of a stack labelled all 0 are not annotated (as before)
    assert len(prepare_training_data(np.stack(imgs), np.stack([labs[0], labs[1], empty]))) == 2
    (tmp_path / "im").mkdir()
    (tmp_path / "lb").mkdir()
    tifffile.imwrite(tmp_path / "im" / "movie.tif", np.stack(imgs))
    tifffile.imwrite(tmp_path / "lb" / "movie.tif", np.stack([labs[0], empty, labs[2]]).astype(np.uint16))
    tifffile.imwrite(tmp_path / "im" / "field.tif", imgs[1])
    tifffile.imwrite(tmp_path / "lb" / "field.tif", empty.astype(np.uint16))
    _, _, names = load_training_pairs(tmp_path / "im", tmp_path / "lb")
    assert names == ["field.tif", "movie.tif[0]", "movie.tif[2]"]
    # a stack labelled in one frame only is refused, not trained as a many-channel image
    tifffile.imwrite(tmp_path / "im" / "field.tif", np.stack(imgs * 3))
    with pytest.raises(InputError, match="labels for every frame"):
        load_training_pairs(tmp_path / "im", tmp_path / "lb")
    # sparse painting with background only (napari paints label 1 by default, the background id)
    painted = np.zeros_like(labs[0])
    painted[labs[0] > 0] = 1
    with pytest.raises(InputError, match="background only"):
        prepare_training_data([imgs[0]], [painted], output_mode="three_class", unlabelled_is_ignored=True,
                              background_value=1)


def test_split_by_image_and_by_strip():
    imgs, labs = disk_set(5)
    td = prepare_training_data(imgs, labs)
    tr, va = split_train_val(td, 0.2, seed=0)
    assert len(tr) == 4 and len(va) == 1
    assert not any(v is t for v in va.items for t in tr.items)
    one = prepare_training_data(imgs[0], labs[0])
    tr, va = split_train_val(one, 0.25)
    # the strip is max(min_val_size=32, 25 % of 96) columns at the end: no pixel in both
    assert tr.items[0].shape == (96, 64) and va.items[0].shape == (96, 32)
    np.testing.assert_array_equal(va.items[0].image, one.items[0].image[:, :, 64:])
    assert split_train_val(one, 0.0)[1] is None


def test_time_lapse_frames_are_held_out_as_a_block_not_as_neighbours(tmp_path):
    import tifffile

    from napari_microseg.io.images import sequence_of

    imgs, labs = disk_set(10)
    movie = prepare_training_data(np.stack(imgs), np.stack(labs))  # one (T, Y, X) stack: a time-lapse
    tr, va = split_train_val(movie, 0.2, seed=0)
    assert [it.name for it in va.items] == ["image 8", "image 9"]  # its last frames, whatever the seed
    assert [it.name for it in split_train_val(movie, 0.2, seed=7)[1].items] == ["image 8", "image 9"]
    # two stacks in a list (the widget's layers) and an image of its own: each stack gives its last frames
    mixed = prepare_training_data([np.stack(imgs[:5]), np.stack(imgs[5:]), imgs[0]],
                                  [np.stack(labs[:5]), np.stack(labs[5:]), labs[0]])
    held = {(it.sequence, it.name) for it in split_train_val(mixed, 0.2)[1].items}
    assert held == {(0, "image 4"), (1, "image 9")}
    # the command line reads stack files frame by frame: the frame names say which stack they come from
    (tmp_path / "im").mkdir()
    (tmp_path / "lb").mkdir()
    tifffile.imwrite(tmp_path / "im" / "movie.tif", np.stack(imgs))
    tifffile.imwrite(tmp_path / "lb" / "movie.tif", np.stack(labs).astype(np.uint16))
    ims, lbs, names = load_training_pairs(tmp_path / "im", tmp_path / "lb")
    assert sequence_of(names[3]) == "movie.tif" and sequence_of("cell[a].tif") is None
    from_files = prepare_training_data(ims, lbs, names=names, sequences=[sequence_of(n) for n in names])
    assert [it.name for it in split_train_val(from_files, 0.2)[1].items] == ["movie.tif[8]", "movie.tif[9]"]


def test_patch_sampler_pads_small_images_with_ignore_and_favours_foreground():
    img, lab = disk_image((40, 50), n=2, seed=3)
    td = prepare_training_data(img, lab)
    s = PatchSampler(td, 64, foreground_bias=1.0, seed=0)
    x, y = s.sample(6)
    assert x.shape == (6, 1, 64, 64) and y.shape == (6, 64, 64)
    assert (y == IGNORE).sum(axis=(1, 2)).min() == 64 * 64 - 40 * 50  # padding ignored
    big, blab = disk_image((256, 256), n=3, seed=4, radius=(4, 5))
    tdb = prepare_training_data(big, blab)
    fg_biased = PatchSampler(tdb, 32, foreground_bias=1.0, seed=0).sample(64)[1]
    uniform = PatchSampler(tdb, 32, foreground_bias=0.0, seed=0).sample(64)[1]
    assert (fg_biased == 1).mean() > 3 * (uniform == 1).mean()
    vx, vy = tile_for_validation(tdb, 64, max_tiles=100)
    assert vx.shape == (16, 1, 64, 64)


def test_object_sampling_favours_the_image_crowded_with_objects():
    # a large image with 2 big disks and a small one with 12 tiny ones: pixel sampling
    # draws mostly the large image, object sampling mostly the crowded small one
    big, blab = disk_image((192, 192), n=2, seed=6, radius=(14, 16))
    small, slab = disk_image((64, 64), n=12, seed=7, radius=(3, 4))
    td = prepare_training_data([big, small], [blab, slab], output_mode="three_class")
    by_pixels = PatchSampler(td, 32, image_sampling="pixels")
    by_objects = PatchSampler(td, 32, image_sampling="objects")
    assert by_pixels.image_p[0] == pytest.approx(192 * 192 / (192 * 192 + 64 * 64))
    n_small = int(slab.max())
    assert by_objects.image_p[1] == pytest.approx(n_small / (n_small + 2))
    mixed = PatchSampler(td, 32, image_sampling="mixed")
    np.testing.assert_allclose(mixed.image_p, (by_pixels.image_p + by_objects.image_p) / 2)
    drawn = np.bincount([mixed.rng.choice(2, p=mixed.image_p) for _ in range(2000)], minlength=2) / 2000
    np.testing.assert_allclose(drawn, mixed.image_p, atol=0.04)
    with pytest.raises(InputError, match="image_sampling"):
        PatchSampler(td, 32, image_sampling="area")


def test_augmentation_keeps_image_and_mask_aligned():
    img, lab = disk_image((64, 64), n=6, seed=5, noise=0.0)
    x = torch.from_numpy(img)[None, None].repeat(8, 1, 1, 1)
    y = torch.from_numpy((lab > 0).astype(np.int64))[None].repeat(8, 1, 1)
    y[:, :4, :] = IGNORE
    cfg = AugmentConfig(intensity=False, affine_p=1.0, rotation_deg=20, shear_deg=5, zoom=0.1)
    xa, ya = augment_batch(x.clone(), y.clone(), cfg, generator=torch.Generator().manual_seed(0))
    assert xa.shape == x.shape and ya.dtype == torch.int64
    assert set(torch.unique(ya).tolist()) <= {IGNORE, 0, 1}
    assert (ya == IGNORE).any()  # ignore survives warping
    assert not torch.equal(xa, x)  # something happened
    valid = ya >= 0
    agree = ((xa[:, 0] > 0.4) == (ya == 1))[valid].float().mean()
    assert agree > 0.97
    # repeatable with the same generator seed
    xb, yb = augment_batch(x.clone(), y.clone(), cfg, generator=torch.Generator().manual_seed(0))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_intensity_augmentation_leaves_targets():
    x = torch.rand(4, 1, 32, 32)
    y = (x[:, 0] > 0.5).long()
    cfg = AugmentConfig(flips=False, rot90=False, affine_p=0.0, intensity=True, noise_p=1.0)
    xa, ya = augment_batch(x.clone(), y.clone(), cfg, generator=torch.Generator().manual_seed(1))
    assert torch.equal(ya, y) and not torch.allclose(xa, x)


def test_file_pairs_matched_by_name(tmp_path):
    import tifffile

    (tmp_path / "im").mkdir()
    (tmp_path / "lb").mkdir()
    imgs, labs = disk_set(3)
    for i, (im, lb) in enumerate(zip(imgs, labs)):
        tifffile.imwrite(tmp_path / "im" / f"cell{i}.tif", im)
        tifffile.imwrite(tmp_path / "lb" / f"cell{i}_labels.tif", lb.astype(np.uint16))
    tifffile.imwrite(tmp_path / "im" / "unmatched.tif", imgs[0])
    pairs = find_image_label_pairs(tmp_path / "im", tmp_path / "lb")
    assert [(a.name, b.name) for a, b in pairs] == [(f"cell{i}.tif", f"cell{i}_labels.tif") for i in range(3)]
    ims, lbs, names = load_training_pairs(str(tmp_path / "im" / "cell*.tif"), tmp_path / "lb")
    assert len(ims) == 3 and np.array_equal(lbs[2], labs[2])
    with pytest.raises(InputError):
        find_image_label_pairs(tmp_path / "im" / "nothing*.tif", tmp_path / "lb")


def test_a_z_stack_with_one_labels_plane_is_refused(tmp_path):
    """An ImageJ Z stack (axes ZYX) with 2-D labels: which plane do they label? Refused by name (it
    had become a 5-channel model). A file whose axes say CYX is refused too: `segment` takes one
    channel of it, so a model must be trained on one channel."""
    import tifffile

    imgs, labs = disk_set(1)
    for name in ("vol", "ch"):
        (tmp_path / name).mkdir()
        tifffile.imwrite(tmp_path / name / "lb.tif", labs[0].astype(np.uint16))
    planes = np.stack([imgs[0]] * 5).astype(np.float32)
    tifffile.imwrite(tmp_path / "vol" / "im.tif", planes, imagej=True, metadata={"axes": "ZYX"})
    with pytest.raises(InputError, match=r"Z stack of 5 planes \(axes ZYX\).*labels for every plane"):
        load_training_pairs(tmp_path / "vol" / "im.tif", tmp_path / "vol" / "lb.tif")
    tifffile.imwrite(tmp_path / "ch" / "im.tif", planes[:2], imagej=True, metadata={"axes": "CYX"})
    with pytest.raises(InputError, match="2 channels"):
        load_training_pairs(tmp_path / "ch" / "im.tif", tmp_path / "ch" / "lb.tif")


def test_real_dsb2018_pairs_load(shared_data):
    ims, lbs, names = load_training_pairs(shared_data / "dsb2018" / "images", shared_data / "dsb2018" / "labels", max_images=3)
    td = prepare_training_data(ims, lbs, output_mode="three_class", names=names)
    assert len(td) == 3 and td.class_frequencies()[2] > 0
