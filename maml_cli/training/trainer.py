"""The meta-training loop: validation, best/last checkpoints, exact resume, W&B metrics, results.json.

Under torchrun every process runs this loop on its share of each meta-batch (see ``distributed``);
rank 0 alone writes checkpoints, results.json and the W&B run (see ``writer``), and shows progress.
"""

from __future__ import annotations

import copy
import logging
import signal
import time
from datetime import timedelta

import torch

from maml_cli.config import TrainConfig, duration_s
from maml_cli.core import ScheduleSpan, StepStats, TaskBatch, build_optimizer, build_scheduler, clip_meta_gradient
from maml_cli.data import build_dataset
from maml_cli.errors import MamlError
from maml_cli.runs.checkpoints import load_checkpoint
from maml_cli.runs.metrics import episode_scores, in_chunks, is_better, mean_ci95, metric_name
from maml_cli.runtime import build_learner, resolve_device, seed_everything, train_sampler
from maml_cli.training.distributed import Distributed
from maml_cli.training.progress import Progress, Stopwatch, peak_memory_mb
from maml_cli.training.resume import (
    check_weights,
    config_dict,
    find_start,
    identify,
    ignored_overrides,
    init_weights,
    resumed_config,
)
from maml_cli.training.rng import restore_rng, rng_state
from maml_cli.training.signals import Interrupted, StopSignals
from maml_cli.training.writer import RunInfo, RunWriter, Silent

log = logging.getLogger(__name__)


def train(config: TrainConfig, info: RunInfo, dist: Distributed | None = None) -> float:
    """Meta-train in ``info.output_dir``; returns the best validation score (accuracy, or −MSE).

    With ``config.resume`` the run continues from a checkpoint, bit for bit: in place, its W&B run included;
    from another run's checkpoint, as a new run (a fork). With ``config.init_from`` a new run starts from the
    weights of another run's checkpoint that fit its model. See ``resume`` for how a job starts and who it is.
    Under torchrun, ``dist`` is this process's place in the job (see ``init_distributed``; default: one
    process), and ``info.output_dir`` the job's run dir, the same on every rank.
    SIGTERM, SIGUSR1 or SIGINT stops it after the current meta-step with ``last.pt`` saved: :class:`Interrupted`.
    """
    dist = dist or Distributed()
    start = find_start(config, info.output_dir)
    ignored: list[str] = []
    if start.continues:
        how = "resuming" if start.kind == "resumed" else "forking a new run"
        log.info("%s from %s at step %d", how, start.path, start.step)
        ignored = ignored_overrides(start.state["config"], config, info.overrides)
        config = resumed_config(start.state["config"], config, info.overrides)
    info = identify(info, start, config, ignored)
    dist.check_meta_batch(config.meta_batch_size)
    values = config_dict(config)
    writer = RunWriter if dist.is_main else Silent  # rank 0 writes for the whole job
    with StopSignals() as signals, writer(config, values, info, start) as out:
        trainer = Trainer(config, values, info, out, dist, signals)
        if start.continues:
            check_weights(start.path, start.state, trainer.learner)
        elif start.kind == "init_from":
            init_weights(start, trainer.learner, config)
        return trainer.fit(start.state if start.continues else None)


