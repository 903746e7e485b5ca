"""``make bench``: how fast maml-cli meta-trains and evaluates, side by side with the usual way.

Times one meta-training step (zero_grad → meta-gradient → Adam step) of MAML on the MAML paper's
Omniglot Conv4 with max-pooling (64 filters, 28×28×1, BatchNorm with batch statistics, inner SGD lr 0.4,
Adam 1e-3, mean of the query losses) for

* A: second order, 1 inner step;  B: first order, 1 step;  C: second order, 5 steps,

at 5-way 1-shot 15 queries meta-batch 32 and 20-way 1-shot 15 queries meta-batch 16, for

* ``maml_cli``: ``MetaLearner.meta_backward`` (``engine=auto``) on ``maml_cli.models.Conv4``;
* ``reference``: the plain per-task loop with ``torch.autograd.grad(create_graph=True)`` over the
  canonical Conv4 (``benchmarks/reference.py``; how learn2learn, higher and TorchOpt work);
* ``higher``, ``torchopt``: the same workload through those libraries, when installed (``make bench``
  installs them; by default on 5w variant A for ``--lib-steps`` steps: they run the reference's kernels);
* ``maml_cli-vmap``, ``maml_cli-loop`` (on request): ``engine=vmap`` / ``engine=loop``, to document
  the ``engine=auto`` choice (on CPU threads for small tasks, else loop; vmap on CUDA);
* ``maml_cli-graph`` (CUDA, on request): ``maml_cli``'s whole step (meta-gradient and a capturable
  Adam step) captured once in a CUDA graph and replayed: what is left when no kernel launch costs
  host time.

``--check`` first compares the meta-gradients of ``maml_cli`` and the reference on the chosen device
(float64, 4 tasks, every variant): the relative difference must be at rounding level.

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
Also: task sampling per meta-batch on real Omniglot (vs. a meta-step) and the evaluation throughput
(600 5-way 1-shot tasks, 10 adaptation steps, ``MetaLearner.evaluate``; stride and max-pool Conv4).

glibc's allocator is tuned at start (``maml_cli.performance.tune_allocator``, as maml-cli's commands
do); it is process-wide, so the reference in this process benefits too. ``--malloc default`` runs
everything with glibc's defaults instead.

Writes ``outputs/bench/results.json`` and prints a table. Run from the repository root::

    make bench
    make bench BENCH_ARGS="--variants A --steps 5"
    .venv/bin/python -m benchmarks --workloads 5w --impls maml_cli,reference --no-eval

The parts: ``workloads`` (what is run), ``implementations`` and ``reference`` (who runs it), ``checks``
(gradients agree, no host syncs), ``measure`` (time), ``memory`` (peak RSS), ``report`` (the table),
``cli`` (the flags and the run).
"""
