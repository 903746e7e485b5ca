"""``make bench``: how fast maml-cli meta-trains and evaluates, side by side with the usual way.

Times one meta-training step (zero_grad → meta-gradient → Adam step) of

* the four Omniglot paper presets, as users train them (``experiment=omniglot_5w1s``, ``_5w5s``, ``_20w1s``,
  ``_20w5s``: the stride-2 Conv4 with 64 filters and a spatial mean, K queries per class, the paper's
  meta-batch, inner steps, inner lr and order, read from ``conf/experiment/``);
* MAML on the max-pool Conv4 (64 filters, 15 queries per class, inner SGD lr 0.4) at 5-way 1-shot meta-batch
  32 and 20-way 1-shot meta-batch 16, in the variants A: second order, 1 inner step; B: first order, 1 step;
  C: second order, 5 steps (by default 5-way A only, the row measured against TorchOpt; ``--full``: all),

all with BatchNorm on batch statistics and Adam, for

* ``maml_cli``: ``MetaLearner.meta_backward`` (``engine=auto``) on ``maml_cli.models.Conv4``;
* ``reference``: the plain per-task loop with ``torch.autograd.grad(create_graph=True)`` over the
  canonical Conv4 (``benchmarks/reference.py``; how learn2learn, higher and TorchOpt work);
* ``higher``, ``torchopt``: the same workload through those libraries, when installed (``make bench``
  installs them; by default on 5w variant A for ``--lib-steps`` steps: they run the reference's kernels);
* ``maml_cli-vmap``, ``maml_cli-loop``, ``maml_cli-threads`` (on request): one engine, to document the
  ``engine=auto`` choice (on CPU threads for small tasks, else loop; vmap on CUDA);
* ``maml_cli-graph`` (CUDA, on request): ``maml_cli``'s whole step (meta-gradient and a capturable
  Adam step) captured once in a CUDA graph and replayed: what is left when no kernel launch costs
  host time.

First the meta-gradients of ``maml_cli`` and the reference are compared on the chosen device (float64, 4
random tasks; variants A, B, C and every preset timed): the relative difference must be at rounding level
(``--no-check`` skips it).

Implementations are timed round-robin in one process (the starting one rotates every round), so that
machine noise hits them alike; medians (and minima) of ``--steps`` timed steps after ``--warmup``.
Peak memory on CPU, in untimed steps before the timed ones (after each implementation has taken a step
on two tasks on the workload's first variant, which creates its thread pools and kernels once): free
memory is returned to the kernel (``malloc_trim``), the kernel's high-water mark reset
(``/proc/self/clear_refs``), then one step; the process's peak RSS in it (``peak_rss_mb``, the process's
whole footprint) and its growth over the RSS before it (``step_growth_mb``, the step's own), medians of
``--memory-samples`` steps on ``--memory-workloads`` (one step elsewhere); ``--memory subprocess``
measures as many steps in a fresh subprocess instead, after a first one; on CUDA,
``torch.cuda.max_memory_allocated`` growth.
On CPU, maml-cli's step is also set against its convolution floor (``benchmarks/floor.py``): the step's
convolution and matrix-product work, counted by ``FlopCounterMode`` (backward and double backward included),
at this CPU's best rate on Omniglot-sized 3x3 convolutions; ``over_floor`` is the step's time over it.
``--profile`` adds, per workload, where maml-cli's and the reference's CPU time goes, by operator
(``benchmarks/profile.py``). Also: task sampling per meta-batch on real Omniglot (vs. a meta-step) and
the evaluation throughput (600 5-way 1-shot tasks, 10 adaptation steps, ``MetaLearner.evaluate``; the
stride Conv4, and with ``--full`` the max-pool one).

glibc's allocator is tuned at start (``maml_cli.performance.tune_allocator``, as maml-cli's commands
do); it is process-wide, so the reference in this process benefits too. ``--malloc default`` runs
everything with glibc's defaults instead.

Writes ``outputs/bench/results.json`` and prints a table. Run from the repository root::

    make bench                                    # the presets, 5w A against the libraries, evaluation
    make bench BENCH_ARGS="--full"                # also 5w B, C and 20w A, B, C, and the max-pool evaluation
    .venv/bin/python -m benchmarks --workloads omniglot_5w1s --impls maml_cli,reference --no-eval

The parts: ``workloads`` (what is run), ``implementations`` and ``reference`` (who runs it), ``checks``
(gradients agree, no host syncs), ``measure`` (time), ``memory`` (peak RSS), ``floor`` (the convolution
floor), ``report`` (the table), ``profile`` (by operator), ``cli`` (the flags and the run).
"""
