"""`p2g demo`: its plan, the report writer on stubbed stage results, and the Markdown -> HTML converter."""

from __future__ import annotations

import html.parser
from pathlib import Path

import pytest

from p2gmed.report import demo
from p2gmed.report.html import html_document, markdown_to_html
from p2gmed.report.planning import MRI_SUBSETS
from p2gmed.report.steps import StepResult, execute


class _Tags(html.parser.HTMLParser):
    """Collects tags and checks that every opened tag is closed in order (valid nesting)."""

    VOID = {"img", "br", "hr", "meta"}

    def __init__(self):
        super().__init__()
        self.stack, self.seen, self.attrs = [], [], []

    def handle_starttag(self, tag, attrs):
        self.seen.append(tag)
        self.attrs.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()


def _parse(text: str) -> _Tags:
    parser = _Tags()
    parser.feed(text)
    assert parser.stack == []
    return parser


def test_html_table_with_alignment_and_inline_markup():
    md = "| a | b |\n|:--|--:|\n| `x` | **bold** |\n| 1 |\n"
    out = markdown_to_html(md)
    tags = _parse(out)
    assert tags.seen.count("tr") == 3 and tags.seen.count("th") == 2 and tags.seen.count("td") == 4
    assert ("th", {"style": "text-align: left;"}) in tags.attrs
    assert ("th", {"style": "text-align: right;"}) in tags.attrs
    assert "<strong>bold</strong>" in out and "<code>x</code>" in out


def test_html_images_links_code_lists_quotes_and_escaping():
    md = ("# Title *x*\n\nSome <script>alert(1)</script> & text with ![fig](figures/a.png) and "
          "[link](https://e.org).\n\n- one\n- `two <b>`\n\nthen\n\n1. first\n2. second\n\n> **warn** here\n\n"
          "```\nif a < b:\n    **not bold**\n```\n\n---\n")
    out = markdown_to_html(md)
    tags = _parse(out)
    assert "<script>" not in out and "&lt;script&gt;" in out and "&amp; text" in out
    assert ("img", {"src": "figures/a.png", "alt": "fig"}) in tags.attrs
    assert ("a", {"href": "https://e.org"}) in tags.attrs
    assert tags.seen.count("li") == 4 and "ul" in tags.seen and "ol" in tags.seen
    assert "<code>two &lt;b&gt;</code>" in out
    assert "blockquote" in tags.seen and "<strong>warn</strong> here" in out
    assert "if a &lt; b:\n    **not bold**" in out  # code blocks are verbatim
    assert "<h1>Title <em>x</em></h1>" in out and "hr" in tags.seen


@pytest.mark.parametrize("url", ["javascript:alert(1)", "JaVaScRiPt:alert(1)", " java\tscript:x", "data:text/html,x",
                                 "vbscript:x"])
def test_html_drops_unsafe_link_and_image_addresses(url):
    out = markdown_to_html(f"[click]({url}) and ![pic]({url})")
    tags = _parse(out)
    assert all("href" not in attrs and "src" not in attrs for _, attrs in tags.attrs), out
    assert "click" in out


def test_html_escapes_alt_text_and_raw_html():
    out = markdown_to_html('![x" onerror="alert(1)](a.png)\n\n<div onclick="x">raw</div>\n\n<img src=x onerror=y>')
    tags = _parse(out)
    assert ("img", {"src": "a.png", "alt": 'x" onerror="alert(1)'}) in tags.attrs  # one attribute, escaped
    assert [tag for tag in tags.seen if tag in ("div", "img")] == ["img"]
    assert "&lt;div" in out and "&lt;img src=x" in out


def test_html_document_is_self_contained():
    page = html_document("# r\n\ntext", "t<1>")
    assert page.startswith("<!DOCTYPE html>") and "<title>t&lt;1&gt;</title>" in page and "http" not in page
    _parse(page)


