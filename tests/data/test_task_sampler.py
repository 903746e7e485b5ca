"""Task sampling semantics, on pools whose every image is its own index (so outputs can be traced)."""

from __future__ import annotations

import torch

from maml_cli.data.dataset import ImageDataset
from maml_cli.data.sampler import ClassPool, generator


def identity_pool(counts: list[int]) -> ClassPool:
    """Image ``i`` is a 1x2x2 image of value ``i``; class ``k`` holds the next ``counts[k]`` images."""
    images = torch.arange(sum(counts), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    return ClassPool(images, torch.tensor(counts), tuple(f"class{k}" for k in range(len(counts))))


def draw(pool: ClassPool, tasks: int, ways: int, shots: int, queries: int, seed: int = 0):
    return pool.realize(pool.plan(tasks, generator(seed), ways, shots + queries), shots)


def image_ids(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 0, 0, 0] * 255).round().long()


class Toy(ImageDataset):
    name = "toy"


def toy(counts: list[int]) -> Toy:
    return Toy({split: identity_pool(counts) for split in ("train", "val", "test")})


def class_of(ids: torch.Tensor, counts: list[int]) -> torch.Tensor:
    return torch.bucketize(ids, torch.tensor(counts).cumsum(0), right=True)


def test_each_task_uses_distinct_classes_with_one_label_each_and_disjoint_support_and_query():
    counts = [9, 7, 12, 8, 10, 7, 11]
    batch = draw(identity_pool(counts), 200, 4, 2, 5)
    support, query = image_ids(batch.x_support), image_ids(batch.x_query)
    support_class, query_class = class_of(support, counts), class_of(query, counts)
    for t in range(200):
        assert len(set(support[t].tolist()) | set(query[t].tolist())) == 4 * (2 + 5)  # no image twice in a task
        classes = [support_class[t][batch.y_support[t] == label].unique().tolist() for label in range(4)]
        assert all(len(c) == 1 for c in classes) and len({c[0] for c in classes}) == 4
        for label in range(4):
            assert query_class[t][batch.y_query[t] == label].unique().tolist() == classes[label]


def test_batches_have_the_documented_shapes_dtypes_and_labels_grouped_by_class():
    batch = draw(identity_pool([6] * 10), 3, 5, 2, 3)
    assert batch.x_support.shape == (3, 10, 1, 2, 2) and batch.x_query.shape == (3, 15, 1, 2, 2)
    assert batch.x_support.dtype == torch.float32 and batch.y_support.dtype == torch.int64
    assert batch.y_support[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert batch.y_query[2].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]


def test_classes_are_assigned_to_labels_in_a_random_order_and_all_classes_and_images_get_drawn():
    counts = [10] * 5
    batch = draw(identity_pool(counts), 500, 5, 1, 1)
    label0_class = class_of(image_ids(batch.x_support[:, 0]), counts)
    assert set(label0_class.tolist()) == set(range(5))
    assert set(image_ids(batch.x_support).flatten().tolist()) == set(range(50))


def test_ragged_classes_only_yield_their_own_images():
    counts = [3, 20, 4, 15]
    batch = draw(identity_pool(counts), 300, 2, 1, 2)
    ids = torch.cat([image_ids(batch.x_support), image_ids(batch.x_query)], dim=1)
    assert ids.max() < sum(counts)
    assert set(ids.flatten().tolist()) == set(range(sum(counts)))  # small classes too, every image reachable


def test_sampler_is_reproducible_from_its_seed_and_resumes_bit_exact_from_its_state():
    data = toy([8] * 6)
    a, b = data.sampler("train", 3, 1, 2, seed=7), data.sampler("train", 3, 1, 2, seed=7)
    assert torch.equal(a.sample(4).x_support, b.sample(4).x_support)
    state = a.state_dict()
    first = [a.sample(4) for _ in range(3)]
    c = data.sampler("train", 3, 1, 2, seed=123)
    c.load_state_dict(state)
    for expected in first:
        got = c.sample(4)
        assert torch.equal(got.x_support, expected.x_support) and torch.equal(got.y_query, expected.y_query)
    assert not torch.equal(data.sampler("train", 3, 1, 2, seed=8).sample(4).x_query, b.sample(4).x_query)


def test_fixed_episodes_are_pinned_prefix_stable_and_depend_on_seed_split_and_shape():
    data = toy([8] * 6)
    episodes = data.episodes("test", 3, 1, 2, num_tasks=20, seed=0)
    assert image_ids(episodes.x_support[:2]).tolist() == [[30, 9, 40], [17, 24, 46]]  # same on every machine
    assert torch.equal(data.episodes("test", 3, 1, 2, num_tasks=5, seed=0).x_query, episodes.x_query[:5])
    for other in (
        data.episodes("test", 3, 1, 2, 20, seed=1),
        data.episodes("val", 3, 1, 2, 20),
        data.episodes("test", 3, 2, 2, 20),
    ):
        assert not torch.equal(image_ids(other.x_support[:, :3]), image_ids(episodes.x_support))


def test_rotation_makes_four_classes_per_class_each_rotated_as_a_whole():
    images = torch.arange(2 * 3 * 9, dtype=torch.uint8).view(6, 1, 3, 3)
    pool = ClassPool(images, torch.tensor([3, 3]), ("a", "b"))
    rotated = pool.rotated()
    assert rotated.names == ("a/rot0", "b/rot0", "a/rot90", "b/rot90", "a/rot180", "b/rot180", "a/rot270", "b/rot270")
    assert rotated.counts.tolist() == [3] * 8
    for k in range(4):
        assert torch.equal(rotated.images[6 * k : 6 * (k + 1)], torch.rot90(images, k, dims=(-2, -1)))


def test_select_keeps_the_chosen_classes_in_order_and_allows_none():
    pool = identity_pool([2, 3, 1])
    chosen = pool.select([2, 0])
    assert chosen.names == ("class2", "class0") and chosen.counts.tolist() == [1, 2]
    assert chosen.images[:, 0, 0, 0].tolist() == [5, 0, 1]
    assert len(pool.select([]).names) == 0