class Trainer:
    """One training job's state; ``fit`` runs it to ``config.iterations`` meta-steps, or until ``max_time``.

    The ``max_time`` budget counts training and validation (the final test comes after it), over resumes.
    """

    def __init__(
        self, config: TrainConfig, values: dict, info: RunInfo, out: RunWriter, dist: Distributed, signals: StopSignals
    ):
        self.config, self.values, self.info, self.out, self.dist = config, values, info, out, dist
        self.signals = signals  # the stop signals received (see ``signals``)
        self.device = dist.device(resolve_device(config.device))
        seed_everything(config.seed)
        if not dist.is_main:
            dist.barrier()  # rank 0 downloads and caches the data first
        self.dataset = build_dataset(config.dataset)
        if dist.is_main:
            dist.barrier()
        self.learner = build_learner(config, self.dataset).to(self.device)
        self.optimizer = build_optimizer(self.learner.parameters(), config.optimizer)
        self.shape = (config.ways, config.shots, config.queries)
        self.sampler = train_sampler(config, self.dataset, self.device)
        self.val_episodes = self.dataset.episodes("val", *self.shape, num_tasks=config.val_tasks, device=self.device)
        self.val_episodes = self.val_episodes[dist.episode_share(config.val_tasks)]  # this rank's share
        self.metric = metric_name(self.learner)
        self.step, self.history = 0, []
        self.validated_at_s: list[float | None] = []  # training's elapsed seconds at each validation in ``history``
        self.stopwatch = Stopwatch(None if config.max_time is None else duration_s("max_time", config.max_time))
        by_time = config.optimizer.span is ScheduleSpan.max_time  # the schedule reads the budget's clock
        budget = self.stopwatch.spent_share if by_time else None
        self.scheduler = build_scheduler(self.optimizer, config.optimizer, config.iterations, budget)
        self.stopped_by: str | None = None  # max_time, once the budget is spent
        self.best = {"metric": f"val/{self.metric}", "value": None, "step": None}
        self.sums: dict[str, torch.Tensor] = {}  # training statistics since the last log line, on the device
        self.summed = 0  # meta-steps in ``sums``
        self.nonfinite = torch.tensor(-1, device=self.device)  # first step with a non-finite meta-loss

    def fit(self, checkpoint: dict | None = None) -> float:
        if checkpoint:
            self._restore(checkpoint)
        self.dist.broadcast_module(self.learner)  # every rank starts from rank 0's weights
        cfg = self.config
        log.info(
            "training %s on %s: %d meta-steps of %d tasks, from step %d, in %s",
            self.info.name,
            self.device,
            cfg.iterations,
            cfg.meta_batch_size,
            self.step,
            self.info.output_dir,
        )
        if self.dist.enabled:
            log.info(
                "%d processes, %d tasks each per meta-step",
                self.dist.world_size,
                cfg.meta_batch_size // self.dist.world_size,
            )
        if self.stopwatch.limit_s is not None:
            left = timedelta(seconds=round(self.stopwatch.left()))
            log.info("max_time=%s: %s left of training and validation", cfg.max_time, left)
        if self.step and self._due(self.step)[1] and not self._validated():
            self._validate()  # a signal cut this step's validation short
            self._stop_if_signalled()
        self._check_time()  # a resumed run may have spent its budget
        with Progress(cfg.iterations, self.step, show=self.dist.is_main, stopwatch=self.stopwatch) as progress:
            while self.step < cfg.iterations and not self.stopped_by:
                batch = self.dist.local_batch(self.sampler.sample(cfg.meta_batch_size))  # the same on every rank
                self._meta_step(batch)
                self.step += 1
                progress.advance()
                self._check_time()
                due = self._due(self.step)
                if any(due):
                    self._check_finite()
                if due[0]:
                    self._log(batch, progress)
                if due[1]:
                    self._validate()
                if due[2]:
                    self.out.save("last", self._state)
                self._stop_if_signalled(batch, progress)
        if not self._validated():  # nothing to train, or a budget spent before any step: score and keep this step
            self._validate()
            self.out.save("last", self._state)
            self._stop_if_signalled()
        self.stopped_by = self.stopped_by or "iterations"
        self.stopwatch.stop()
        test = self._test()
        self._stop_if_signalled()  # a signal during the test: resuming tests again
        self.out.finish(self.standing, test)
        return self.best["value"] if self.metric == "acc" else -self.best["value"]

    def _due(self, step: int) -> list[bool]:
        """Whether ``step`` logs, validates and saves ``last.pt`` (all three at the last step)."""
        cfg = self.config
        last = step == cfg.iterations or self.stopped_by is not None
        return [step % every == 0 or last for every in (cfg.log_every, cfg.val_every, cfg.checkpoint_every)]

    def _validated(self) -> bool:
        return any(v["step"] == self.step for v in self.history)

    def _check_time(self) -> None:
        """Past ``max_time`` (under torchrun: on any rank's clock, so that all stop at the same step), stop here."""
        if self.stopwatch.limit_s is None or self.step >= self.config.iterations:
            return
        if self.dist.min(torch.tensor(int(not self.stopwatch.exhausted()))) == 0:
            self.stopped_by = "max_time"
            spent = timedelta(seconds=round(self.stopwatch.elapsed()))
            log.info("max_time=%s reached (%s spent): the run ends at step %d", self.config.max_time, spent, self.step)

    def _stop_if_signalled(self, batch: TaskBatch | None = None, progress: Progress | None = None) -> None:
        """After a stop signal: log and save this step, then raise Interrupted.

        Under torchrun a signal to any rank stops all ranks at the same step.
        """
        signum = self.signals.signum
        if self.dist.enabled:  # a collective of every rank: the largest signal number of any (min of the negated)
            anyone = -int(self.dist.min(torch.tensor(-signum)))
            signum = signum or anyone
        if not signum:
            return
        log.warning("%s received: stopping after meta-step %d", signal.Signals(signum).name, self.step)
        self._check_finite()
        if self.summed:  # the W&B history reaches this step
            self._log(batch, progress)
        self.out.save("last", self._state)
        stop = Interrupted(signum, self.step, self.info.checkpoints / "last.pt", self.signals)
        self.out.results(self.standing, stop.status)
        raise stop

    # ------------------------------------------------------------------ the hot loop (no host sync)
    def _meta_step(self, batch: TaskBatch) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        stats = self.learner.meta_backward(batch, iteration=self.step)
        if self.dist.enabled:
            self.dist.all_reduce_gradients(self.learner.parameters())
            self.dist.average(t for t in self.learner.step_buffers.buffers() if t.is_floating_point())
        clip_meta_gradient(self.learner.parameters(), self.config.optimizer)
        self.optimizer.step()
        self.scheduler.step()
        self._accumulate(stats)
        self.nonfinite = torch.where(torch.isfinite(stats.loss) | (self.nonfinite >= 0), self.nonfinite, self.step + 1)

    def _accumulate(self, stats: StepStats) -> None:
        values = {
            "loss": stats.loss,
            "query_loss": stats.query_loss,
            "query_acc": stats.query_accuracy,
            "support_loss": stats.support_losses,
        }
        for key, value in values.items():
            if value is not None:
                self.sums[key] = self.sums[key] + value.detach() if key in self.sums else value.detach()
        self.summed += 1

    def _check_finite(self) -> None:
        never = torch.iinfo(self.nonfinite.dtype).max  # the first step of any rank, so that all ranks stop together
        first = self.dist.min(torch.where(self.nonfinite >= 0, self.nonfinite, never))
        step, last = (int(first) if first != never else -1), self.info.checkpoints / "last.pt"
        if step >= 0:
            kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written"
            raise MamlError(
                f"the meta-loss became non-finite at step {step}; stopped ({kept}). "
                "Try a smaller optimizer.lr or algorithm.lr, or optimizer.clip_grad_norm"
            )

    # ------------------------------------------------------------------ intervals (host sync is fine)
    def _log(self, batch: TaskBatch, progress: Progress) -> None:
        mean = {k: (self.dist.mean(v) / self.summed).tolist() for k, v in self.sums.items()}
        self.sums, self.summed = {}, 0
        curve = self.learner.evaluate(batch, steps=self.config.algorithm.steps)  # pre/post on this meta-batch
        scores = curve.accuracies if self.learner.classification else curve.losses
        pre, post = self.dist.mean(torch.stack([scores[:, 0].mean(), scores[:, -1].mean()])).tolist()
        rate, m = progress.rate(), self.metric
        metrics = {
            "meta/step": self.step,
            "train/loss": mean["loss"],
            "train/query_loss": mean["query_loss"],
            **({"train/query_acc": mean["query_acc"]} if "query_acc" in mean else {}),
            **{f"train/support_loss/step_{i}": v for i, v in enumerate(mean["support_loss"])},
            f"train/{m}_pre": pre,
            f"train/{m}_post": post,
            "train/adaptation_gain": post - pre if m == "acc" else pre - post,
            "train/meta_lr": self.scheduler.get_last_lr()[0],
            "perf/steps_per_s": rate,
            "perf/tasks_per_s": rate * self.config.meta_batch_size,
            "perf/peak_memory_mb": peak_memory_mb(self.device),
        }
        self.out.log(metrics)
        shown = {
            "loss": mean["loss"],
            **({"acc": mean["query_acc"]} if "query_acc" in mean else {}),
            "gain": metrics["train/adaptation_gain"],
        }
        progress.report(shown, rate)

    def _score(self, learner, episodes: TaskBatch, tasks: int, label: str) -> dict[str, float] | None:
        """Mean and ci95 over ``tasks`` episodes, of which ``episodes`` is this rank's share; rank 0 shows a bar.

        On one process, a stop signal cuts it short between chunks of ``eval_chunk`` episodes (the chunks
        of ``evaluate``: the scores are the same): None. Under torchrun, where ranks score together, it is finished.
        """
        scores = in_chunks(
            lambda chunk: episode_scores(learner, chunk),
            episodes,
            learner.inner.eval_chunk,
            label,
            show=self.dist.is_main,
            stop=None if self.dist.enabled else lambda: bool(self.signals.signum),
        )
        if scores is None:
            return None
        mean, ci95 = mean_ci95(self.dist.gather_episodes(torch.cat(scores), tasks))
        return {"mean": mean, "ci95": ci95}

    def _validate(self) -> None:
        score = self._score(self.learner, self.val_episodes, self.config.val_tasks, "validation")
        if score is None:
            return
        result = {"step": self.step, **score}
        self.history.append(result)
        self.validated_at_s.append(self.stopwatch.elapsed())
        m = self.metric
        self.out.log({"meta/step": self.step, f"val/{m}": result["mean"], f"val/{m}_ci95": result["ci95"]})
        if is_better(m, result["mean"], self.best["value"]):
            self.best.update(value=result["mean"], step=self.step)
            self.out.save("best", self._state)
        log.info(
            "validation at step %d: %s %.4f ± %.4f (best %.4f at step %d)",
            self.step,
            m,
            result["mean"],
            result["ci95"],
            self.best["value"],
            self.best["step"],
        )
        self.out.results(self.standing)

    @property
    def standing(self) -> dict:
        """Where training stands: its ``metric``, ``step``, ``best`` score, validation ``history`` (each with the
        elapsed seconds of training), ``elapsed_s`` and, at the end, what ``stopped_by`` it (iterations or max_time).
        """
        history = [{**v, "elapsed_s": s} for v, s in zip(self.history, self.validated_at_s)]
        return {
            "metric": self.metric,
            "step": self.step,
            "best": self.best,
            "history": history,
            "elapsed_s": self.stopwatch.elapsed(),
            "stopped_by": self.stopped_by,
        }

    def _state(self) -> dict:
        """What a checkpoint holds to continue training exactly (the writer adds the W&B run's identity)."""
        return {
            "config": self.values,
            "learner": self.learner.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "best": dict(self.best),
            "rng": rng_state(self.sampler),
            "history": list(self.history),
            "elapsed_s": self.stopwatch.elapsed(),
            "validated_at_s": list(self.validated_at_s),
        }

    def _restore(self, checkpoint: dict) -> None:
        self.learner.load_state_dict(checkpoint["learner"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        restore_rng(checkpoint["rng"], self.sampler)
        self.step, self.best, self.history = checkpoint["step"], dict(checkpoint["best"]), list(checkpoint["history"])
        self.stopwatch.spent_s = checkpoint.get("elapsed_s", 0.0)  # checkpoints before max_time lack the times
        self.validated_at_s = checkpoint.get("validated_at_s", [None] * len(self.history))

    # ------------------------------------------------------------------ the end
    def _test(self) -> dict | None:
        """The best checkpoint on ``test_tasks`` fixed test episodes."""
        if not self.config.test_tasks:
            return None
        learner = copy.deepcopy(self.learner)
        if self.dist.is_main:
            learner.load_state_dict(load_checkpoint(self.info.checkpoints / "best.pt")["learner"])
        self.dist.broadcast_module(learner)  # the other ranks get rank 0's best.pt
        tasks, start = self.config.test_tasks, time.perf_counter()
        episodes = self.dataset.episodes("test", *self.shape, num_tasks=tasks, device=self.device)
        score = self._score(learner, episodes[self.dist.episode_share(tasks)], tasks, "test")
        if score is None:
            return None
        result = {"step": self.best["step"], "tasks": tasks, **score, "seconds": time.perf_counter() - start}
        log.info(
            "test (best.pt, step %d, %d tasks): %s %.4f ± %.4f (%.0f s)",
            result["step"],
            result["tasks"],
            self.metric,
            result["mean"],
            result["ci95"],
            result["seconds"],
        )
        return result
