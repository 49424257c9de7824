"""`p2g reproduce`: every table's plan, its configs, the step executor, splits and the comparison tables."""

from __future__ import annotations

import os

import json
import math
import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest

from p2gmed.config import load_config
from p2gmed.errors import InputError
from p2gmed.modalities import MRI
from p2gmed.report import comparison, planning, steps, summaries
from p2gmed.report import reproduce as rp


def _load_step_configs(plan, tmp_path):
    """Write each training step's config file and load it with the strict loader."""
    loaded = {}
    for step in plan.steps:
        steps.write_configs(step)
        for path in step.configs:
            loaded[step.name] = load_config(path)
    return loaded


@pytest.mark.parametrize("table", rp.TABLES)
def test_every_table_plan_builds_and_its_configs_load_at_tiny_scale(table, tmp_path):
    plan = rp.build_plan(table, tmp_path / "data", tmp_path / "out", "tiny")
    cfgs = _load_step_configs(plan, tmp_path)
    assert cfgs, "a table without any training run"
    for name, cfg in cfgs.items():
        assert cfg.data.roi_size == (32, 32, 64), name  # tiny-cpu laid over the paper preset
        assert cfg.model.feature_size == 12 and cfg.train.epochs == 0, name
        assert cfg.data.split_file == str(tmp_path / "out" / "split.json"), name
    assert plan.steps[0].name == "split" and plan.steps[-1].name == "table"
    # every predict step is followed by the evaluation of the same method
    names = [s.name for s in plan.steps]
    for method in plan.methods:
        slug = method.pred.name
        assert names.index(f"evaluate-{slug}") == names.index(f"predict-{slug}") + 1


@pytest.mark.parametrize("table", ["table2", "table3", "table5", "table6"])
def test_paper_scale_keeps_the_paper_presets(table, tmp_path):
    plan = rp.build_plan(table, tmp_path / "d", tmp_path / "o", "paper", test_data=tmp_path / "t")
    for name, cfg in _load_step_configs(plan, tmp_path).items():
        assert cfg.data.roi_size == (96, 96, 96) and cfg.model.feature_size == 48, name
        assert cfg.train.epochs == 1000 and cfg.data.split_file is None, name
    assert "split" not in [s.name for s in plan.steps]  # a given test set needs no split


def test_ablation_tables_use_the_six_constraint_sets(tmp_path):
    plan = rp.build_plan("table7", tmp_path / "d", tmp_path / "o")
    cfgs = _load_step_configs(plan, tmp_path)
    pre = [cfgs[f"pretrain-{i}"] for i in range(1, 7)]
    # the paper's columns: 1 eq, 2 inv, 3 eq+inv, 4 eq+O, 5 inv+O, 6 eq+inv+O; contrast and decomposition always
    expected = [(1, 0, 0), (0, 1, 0), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1)]
    got = [(int(c.loss.equivariance > 0), int(c.loss.invariance > 0), int(c.model.use_prior)) for c in pre]
    assert got == expected
    assert all(c.loss.contrast > 0 and c.loss.decomposition > 0 for c in pre)
    seg = [cfgs[f"segmentation-{i}"] for i in range(1, 7)]
    assert [int(c.model.use_prior) for c in seg] == [e[2] for e in expected]  # tuned with its own architecture
    assert all(c.tune.task == "segmentation" for c in seg)


def test_baselines_are_stock_architectures_from_scratch(tmp_path):
    plan = rp.build_plan("table5", tmp_path / "d", tmp_path / "o")
    cfgs = _load_step_configs(plan, tmp_path)
    assert (cfgs["unetr-segmentation"].tune.architecture, cfgs["unetr-segmentation"].tune.init) == ("unetr", "scratch")
    assert cfgs["swinunetr-segmentation"].tune.architecture == "swinunetr"
    ours = next(s for s in plan.steps if s.name == "p2g-segmentation").commands[0]
    assert ours[ours.index("--init") + 1].endswith("runs/p2g-pretrain/checkpoints/last.pt")
    assert ours[ours.index("--architecture") + 1] == "p2g" and cfgs["p2g-segmentation"].tune.init == "full"
    unetr = next(s for s in plan.steps if s.name == "unetr-segmentation").commands[0]
    assert "--init" not in unetr and unetr[unetr.index("--architecture") + 1] == "unetr"