def test_quick_and_full_demo_plans(tmp_path):
    quick, full = demo.demo_settings(True), demo.demo_settings(False)
    assert quick.pretrain_steps < full.pretrain_steps and quick.train_subjects < full.train_subjects
    q = demo.demo_steps(tmp_path, quick)
    f = demo.demo_steps(tmp_path, full)
    assert [s.name for s in q] == ["data", "pretrain", "synthesis", "segmentation", "predict-p2g", "baselines",
                                   "evaluate"]
    assert "baseline-swinunetr" in [s.name for s in f] and "predict-swinunetr" in [s.name for s in f]
    data = q[0].commands
    assert data[0][data[0].index("--subjects") + 1] == str(quick.train_subjects)
    assert data[0][data[0].index("--out") + 1] != data[1][data[1].index("--out") + 1]  # test set kept apart
    tune = next(s for s in q if s.name == "synthesis").commands[0]
    assert tune[tune.index("--init") + 1] == str(tmp_path / "runs" / "pretrain" / "checkpoints" / "last.pt")
    evaluate = next(s for s in f if s.name == "evaluate").commands
    assert [c[1] for c in evaluate] == ["synthesis"] * 4 + ["brats", "brats"]
    assert [c[c.index("--out") + 1].rsplit("/", 1)[1] for c in evaluate[:4]] == [
        "synthesis.csv", "synthesis-copy.csv", "synthesis-linear.csv", "synthesis-voxelmap.csv"]
    assert evaluate[0][evaluate[0].index("--convention") + 1] == "unit"


def test_demo_configs_load_and_extend_tiny_cpu(tmp_path):
    from p2gmed.config import load_config
    from p2gmed.report.steps import write_configs

    for step in demo.demo_steps(tmp_path, demo.demo_settings(False)):
        write_configs(step)
        for path in step.configs:
            cfg = load_config(path)
            assert cfg.model.feature_size == 12 and cfg.data.val_fraction == 0.0  # every subject trains
            if step.name == "baseline-swinunetr":
                assert (cfg.tune.architecture, cfg.tune.init) == ("swinunetr", "scratch")
            # the SSIM term (docs/method.md 5.11) and T1 as the only source are the demo's synthesis choices only
            assert cfg.loss.ssim == (1.0 if step.name == "synthesis" else 0.0)
            assert cfg.tune.sources == (("t1n",) if step.name == "synthesis" else ())
            # P2G's segmentation uses the preset's plain CE; the baseline from scratch keeps the paper's weighting
            if step.name in ("segmentation", "baseline-swinunetr"):
                assert cfg.inference.lesions == "core"
                assert cfg.loss.ce_weighting == ("uniform" if step.name == "segmentation" else "mmformer")


def test_full_demo_runs_its_tunings_in_two_lanes_and_quick_in_one(tmp_path, monkeypatch):
    steps = demo.demo_steps(tmp_path, demo.demo_settings(False))
    lanes = [(s.name, s.lane) for s in steps]
    # one contiguous block: synthesis on one side; segmentation, the baseline and its predictions on the other
    assert lanes[2:6] == [("synthesis", "synthesis"), ("segmentation", "segmentation"),
                          ("baseline-swinunetr", "segmentation"), ("predict-swinunetr", "segmentation")]
    assert all(lane == "" for _, lane in lanes[:2] + lanes[6:]) and lanes[6][0] == "predict-p2g"
    asked = {}

    class Stop(Exception):
        pass

    def fake_execute(steps, state, **kwargs):
        asked.update(kwargs)
        raise Stop

    monkeypatch.setattr(demo, "execute", fake_execute)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr("torch.set_num_threads", lambda n: None)  # keep the test process's threads
    for quick, threads, expected in ((False, 2, 2), (True, 2, 1), (False, 1, 1)):
        with pytest.raises(Stop):
            demo.run_demo(tmp_path / f"d{quick}{threads}", quick=quick, threads=threads, echo=lambda _: None)
        assert asked["lanes"] == expected and len(asked["cores"]) <= threads


def test_demo_plan_runs_in_order_and_continues(tmp_path):
    steps = demo.demo_steps(tmp_path, demo.demo_settings(True))
    for step in steps:  # the predictions and baselines need the data; stub them
        step.expand = step.action = None
    calls = []
    execute(steps, tmp_path / ".state", runner=calls.append, echo=lambda s: None)
    assert [c[0] for c in calls][:3] == ["data", "data", "pretrain"]
    n = len(calls)
    again = execute(demo.demo_steps(tmp_path, demo.demo_settings(True)), tmp_path / ".state", runner=calls.append,
                    echo=lambda s: None)
    assert len(calls) == n and {r.status for r in again} == {"reused"}


