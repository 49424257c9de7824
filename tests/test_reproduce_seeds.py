"""`p2g reproduce TABLE --seeds N`: N runs per configuration, mean +/- std per cell, paired tests."""

from __future__ import annotations

import math
import statistics

import pytest
from scipy.stats import wilcoxon

from p2gmed.config import load_config
from p2gmed.errors import InputError
from p2gmed.report import reproduce as rp
from p2gmed.report import comparison, seeds, steps, summaries


def test_every_configuration_runs_once_per_seed_with_its_own_train_seed(tmp_path):
    one = rp.build_plan("table3", tmp_path / "d", tmp_path / "o1")
    two = rp.build_plan("table3", tmp_path / "d", tmp_path / "o2", seeds=2)
    trainings = lambda plan: [s for s in plan.steps if s.configs]  # noqa: E731
    assert len(trainings(two)) == 2 * len(trainings(one)) and len(two.methods) == 2 * len(one.methods)
    assert [s.name for s in one.steps].count("split") == [s.name for s in two.steps].count("split") == 1
    used = {}
    for step in trainings(two):
        steps.write_configs(step)
        cfg = load_config(next(iter(step.configs)))
        used[step.name] = (cfg.train.seed, cfg.data.split_file)
    assert used["p2g-pretrain-seed0"][0] == rp.BASE_SEED and used["p2g-pretrain-seed1"][0] == rp.BASE_SEED + 1
    assert len({split for _, split in used.values()}) == 1  # the same split for every seed
    seg1 = next(s for s in two.steps if s.name == "p2g-segmentation-seed1").commands[0]
    assert str(tmp_path / "o2" / "runs" / "p2g-pretrain-seed1" / "checkpoints" / "last.pt") in seg1
    assert sorted({m.seed for m in two.methods}) == [0, 1]
    with pytest.raises(InputError, match="seeds"):
        rp.build_plan("table3", tmp_path / "d", tmp_path / "o3", seeds=0)


@pytest.mark.parametrize("table", ["table3", "table7"])
def test_each_seed_is_a_lane_whose_steps_depend_only_on_each_other(tmp_path, table):
    """Seeds may run side by side (`execute(lanes=...)`): a seed's commands name only its own runs."""
    one = rp.build_plan(table, tmp_path / "d", tmp_path / "o1")
    assert all(s.lane == "" for s in one.steps)  # one seed: nothing to run beside it
    plan = rp.build_plan(table, tmp_path / "d", tmp_path / "o2", seeds=3)
    lanes = {s.name: s.lane for s in plan.steps}
    assert lanes["split"] == lanes["table"] == "" and set(lanes.values()) == {"", "seed0", "seed1", "seed2"}
    laned = [s for s in plan.steps if s.lane]
    assert [s.lane for s in laned] == sorted(s.lane for s in laned)  # one contiguous block, seed after seed
    for step in laned:
        own = step.lane
        text = " ".join(" ".join(c) for c in step.commands) + step.name + step.template
        others = {f"-seed{k}" for k in range(3)} - {f"-{own}"}
        assert not any(other + "/" in text or other + " " in text or text.endswith(other) for other in others), step.name


def test_table_shows_mean_and_std_over_seeds_and_marks_paired_differences(tmp_path):
    plan = rp.build_plan("table2", tmp_path / "d", tmp_path, seeds=2)
    # Ours beats SwinUNETR on T1 -> T2 by 2 dB in every (seed, subject) pair; T2 -> FLAIR is a tie
    psnr = {("Ours", 0): [20, 22, 24, 26, 28, 30], ("Ours", 1): [21, 23, 25, 27, 29, 31]}
    psnr |= {("SwinUNETR", k): [v - 2 for v in psnr[("Ours", k)]] for k in (0, 1)}
    for method in plan.methods:
        method.csv.parent.mkdir(parents=True, exist_ok=True)
        values = psnr[(method.label, method.seed)]
        lines = [f"c{i},from-t1n,t2w,{v},0.1,0.8" for i, v in enumerate(values)]
        lines += [f"c{i},from-t2w,t2f,{25 + (i % 2) * (1 if method.seed else -1)},0.1,0.8" for i in range(6)]
        method.csv.write_text("case,source,modality,psnr,nmse,ssim\n" + "\n".join(lines) + "\n")
    md_path, csv_path = comparison.write_table(plan)
    rows = {(r["method"], r["setting"], r["metric"]): r for r in summaries.read_csv(csv_path)}
    ours = rows[("Ours", "T1 -> T2", "psnr")]
    per_seed = [statistics.mean(psnr[("Ours", k)]) for k in (0, 1)]
    assert float(ours["measured"]) == pytest.approx(statistics.mean(per_seed))
    assert float(ours["std"]) == pytest.approx(statistics.stdev(per_seed))
    assert ours["seeds"] == "2"
    text = md_path.read_text()
    assert "(2 seeds)" in text and "± 0.707" in text
    tests = {(t["setting"], t["metric"]): t for t in seeds.paired_tests(plan)}
    t12 = tests[("T1 -> T2", "psnr")]
    assert t12["pairs"] == 12 and t12["mean_difference"] == pytest.approx(2.0) and t12["beyond_spread"]
    assert t12["p"] == pytest.approx(wilcoxon([2.0] * 12).pvalue)
    assert not tests[("T2 -> FLAIR", "psnr")]["beyond_spread"]  # identical per pair: no difference
    assert "Differences beyond the spread" in text and "| Ours - SwinUNETR | T1 -> T2 | psnr | +2.000 | 12 |" in text


def test_seed_statistics_ignore_nan_and_leave_a_single_value_without_spread():
    mean, std = seeds.seed_statistics([{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": math.nan}])
    assert mean["a"] == 2.0 and std["a"] == pytest.approx(math.sqrt(2))
    assert mean["b"] == 2.0 and math.isnan(std["b"])


@pytest.mark.slow
def test_tiny_reproduce_with_two_seeds_end_to_end(tmp_path):
    from p2gmed.cli import main

    data = tmp_path / "data"
    assert main(["data", "make-demo", "--out", str(data), "--kind", "brain", "--subjects", "5"]) == 0
    out = tmp_path / "o"
    assert main(["reproduce", "table2", "--data", str(data), "--out", str(out), "--max-steps", "2",
                 "--seeds", "2"]) == 0
    rows = summaries.read_csv(out / "table2.csv")
    ours = [r for r in rows if r["method"] == "Ours" and r["measured"]]
    assert ours and all(r["seeds"] == "2" and math.isfinite(float(r["std"])) for r in ours)
    assert "Differences beyond the spread" in (out / "table2.md").read_text()
