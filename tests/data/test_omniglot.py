"""Omniglot on the real archives (skipped when they are absent); the cache is built once per session."""

from __future__ import annotations

import dataclasses
import statistics
import time

import pytest
import torch

from maml_cli.data import Omniglot
from maml_cli.errors import MamlError


def variant(cfg, **changes) -> Omniglot:
    return Omniglot(dataclasses.replace(cfg, **changes))


def base_names(names) -> set[str]:
    return {name.rsplit("/rot", 1)[0] for name in names}


def test_maml_split_has_1100_100_423_characters_and_rotations_make_4400_train_classes(omniglot):
    assert [omniglot.num_classes(s) for s in omniglot.splits] == [4400, 100, 423]
    assert omniglot.input_shape == (1, 28, 28) and omniglot.task_kind == "classification"
    assert len(base_names(omniglot.pool("train").names)) == 1100


def test_maml_split_is_disjoint_complete_and_the_same_on_every_machine(omniglot):
    train, val, test = (base_names(omniglot.pool(s).names) for s in omniglot.splits)
    assert not (train & val or train & test or val & test) and len(train | val | test) == 1623
    assert omniglot.pool("train").names[:3] == (
        "Gurmukhi/character23/rot0",
        "Malayalam/character36/rot0",
        "Tifinagh/character36/rot0",
    )
    assert omniglot.pool("val").names[:2] == ("Tifinagh/character11", "N_Ko/character16")


def test_split_seed_gives_another_deterministic_split(omniglot_cfg, omniglot):
    other = variant(omniglot_cfg, split_seed=2)
    assert other.pool("val").names != omniglot.pool("val").names
    assert variant(omniglot_cfg, split_seed=2).pool("val").names == other.pool("val").names


def test_lake_split_trains_on_background_alphabets_but_five_held_out_for_val_and_tests_on_evaluation(omniglot_cfg):
    lake = variant(omniglot_cfg, split="lake", augment_splits=[])
    assert [lake.num_classes(s) for s in lake.splits] == [804, 160, 659]
    alphabets = {s: {n.split("/")[0] for n in lake.pool(s).names} for s in lake.splits}
    assert len(alphabets["val"]) == 5 and len(alphabets["test"]) == 20 and len(alphabets["train"]) == 25
    assert not (alphabets["train"] & alphabets["val"] or alphabets["test"] & (alphabets["train"] | alphabets["val"]))


def test_rotated_classes_hold_every_image_of_the_original_rotated_the_same_way(omniglot_cfg, omniglot):
    plain = variant(omniglot_cfg, augment_splits=[]).pool("train")
    rotated = omniglot.pool("train")
    for k in range(4):
        block = slice(k * 1100, (k + 1) * 1100)
        assert rotated.names[block] == tuple(f"{name}/rot{90 * k}" for name in plain.names)
        images = rotated.images[k * 22000 : (k + 1) * 22000]
        assert torch.equal(images, torch.rot90(plain.images, k, dims=(-2, -1)))


def test_only_train_is_rotated_by_default_and_rotated_splits_are_configurable(omniglot_cfg, omniglot):
    assert not any("/rot" in n for s in ("val", "test") for n in omniglot.pool(s).names)
    augmented = variant(omniglot_cfg, augment_splits=["train", "val"])
    assert [augmented.num_classes(s) for s in augmented.splits] == [4400, 400, 423]
    with pytest.raises(MamlError, match="augment_splits names unknown split 'tr'"):
        variant(omniglot_cfg, augment_splits=["tr"])


def test_images_are_inverted_so_strokes_are_one_on_a_zero_background(omniglot_cfg, omniglot):
    x = omniglot.episodes("val", 5, 1, 1, num_tasks=4).x_support
    assert x.min() == 0 and x.max() == 1 and x.mean() < 0.2
    assert variant(omniglot_cfg, invert=False).episodes("val", 5, 1, 1, num_tasks=4).x_support.mean() > 0.8


def test_batches_have_the_documented_shapes_and_labels(omniglot):
    batch = omniglot.sampler("train", ways=5, shots=1, queries=15).sample(8)
    assert batch.x_support.shape == (8, 5, 1, 28, 28) and batch.x_query.shape == (8, 75, 1, 28, 28)
    assert batch.y_support.shape == (8, 5) and batch.y_query.shape == (8, 75)
    assert batch.x_support.dtype == torch.float32 and batch.y_query.dtype == torch.int64
    assert set(batch.y_query.unique().tolist()) == set(range(5))


def test_fixed_episodes_are_equal_across_instances_and_prefix_stable(omniglot_cfg, omniglot):
    many = omniglot.episodes("test", 5, 1, 15, num_tasks=60, seed=3)
    few = Omniglot(omniglot_cfg).episodes("test", 5, 1, 15, num_tasks=10, seed=3)
    for field in ("x_support", "y_support", "x_query", "y_query"):
        assert torch.equal(getattr(few, field), getattr(many[:10], field))
    assert not torch.equal(omniglot.episodes("test", 5, 1, 15, num_tasks=10, seed=4).x_support, few.x_support)


def test_sampler_state_round_trip_reproduces_the_same_batches(omniglot):
    sampler = omniglot.sampler("train", 20, 1, 5, seed=11)
    sampler.sample(4)
    state = sampler.state_dict()
    expected = [sampler.sample(4).x_query for _ in range(2)]
    resumed = omniglot.sampler("train", 20, 1, 5, seed=0)
    resumed.load_state_dict(state)
    assert all(torch.equal(resumed.sample(4).x_query, x) for x in expected)


def test_impossible_tasks_are_refused_with_the_limit_in_the_message(omniglot):
    with pytest.raises(MamlError, match="ways=101 but split 'val' of omniglot has only 100 classes; choose ways <= 1"):
        omniglot.sampler("val", ways=101, shots=1, queries=1)
    with pytest.raises(MamlError, match=r"shots\+queries=21 but class '.+/character\d\d' in split 'test' .* only 20"):
        omniglot.episodes("test", ways=5, shots=5, queries=16, num_tasks=1)
    with pytest.raises(MamlError, match="ways must be a positive integer, got 0"):
        omniglot.sampler("train", ways=0, shots=1, queries=1)
    with pytest.raises(MamlError, match="unknown split 'valid' of omniglot; choose one of train, val, test"):
        omniglot.sampler("valid", 5, 1, 1)


def test_a_second_construction_loads_the_cache_in_under_two_seconds(omniglot_cfg):
    start = time.perf_counter()
    Omniglot(omniglot_cfg)
    seconds = time.perf_counter() - start
    print(f"\nOmniglot loaded from cache in {seconds:.2f} s")
    assert seconds < 2


def test_a_meta_batch_of_32_five_way_one_shot_tasks_takes_milliseconds_on_one_thread(omniglot):
    sampler = omniglot.sampler("train", 5, 1, 15)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a figure that other processes' load on the machine barely changes
    try:
        timings = []
        for _ in range(50):
            start = time.perf_counter()
            sampler.sample(32)
            timings.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    print(f"\n32 Omniglot 5-way 1-shot 15-query tasks, one thread: median {1000 * statistics.median(timings):.2f} ms")
    assert statistics.median(timings) < 0.02