def _write_csvs(folder: Path) -> tuple[Path, dict[str, Path]]:
    folder.mkdir(parents=True)
    syn = folder / "synthesis.csv"
    syn.write_text("case,source,modality,psnr,nmse,ssim\n"
                   "c1,from-t1n,t2w,21.5,0.25,0.75\nc2,from-t1n,t2w,23.5,0.35,0.85\n"
                   "c1,from-t1n,t1n,99,0,1\n")
    seg = folder / "seg.csv"
    lines = ["case,source,dice_wt,dice_tc,dice_et,dice_et_pp"]
    for subset in MRI_SUBSETS:  # Dice grows with the number of modalities: 0.2 per modality
        d = 0.2 * len(subset)
        lines.append(f"c1,from-{'+'.join(subset)},{d},{d},{d},{d}")
    seg.write_text("\n".join(lines) + "\n")
    return syn, {"P2G": seg}


def test_report_has_tables_warning_timings_and_html(tmp_path):
    syn, seg = _write_csvs(tmp_path / "evaluation")
    (tmp_path / "figures").mkdir()
    fig = tmp_path / "figures" / "synthesis.png"
    fig.write_bytes(b"\x89PNG")
    results = [StepResult("data", "simulated data", "ran", 1.25, ["p2g data make-demo --out x"]),
               StepResult("pretrain", "pre-training", "reused", 10.0, ["p2g pretrain --data x"]),
               # side by side: the slower lane (5.0 s against 3.0 + 1.5 s) counts once towards the wall clock
               StepResult("synthesis", "synthesis", "ran", 5.0, ["p2g finetune"], lane="synthesis"),
               StepResult("segmentation", "segmentation", "ran", 3.0, ["p2g finetune"], lane="segmentation"),
               StepResult("baseline", "baseline", "ran", 1.5, ["p2g finetune"], lane="segmentation"),
               StepResult("evaluate", "scores", "ran", 0.5, ["p2g evaluate"])]
    md_path = demo.write_report(tmp_path, demo.demo_settings(True), results, synthesis_csv=syn,
                                segmentation_csvs=seg, figures=[fig], environment={"device": "cpu"})
    md = md_path.read_text()
    assert "Simulated data, tiny scale" in md and "GPU" in md and "BraTS" in md
    assert "| data | simulated data | ran | 1.2 |" in md or "| data | simulated data | ran | 1.3 |" in md
    assert "| total | wall clock (stages run side by side count once) |  | 16.8 |" in md
    assert "| segmentation | segmentation (side by side, lane segmentation) | ran | 3.0 |" in md
    # T1 -> T2 mean over the two cases; the given modality is marked, not scored
    t1_row = next(line for line in md.splitlines() if line.startswith("| T1 |"))
    assert "| given | given | given |" in t1_row and "| 22.500 | 0.300 | 0.800 |" in t1_row
    # Table 3 layout: full set 80 %, 3 missing 20 %
    tc = next(line for line in md.splitlines() if line.startswith("| TC | P2G |"))
    assert tc.split("|")[5].strip() == "80.00" and tc.split("|")[8].strip() == "20.00"
    assert "![synthesis](figures/synthesis.png)" in md and "p2g pretrain --data x" in md
    page = (tmp_path / "report.html").read_text()
    tags = _parse(page)
    assert ("img", {"src": "figures/synthesis.png", "alt": "synthesis"}) in tags.attrs
    assert tags.seen.count("table") >= 4 and "<blockquote>" in page


def test_report_without_metrics_says_so(tmp_path):
    md = demo.write_report(tmp_path, demo.demo_settings(False), [], synthesis_csv=None,
                           segmentation_csvs={"P2G": tmp_path / "missing.csv"}, figures=[]).read_text()
    assert "No synthesis metrics" in md and "No segmentation metrics" in md


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path):
    from p2gmed.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "Simulated data" in md and "No synthesis metrics" not in md and "No segmentation metrics" not in md
    assert (out / "report.html").is_file() and (out / "evaluation" / "synthesis.csv").is_file()
    assert main(["demo", "--quick", "--out", str(out)]) == 0  # continues: every stage reused
    assert md.count("| ran |") > 0 and (out / "report.md").read_text().count("| reused |") >= 6