def test_nac_tuning_takes_the_pretrained_encoder_into_the_p2g_architecture(tmp_path):
    plan = rp.build_plan("table6", tmp_path / "d", tmp_path / "o")
    cfgs = _load_step_configs(plan, tmp_path)
    ours = next(s for s in plan.steps if s.name == "p2g-nac").commands[0]
    assert "--encoder-only" in ours and ours[ours.index("--architecture") + 1] == "p2g"
    assert cfgs["p2g-nac"].data.modalities == ("ct", "pet", "pet_nac")
    assert cfgs["p2g-pretrain"].data.modalities == ("ct", "pet")  # pre-trained on AC-PET and CT only
    assert [m.label for m in plan.methods] == ["Ours", "SwinUNETR (scratch)", "UNETR (scratch)"]


def test_unknown_table_and_scale_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="table11"):
        rp.build_plan("table11", tmp_path, tmp_path)
    with pytest.raises(InputError, match="scale"):
        rp.build_plan("table1", tmp_path, tmp_path, "huge")
    assert rp.build_plan("3", tmp_path, tmp_path).table == "table3"


def test_cli_dry_run_prints_commands_and_writes_nothing(tmp_path, capsys):
    from p2gmed.cli import main

    assert main(["reproduce", "table3", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"),
                 "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "p2g pretrain --data" in text and "p2g finetune --task segmentation" in text
    assert "p2g evaluate brats" in text and "15 source subsets" in text
    assert not (tmp_path / "o").exists()
    assert main(["reproduce", "table99", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2


def _steps(tmp_path, log):
    out = tmp_path / "made"

    def action():
        out.mkdir(exist_ok=True)
        (out / "file").write_text("x")

    return [steps.Step("a", "first", [["cmd", "1"]], outputs=(out,), action=action),
            steps.Step("b", "second", [["cmd", "2"]], expand=lambda: [["cmd", "3"]])]


def test_execute_skips_finished_steps_and_force_redoes_them(tmp_path):
    calls = []
    state = tmp_path / ".state"
    first = steps.execute(_steps(tmp_path, calls), state, runner=calls.append, echo=lambda s: None)
    assert calls == [["cmd", "1"], ["cmd", "2"], ["cmd", "3"]] and [r.status for r in first] == ["ran", "ran"]
    assert json.loads((state / "b.json").read_text())["commands"] == ["p2g cmd 2", "p2g cmd 3"]
    calls.clear()
    again = steps.execute(_steps(tmp_path, calls), state, runner=calls.append, echo=lambda s: None)
    assert calls == [] and [r.status for r in again] == ["reused", "reused"]
    steps.execute(_steps(tmp_path, calls), state, runner=calls.append, echo=lambda s: None, force=True)
    assert len(calls) == 3


def test_execute_redoes_an_interrupted_step_removing_only_what_p2g_recorded(tmp_path):
    state = tmp_path / ".state"
    steps.execute(_steps(tmp_path, []), state, runner=lambda a: None, echo=lambda s: None)
    (tmp_path / "made" / "file").write_text("stale")  # p2g's own output of the earlier invocation
    (tmp_path / "made" / "mine.txt").write_text("the user's")
    (state / "a.json").unlink()  # as if step a had been interrupted

    def failing(argv):
        raise InputError("boom")

    with pytest.raises(InputError):
        steps.execute(_steps(tmp_path, []), state, runner=failing, echo=lambda s: None)
    assert not (state / "a.json").exists() and not (tmp_path / "made" / "file").exists()
    steps.execute(_steps(tmp_path, []), state, runner=lambda a: None, echo=lambda s: None)
    assert (tmp_path / "made" / "file").read_text() == "x"
    assert (tmp_path / "made" / "mine.txt").read_text() == "the user's"
    steps.execute(_steps(tmp_path, []), state, runner=lambda a: None, echo=lambda s: None, force=True)
    assert (tmp_path / "made" / "mine.txt").read_text() == "the user's"


def test_execute_refuses_a_folder_p2g_did_not_write(tmp_path):
    (tmp_path / "thesis.docx").write_text("years of work")
    with pytest.raises(InputError, match="not written by p2g"):
        steps.execute(_steps(tmp_path, []), tmp_path / ".state", runner=lambda a: None, echo=lambda s: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.docx"]


def test_execute_resumes_an_interrupted_training_run(tmp_path):
    run = tmp_path / "runs" / "pre"
    plan = [steps.Step("pre", "training", [["pretrain", "--out", str(run)]], outputs=(run,), run=run)]
    calls = []
    steps.execute(plan, tmp_path / ".state", runner=calls.append, echo=lambda s: None)
    assert calls == [["pretrain", "--out", str(run)]]
    (tmp_path / ".state" / "pre.json").unlink()
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"checkpoint of step 3")
    (run / "notes.txt").write_text("the user's")
    steps.execute(plan, tmp_path / ".state", runner=calls.append, echo=lambda s: None)
    assert calls[-1] == ["pretrain", "--out", str(run), "--resume"]
    assert (run / "checkpoints" / "last.pt").exists()
    steps.execute(plan, tmp_path / ".state", runner=calls.append, echo=lambda s: None, force=True)
    assert calls[-1] == ["pretrain", "--out", str(run)]  # redone: p2g's run files removed, the user's kept
    assert not (run / "checkpoints" / "last.pt").exists() and (run / "notes.txt").read_text() == "the user's"


def test_interrupt_inside_a_plan_is_an_interrupt_not_a_failure(tmp_path):
    from p2gmed.errors import Interrupted

    def interrupted(argv):
        raise KeyboardInterrupt

    def run(argv):
        from unittest import mock

        with mock.patch("p2gmed.cli.build_parser") as parser:
            parser.return_value.parse_args.return_value.func = interrupted
            parser.return_value.parse_args.return_value.verbose = False
            steps.run_p2g(argv)

    with pytest.raises(Interrupted) as caught:
        run(["pretrain"])
    assert caught.value.exit_code == 130


def test_dry_run_executes_nothing(tmp_path):
    calls = []
    results = steps.execute(_steps(tmp_path, calls), tmp_path / ".state", dry_run=True, runner=calls.append,
                         echo=lambda s: None)
    assert calls == [] and not (tmp_path / ".state").exists() and not (tmp_path / "made").exists()
    assert [r.status for r in results] == ["planned", "planned"]


def test_failed_p2g_command_names_the_command(tmp_path):
    with pytest.raises(InputError, match="p2g reproduce table0"):
        steps.run_p2g(["reproduce", "table0", "--data", str(tmp_path), "--out", str(tmp_path)])


def _subject(sid, patient, mods=("t1n", "t2f")):
    return SimpleNamespace(subject_id=sid, patient_id=patient, images={m: Path(f"/d/{sid}-{m}.nii.gz") for m in mods})


def test_split_is_by_patient_disjoint_and_deterministic():
    subjects = [_subject(f"s{i}a", f"p{i}") for i in range(10)] + [_subject(f"s{i}b", f"p{i}") for i in range(10)]
    split = planning.make_split(subjects, seed=3)
    assert split == planning.make_split(subjects, seed=3)
    ids = split["train"] + split["val"] + split["test"]
    assert sorted(ids) == sorted(s.subject_id for s in subjects)
    patient = {s.subject_id: s.patient_id for s in subjects}
    groups = [{patient[i] for i in split[k]} for k in ("train", "val", "test")]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert len(groups[2]) == 2 and len(groups[1]) == 1  # 20 % and 10 % of 10 patients
    with pytest.raises(InputError):
        planning.make_split([_subject("a", "p")])


def test_predict_commands_one_per_subject_with_every_subset():
    subjects = [_subject("c1", "p1"), _subject("c2", "p2")]
    cmds = planning.predict_commands([Path("m.pt")], subjects, [("t2f",), ("t2f", "t1n")], ("t1n", "t2f"), Path("/o"),
                                     reconstruct=True)
    assert len(cmds) == 2
    assert cmds[1] == ["predict", "--model", "m.pt", "--out", "/o", "--case", "c2",
                       "--input", "t1n=/d/c2-t1n.nii.gz", "t2f=/d/c2-t2f.nii.gz", "--subsets", "t2f", "t2f+t1n",
                       "--reconstruct-given"]
    with pytest.raises(InputError, match="c1 lacks t1c"):
        planning.predict_commands([Path("m.pt")], subjects[:1], [("t1c",)], ("t1c",), Path("/o"))


def test_mean_by_groups_sources_and_ignores_nan():
    rows = [{"source": "from-t1n", "modality": "t2", "psnr": "20", "ssim": "0.5"},
            {"source": "t1n", "modality": "t2w", "psnr": "30", "ssim": ""},
            {"source": "from-t1n+t2f", "modality": "t2w", "psnr": "nan", "ssim": "0.9"}]
    means = summaries.mean_by(rows, ("source", "modality"), ("psnr", "ssim"))
    single = means[(frozenset({"t1n"}), "t2w")]
    assert single["psnr"] == 25 and single["psnr_std"] == 5 and single["ssim"] == 0.5 and single["n"] == 2
    assert math.isnan(means[(frozenset({"t1n", "t2f"}), "t2w")]["psnr"])


def test_segmentation_summary_by_number_of_missing_modalities():
    # Dice = 0.1 x (number of available modalities): full 40 %, 1 missing 30 %, 2 missing 20 %, 3 missing 10 %
    means = {(frozenset(s),): {m: 0.1 * len(s) for m, _ in summaries.SEG_REGIONS} for s in planning.MRI_SUBSETS}
    summary = summaries.segmentation_summary(means, MRI)["TC"]
    assert summary["missing0"] == pytest.approx(40) and summary["missing3"] == pytest.approx(10)
    # 4 x 10 + 6 x 20 + 4 x 30 + 1 x 40 = 320 over 15 subsets
    assert summary["mean"] == pytest.approx(320 / 15)
    # std over the 15 subset means with ddof 1, as the paper computes Table 3 from its Table 10
    values = [10.0] * 4 + [20.0] * 6 + [30.0] * 4 + [40.0]
    assert summary["std"] == pytest.approx(statistics.stdev(values))


def test_table_compares_measured_autopet_numbers_with_the_paper(tmp_path):
    plan = rp.build_plan("table5", tmp_path / "d", tmp_path, "tiny")
    for method in plan.methods:
        method.csv.parent.mkdir(parents=True, exist_ok=True)
        # two cases with a lesion (Dice 0.5, 0.7) and one without anything (Dice undefined)
        method.csv.write_text("case,dice,fpv_ml,fnv_ml\na,0.5,1.0,2.0\nb,0.7,3.0,0.0\nc,,0.0,0.0\n")
    md_path, csv_path = comparison.write_table(plan)
    rows = list(summaries.read_csv(csv_path))
    ours = {r["metric"]: r for r in rows if r["method"] == "Ours"}
    assert float(ours["dice"]["measured"]) == pytest.approx(100 * 1.2 / 3)  # undefined counts as 0
    # DICE- as autopet_summary: the true negative (both empty) counts 1
    assert float(ours["dice_minus"]["measured"]) == pytest.approx(100 * (0.5 + 0.7 + 1) / 3)
    assert float(ours["dice"]["paper"]) == pytest.approx(48.20)
    assert float(ours["fpv_ml"]["measured"]) == pytest.approx(4 / 3)
    text = md_path.read_text()
    assert "| Ours | PET + CT |" in text and "40.000 (48.200)" in text
    assert "nnU-Net (paper only)" in text  # paper-only rows stay for context


def test_synthesis_table_uses_source_target_pairs(tmp_path):
    plan = rp.build_plan("table1", tmp_path / "d", tmp_path)
    csv_path = plan.methods[0].csv
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    csv_path.write_text("case,source,modality,psnr,nmse,ssim\n"
                        "a,from-t1n,t2w,20.0,0.2,0.8\nb,from-t1n,t2w,22.0,0.4,0.6\n"
                        "a,from-t2w,t2f,30.0,0.1,0.9\n")
    rows = summaries.read_csv(comparison.write_table(plan)[1])
    got = {(r["setting"], r["metric"]): r for r in rows if r["method"] == "Ours"}
    assert float(got[("T1 -> T2", "psnr")]["measured"]) == pytest.approx(21.0)
    assert float(got[("T1 -> T2", "psnr")]["paper"]) == pytest.approx(30.756)
    assert float(got[("T2 -> FLAIR", "ssim")]["measured"]) == pytest.approx(0.9)
    assert got[("T1 -> T1ce", "psnr")]["measured"] == ""  # not measured: left empty, not invented


@pytest.mark.slow
def test_tiny_reproduce_table1_end_to_end(tmp_path):
    from p2gmed.cli import main

    data = tmp_path / "data"
    assert main(["data", "make-demo", "--out", str(data), "--kind", "brain", "--subjects", "3"]) == 0
    assert main(["reproduce", "table1", "--data", str(data), "--out", str(tmp_path / "o"), "--max-steps", "2"]) == 0
    rows = summaries.read_csv(tmp_path / "o" / "table1.csv")
    measured = [float(r["measured"]) for r in rows if r["method"] == "Ours" and r["measured"]]
    assert measured and all(math.isfinite(v) for v in measured)
    assert "(30.756)" in (tmp_path / "o" / "table1.md").read_text()


def test_table6_average_leaves_out_the_identity_pair(tmp_path):
    """Table 6's Avg. is over NAC -> CT and NAC -> AC-PET, the two pairs the paper reports (App. B.4)."""
    plan = rp.build_plan("table6", tmp_path / "d", tmp_path)
    for method in plan.methods:
        method.csv.parent.mkdir(parents=True, exist_ok=True)
        method.csv.write_text("case,source,modality,psnr,nmse,ssim\n"
                              "a,from-pet_nac,ct,20.0,0.2,0.5\na,from-pet_nac,pet,40.0,0.1,0.9\n"
                              "a,from-pet_nac,pet_nac,60.0,0.0,1.0\n")
    measured = comparison.measured_rows(plan)
    assert measured[("Ours", "Avg.", "psnr")] == pytest.approx(30.0)
    assert measured[("Ours", "Avg.", "ssim")] == pytest.approx(0.7)


def test_table7_tunings_keep_the_invariance_term_and_change_only_pretraining(tmp_path):
    """App. B.3.2: every model pre-trained by the method is tuned with L_inv; ablations change pre-training."""
    plan = rp.build_plan("table7", tmp_path / "d", tmp_path / "o")
    cfgs = _load_step_configs(plan, tmp_path)
    seg = [cfgs[f"segmentation-{i}"] for i in range(1, 7)]
    assert all(c.loss.invariance > 0 for c in seg)
    reference = seg[-1]
    for c in seg[:-1]:  # the tunings differ in the architecture that matches their pre-training, nothing else
        assert (c.loss, c.train, c.tune) == (reference.loss, reference.train, reference.tune)


def test_pet_ct_synthesis_table_states_its_background_rule(tmp_path):
    plan = rp.build_plan("table4", tmp_path / "d", tmp_path)
    for method in plan.methods:
        method.csv.parent.mkdir(parents=True, exist_ok=True)
        method.csv.write_text("case,source,modality,psnr,nmse,ssim\na,from-ct,pet,30.0,0.1,0.9\n")
    header = comparison.write_table(plan)[0].read_text().split("|")[0]
    assert "HU" in header and "SUV" in header and "-0.35" not in header


def test_ablations_without_equivariance_do_not_rotate(tmp_path):
    """Table 4/7 columns 2 and 5 are 'without equivariance': phi follows the switch (loss.rotate_inputs)."""
    plan = rp.build_plan("table4", tmp_path / "d", tmp_path / "o")
    cfgs = _load_step_configs(plan, tmp_path)
    pre = [cfgs[f"pretrain-{i}"] for i in range(1, 7)]
    assert [c.loss.rotate_inputs for c in pre] == [c.loss.equivariance > 0 for c in pre] == [
        True, False, True, True, False, True]


def test_table6_tunes_nac_to_ac_pet_and_ct_only(tmp_path):
    """App. B.4: NAC -> AC-PET and NAC -> CT only, for ours and the baselines alike; the decoder is fresh."""
    plan = rp.build_plan("table6", tmp_path / "d", tmp_path / "o")
    cfgs = _load_step_configs(plan, tmp_path)
    for name in ("p2g-nac", "swinunetr-nac", "unetr-nac"):
        assert cfgs[name].tune.sources == ("pet_nac",) and cfgs[name].tune.targets == ("ct", "pet"), name
    assert [m.models for m in plan.methods if m.label == "Ours"] == [("p2g-nac",)]


def test_ablation_rows_are_named_as_the_paper_and_meet_its_numbers(tmp_path):
    plan = rp.build_plan("table7", tmp_path / "d", tmp_path)
    assert plan.methods[0].label == "1: + Contrastive + Decomposition + Equivariance"
    assert plan.methods[-1].label.endswith("+ Equivariance + Invariance + O")
    for method in plan.methods:
        method.csv.parent.mkdir(parents=True, exist_ok=True)
        method.csv.write_text("case,dice,fpv_ml,fnv_ml\na,0.5,1.0,2.0\n")
    rows = summaries.read_csv(comparison.write_table(plan)[1])
    row = next(r for r in rows if r["method"] == plan.methods[3].label and r["metric"] == "dice")
    assert float(row["paper"]) == pytest.approx(46.31) and float(row["measured"]) == pytest.approx(50.0)


def test_table6_shows_the_average_next_to_the_papers(tmp_path):
    plan = rp.build_plan("table6", tmp_path / "d", tmp_path)
    for method in plan.methods:
        method.csv.parent.mkdir(parents=True, exist_ok=True)
        method.csv.write_text("case,source,modality,psnr,nmse,ssim\n"
                              "a,from-pet_nac,ct,20.0,0.2,0.5\na,from-pet_nac,pet,40.0,0.1,0.9\n")
    rows = summaries.read_csv(comparison.write_table(plan)[1])
    avg = {r["metric"]: r for r in rows if r["method"] == "Ours" and r["setting"] == "Avg."}
    assert float(avg["psnr"]["measured"]) == pytest.approx(30.0)
    assert float(avg["ssim"]["paper"]) == pytest.approx(0.8227, abs=1e-4)  # the paper's own Avg. column
    assert float(avg["psnr"]["paper"]) == pytest.approx(36.1578, abs=1e-4)


def test_table4_average_rows_follow_the_papers_row_order_in_every_process(tmp_path):
    """The Avg. rows were built by iterating a set of strings, whose order changes with Python's hash seed."""
    import subprocess
    import sys

    script = (
        "import sys; from pathlib import Path; from p2gmed.report import reproduce as rp, comparison\n"
        "plan = rp.build_plan('table4', Path(sys.argv[1]) / 'd', Path(sys.argv[1]))\n"
        "rows = comparison.comparison(plan, {})\n"
        "print('|'.join(r['method'] for r in rows if r['setting'] == 'Avg.' and r['metric'] == 'ssim'))\n"
    )
    orders = {
        subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout.strip().splitlines()[-1]
        for seed in (1, 2, 3)
    }
    plan = rp.build_plan("table4", tmp_path / "d", tmp_path)
    assert orders == {"|".join(m.label for m in plan.methods)}


@pytest.mark.parametrize("table", ["table2", "table3", "table7"])
def test_small_scale_lays_the_demo_settings_and_each_kind_its_steps(table, tmp_path):
    import yaml

    plan = rp.build_plan(table, tmp_path / "data", tmp_path / "out", "small")
    kinds = set()
    for step in plan.steps:
        for path, mapping in step.configs.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(mapping))
            cfg = load_config(path)
            assert cfg.data.roi_size == (32, 32, 64) and cfg.model.feature_size == 12
            assert cfg.train.schedule == "warmup_cosine" and cfg.train.epochs == 0
            argv = step.commands[0]
            kind = "pretrain" if argv[0] == "pretrain" else argv[argv.index("--task") + 1]
            kinds.add(kind)
            expected = rp.SMALL_RUNS[kind]
            assert cfg.train.max_steps == expected["train"]["max_steps"], step.name
            if kind == "segmentation":
                assert cfg.train.lr == expected["train"]["lr"]
            if kind == "synthesis":
                assert cfg.tune.train_decode == "per_modality"
            if kind == "pretrain":
                assert cfg.data.crops_per_subject == 2
    assert "pretrain" in kinds
