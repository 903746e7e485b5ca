"""The vectorised engine (vmap(grad(task))) and the threaded one (tasks side by side on CPU threads)
compute exactly what the per-task loop computes.

Note on a known torch.func trap: differentiating *through* vmap of a function that contains an inner
torch.func.grad through native F.batch_norm(training=True) — grad(vmap(f)) — gives wrong second-order
gradients. The vmap engine uses vmap(grad(f)); the BatchNorm cases below (second order, 1–3 steps)
check it against the loop engine and against finite differences.
"""

from __future__ import annotations

from contextlib import contextmanager
from unittest.mock import patch

import pytest
import torch

from maml_cli.core import Engine, engines
from maml_cli.core.engines import choose_engine, draws_random_numbers
from tests.core.core_helpers import (
    DTYPE,
    ROUNDING,
    assert_accuracy_of,
    central_difference,
    classification_batch,
    conv_net,
    grads_by_name,
    learner,
    meta_gradient,
    mlp,
    relative_error,
    single_thread,  # noqa: F401 (autouse fixture)
)

VARIANTS = {
    "maml": dict(steps=2),
    "fomaml": dict(steps=2, first_order=True),
    "meta_sgd": dict(steps=2, learn_lr=True, lr_granularity="per_element"),
    "anil": dict(steps=2, adapt="head"),
    "lslr": dict(steps=3, learn_lr=True, lr_per_step=True, lr_granularity="per_layer"),
    "multi_step_loss": dict(steps=3, multi_step_loss_iterations=10),
    "order_annealing_first_order_phase": dict(steps=2, first_order_iterations=10),
    "per_step_batchnorm": dict(steps=2, batchnorm="per_step"),
    "everything": dict(
        steps=3,
        learn_lr=True,
        lr_per_step=True,
        lr_granularity="per_layer",
        multi_step_loss_iterations=10,
        batchnorm="per_step",
    ),
    "reptile": dict(steps=2, method="reptile"),
    "reptile_adam_inner_batches": dict(steps=3, method="reptile", inner_optimizer="adam", inner_batch=4, lr=0.01),
    "imaml": dict(steps=3, method="imaml", cg_steps=3),
    "imaml_per_step_batchnorm": dict(steps=2, method="imaml", batchnorm="per_step"),
    "imaml_adam": dict(steps=2, method="imaml", inner_optimizer="adam", lr=0.01),
}


def _model(variant: str):
    # Adam divides by √v̂ + ε: on conv.bias before BatchNorm, whose gradient is 0 in exact arithmetic, it turns
    # rounding (~1e-17) into steps of ~1e-9·α that differ between engines; without BatchNorm no gradient is 0.
    per_step = "per_step" in variant or variant == "everything"
    return conv_net(track_running_stats=per_step, batchnorm="adam" not in variant)


@contextmanager
def cpu_threads(count: int):
    """``count`` intra-op threads (the threads engine runs that many tasks at once), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def vmap_spread_over_threads(count: int, chunk_values: int = 2**30):
    """``count`` threads, and vmap's tasks spread over them however small (chunks of at most ``chunk_values``)."""
    with cpu_threads(count), patch.multiple(engines, VECTORISED_CHUNK_VALUES=chunk_values, THREADED_VMAP_VALUES=0):
        yield


def _run(variant: str, engine: str, batch, iteration: int = 3):
    # vmap meta-trains on CPU in chunks of tasks (vmap_task_by_task: one task a chunk), spread over the threads
    # (vmap_threads: over 3, one task a chunk); 3 workers for 4 tasks: uneven slices
    threads = 3 if engine in ("threads", "vmap_threads") else 1
    chunk_values = 1 if engine in ("vmap_task_by_task", "vmap_threads") else 2**30
    maml = learner(_model(variant), engine=engine.split("_")[0], **VARIANTS[variant])
    torch.manual_seed(0)  # the same draws of Reptile's inner batches in every engine
    with vmap_spread_over_threads(threads, chunk_values):
        stats = maml.meta_backward(batch, iteration)
    return maml, stats


