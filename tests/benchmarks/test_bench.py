"""``make bench``'s harness: a small subset runs, checks our meta-gradients and writes the documented JSON."""

import json
import os
import subprocess
import sys

from tests.conftest import REPO


def test_bench_subset_writes_records_with_ratios_and_an_exact_gradient_check(tmp_path, omniglot_root):
    out = tmp_path / "results.json"
    env = {**os.environ, "MAML_DATA_ROOT": str(omniglot_root.parent), "OMP_NUM_THREADS": "1"}
    args = "--workloads omniglot_5w1s,5w --variants B --impls maml_cli,reference --steps 1 --warmup 1 --profile"
    args += " --eval-tasks 4"
    command = [sys.executable, "-m", "benchmarks", *args.split(), "--out", str(out)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    records = json.loads(out.read_text())["records"]

    steps = {r["impl"]: r for r in records if r["variant"] == "B" and "median_s" in r}
    assert steps.keys() == {"maml_cli", "reference"}
    for r in steps.values():
        assert r["workload"] == "omniglot-5w1s-q15-mb32" and r["device"] == "cpu" and r["threads"] == 1
        assert r["median_s"] > 0 and r["data"] == "omniglot"
        # --memory-samples: 2 memory steps on 5w by default
        assert 0 < r["step_growth_mb"] < r["peak_rss_mb"] and len(r["step_growth_samples_mb"]) == 2
    ours, reference = steps["maml_cli"], steps["reference"]
    assert ours["ratio_reference_over_this"] == reference["median_s"] / ours["median_s"]
    assert ours["memory_over_reference"] == ours["peak_rss_mb"] / reference["peak_rss_mb"]
    # the convolution floor: the step's counted convolution work at this CPU's convolution rate
    assert ours["gflop"] > 0 and ours["floor_s"] == ours["gflop"] / ours["convolution_gflops"]
    assert ours["over_floor"] == ours["median_s"] / ours["floor_s"] and "floor_s" not in reference

    # the paper preset's own workload: its meta-batch and K queries per class, its inner loop, its stride Conv4
    preset = {r["impl"]: r for r in records if r["workload"] == "omniglot_5w1s" and r["variant"] == "preset"}
    assert preset.keys() == {"maml_cli", "reference"}
    assert all(r["median_s"] > 0 and r["peak_rss_mb"] > 0 for r in preset.values())
    for r in preset.values():  # --profile: where each one's CPU time goes, by operator
        profile = r["profile"]
        assert profile["operator_calls"] > 0 and 0 < profile["top_operators"][0]["self_cpu_ms"]
        assert open(profile["table"]).read().count("\n") > len(profile["top_operators"])

    checks = {(r["workload"], r["variant"]): r["relative_difference"] for r in records if "relative_difference" in r}
    maxpool = "gradient-check-omniglot-5w1s-q15-mb32-4tasks-float64"
    paper = "gradient-check-omniglot_5w1s-4tasks-float64"
    assert checks.keys() == {(maxpool, "A"), (maxpool, "B"), (maxpool, "C"), (paper, "preset")}
    assert max(checks.values()) < 1e-10  # float64: rounding level
    assert any(r["variant"] == "sampling" and r["median_s"] > 0 for r in records)
    assert any(r["variant"] == "eval-10steps" and r["tasks"] == 4 for r in records)
    assert "meta-gradient check" in done.stdout and "ref/this" in done.stdout and "convolution floor" in done.stdout