@pytest.mark.parametrize("engine", ["vmap", "vmap_task_by_task", "vmap_threads", "threads"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_vmap_and_threads_engines_equal_loop_engine_in_meta_loss_meta_gradient_and_statistics(variant, engine):
    batch = classification_batch(tasks=4)
    loop, loop_stats = _run(variant, "loop", batch)
    vec, vec_stats = _run(variant, engine, batch)

    for field in ("loss", "query_loss", "support_losses"):
        torch.testing.assert_close(getattr(vec_stats, field), getattr(loop_stats, field), rtol=1e-10, atol=1e-12)
    # Accuracy is a step function of the logits: an image whose top two logits differ by less than the engines'
    # rounding differences (~1e-15) may flip. The losses above pin the logits down; one such near-tie among the
    # 36 query images is allowed (a margin that small is itself a ~1e-15 chance: two are out of reach).
    flips = (vec_stats.query_accuracy - loop_stats.query_accuracy) * batch.y_query.numel()
    assert flips.round().abs() <= 1
    loop_grads, vec_grads = grads_by_name(loop), grads_by_name(vec)
    assert loop_grads.keys() == vec_grads.keys() == {n for n, p in loop.named_parameters() if p.requires_grad}
    scale = torch.cat([g.flatten() for g in loop_grads.values()]).norm()
    for name in loop_grads:  # (per tensor, relative to the whole meta-gradient: conv.bias before BN has ∇ ≡ 0)
        assert (vec_grads[name] - loop_grads[name]).norm() < 1e-10 * scale, name
    for (name, a), (_, b) in zip(loop.state_dict().items(), vec.state_dict().items()):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12, msg=name)  # incl. per-step BatchNorm statistics


def test_meta_batch_gradient_is_mean_of_single_task_gradients_in_both_engines():
    batch = classification_batch(tasks=3)
    for engine in ("loop", "vmap"):
        maml = learner(conv_net(), steps=2, engine=engine)
        stats, whole, _ = meta_gradient(maml, batch)
        singles = [meta_gradient(maml, batch[i]) for i in range(len(batch))]
        torch.testing.assert_close(whole, torch.stack([g for _, g, _ in singles]).mean(0), rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(stats.loss, torch.stack([s.loss for s, _, _ in singles]).mean(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_vmap_second_order_gradient_through_batchnorm_matches_loop_and_finite_differences(steps):
    batch = classification_batch(tasks=3)
    grads = {}
    for engine in ("loop", "vmap"):
        maml = learner(conv_net(), steps=steps, engine=engine)
        _, grads[engine], _ = meta_gradient(maml, batch)
    assert relative_error(grads["vmap"], grads["loop"]) < 1e-10
    direction = torch.randn(grads["vmap"].shape, generator=torch.Generator().manual_seed(11), dtype=DTYPE)
    fd = central_difference(maml, batch, direction)
    assert relative_error(fd, grads["vmap"] @ direction) < 1e-6


def test_meta_backward_accumulates_into_existing_gradients_in_every_engine():
    for engine in ("loop", "vmap", "threads"):
        maml = learner(mlp(), steps=1, engine=engine)
        batch = classification_batch(shape=(4,))
        maml.meta_backward(batch)
        once = grads_by_name(maml)
        maml.meta_backward(batch)
        twice = grads_by_name(maml)
        assert twice.keys() == once.keys()
        for name in once:
            assert relative_error(twice[name], 2 * once[name]) <= ROUNDING, name


def test_evaluate_curve_matches_adapt_and_predict_task_by_task():
    maml = learner(conv_net(), steps=1, eval_steps=3, eval_chunk=2)  # chunks of 2 over 3 tasks
    batch = classification_batch(tasks=3)
    curve = maml.evaluate(batch, steps=3)
    assert curve.losses.shape == curve.accuracies.shape == (3, 4)
    for i in range(3):
        params = maml.adapt(batch.x_support[i], batch.y_support[i], steps=3)
        logits = maml.predict(params, batch.x_query[i])
        final = torch.nn.functional.cross_entropy(logits, batch.y_query[i])
        torch.testing.assert_close(curve.losses[i, -1], final, rtol=1e-10, atol=1e-12)
        assert_accuracy_of(curve.accuracies[i, -1], logits, batch.y_query[i])
    assert (curve.losses[:, -1] < curve.losses[:, 0]).all()  # adapting helps on the support-like query


@pytest.mark.parametrize("engine", ["loop", "vmap", "threads"])
def test_meta_gradients_are_plain_tensors_that_hold_no_autograd_graph(engine):
    maml = learner(conv_net(), steps=2, engine=engine)
    with cpu_threads(2):
        maml.meta_backward(classification_batch(tasks=2))
    grads = [p.grad for p in maml.parameters() if p.requires_grad]
    assert grads and all(g.grad_fn is None and not g.requires_grad for g in grads)


@pytest.mark.parametrize("engine", ["threads", "vmap"])
def test_threads_are_reproducible_and_leave_the_thread_settings_as_they_found_them(engine):
    grads = []
    for _ in range(2):
        maml = learner(conv_net(), steps=2, engine=engine)
        with vmap_spread_over_threads(2, chunk_values=1):
            maml.meta_backward(classification_batch(tasks=5))
            assert torch.get_num_threads() == 2
        grads.append(torch.cat([g.flatten() for g in grads_by_name(maml).values()]))
    # Exact by construction: each task runs in one thread on the same slice, through the same kernels on the
    # same inputs, and the slices' sums are added in a fixed order: bitwise the same.
    assert torch.equal(grads[0], grads[1])


def test_vmap_runs_a_model_that_draws_random_numbers_on_one_thread_so_that_seeded_runs_repeat():
    def seeded_run() -> torch.Tensor:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(36, 3)).to(DTYPE)
        maml = learner(net, steps=2, engine="vmap")
        with vmap_spread_over_threads(2, chunk_values=1):  # two threads would draw in no fixed order
            maml.meta_backward(classification_batch(tasks=6))
        return torch.cat([g.flatten() for g in grads_by_name(maml).values()])

    assert torch.equal(seeded_run(), seeded_run())


def test_auto_engine_vectorises_tiny_tasks_threads_small_ones_and_loops_for_large_tasks_and_random_models():
    net = draws_random_numbers(conv_net())
    tiny = classification_batch(tasks=2, ways=5, shots=1, queries=1, shape=(1, 28, 28))  # Omniglot 5w1s: 7,840
    assert choose_engine(Engine.auto, tiny, net) is Engine.vmap  # one batched kernel beats many tiny ones
    small = classification_batch(tasks=2, ways=20, shots=1, queries=15, shape=(1, 28, 28))  # Omniglot 20w1s: 250,880
    assert choose_engine(Engine.auto, small, net) is Engine.threads
    large = classification_batch(tasks=2, ways=20, shots=5, queries=15, shape=(1, 28, 28))  # 20w5s q15: 313,600
    # side by side: twice the memory
    assert choose_engine(Engine.auto, large, net) is Engine.loop
    dropout = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.1), torch.nn.Linear(36, 3)).to(DTYPE)
    # seeded runs stay reproducible
    batch = classification_batch(tasks=2)
    assert choose_engine(Engine.auto, batch, draws_random_numbers(dropout)) is Engine.loop
