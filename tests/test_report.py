"""verify --report, yarn report and --card: the pictures draw the JSON's numbers, the page is self-contained
and renders in a real browser without a network request, the card keeps valid front matter; and --compare
and the one-pass perplexity curve."""

from __future__ import annotations

import html
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from yarn_cli.cli.app import main

pytest.importorskip("matplotlib")


def run(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def tiny_x4(trained_tiny, tmp_path_factory):
    from yarn_cli.api import apply_extend, plan_extend

    out = tmp_path_factory.mktemp("report") / "x4"
    apply_extend(plan_extend(trained_tiny["model"], out, scale=4))
    return out


@pytest.fixture(scope="module")
def reported(tiny_x4, tmp_path_factory):
    """One verify run with a report, its JSON, and what matplotlib was asked to draw."""
    import matplotlib.axes

    drawn = []
    original, fill = matplotlib.axes.Axes.imshow, matplotlib.axes.Axes.fill_between

    def recording(self, data, *args, **kwargs):
        drawn.append((self, data.copy()))  # titled after imshow: read when the test looks
        return original(self, data, *args, **kwargs)

    def banding(self, x, low, high, *args, **kwargs):
        drawn.append((self, (list(x), list(low), list(high))))
        return fill(self, x, low, high, *args, **kwargs)

    folder = tmp_path_factory.mktemp("out") / "report"
    patch = pytest.MonkeyPatch()
    patch.setattr(matplotlib.axes.Axes, "imshow", recording)
    patch.setattr(matplotlib.axes.Axes, "fill_between", banding)
    try:
        from yarn_cli.api import verify

        report = verify(
            tiny_x4, tasks="passkey,perplexity,niah_single_1", lengths=[512, 1024], depths="0.2,0.8", samples=2, report=folder, parity=False
        ).to_json()
    finally:
        patch.undo()
    return folder, report, [(axes.get_title(), data) for axes, data in drawn]


def test_heatmaps_are_the_cells_means_and_the_pictures_draw_them(reported):
    folder, report, drawn = reported
    assert report["report"] == str(folder / "report.html")
    for task in ("passkey", "niah_single_1"):
        for variant in ("extended", "baseline"):
            values = report["heatmaps"][task][variant]
            scale = 100 if task == "passkey" else 1
            for length in ("512", "1024"):
                for depth in ("0.2", "0.8"):
                    cells = [
                        c["score"] * scale
                        for c in report["cells"]
                        if c["task"] == task and c["variant"] == variant and str(c["length"]) == length and c["depth"] == float(depth)
                    ]
                    assert len(cells) == 2 and values[length][depth] == pytest.approx(sum(cells) / 2)
            data = dict((t, d) for t, d in drawn if not isinstance(d, tuple))[f"{task}: {variant}"]
            assert data.tolist() == [[values[n][d] for n in ("512", "1024")] for d in ("0.2", "0.8")]
        difference = dict((t, d) for t, d in drawn if not isinstance(d, tuple))[f"{task}: extended - baseline"]
        ours, theirs = report["heatmaps"][task]["extended"], report["heatmaps"][task]["baseline"]
        assert difference.tolist() == [[ours[n][d] - theirs[n][d] for n in ("512", "1024")] for d in ("0.2", "0.8")]


def test_a_zero_difference_is_neutral_and_cell_values_are_legible(tmp_path):
    """The difference map's middle (no change) is grey, not the amber that means 'half' on a score map; a one-cell
    map prints its value large, a crowded one no smaller than 7 points; a difference of 0 prints as 0, not +0."""
    import matplotlib.text

    from yarn_cli.report import images

    middle = images._colour_map(True)(0.5)[:3]
    assert max(middle) - min(middle) < 0.02 and min(middle) > 0.8
    shown = []
    patch = pytest.MonkeyPatch()
    original = matplotlib.text.Text.__init__

    def recording(self, *args, **kwargs):
        original(self, *args, **kwargs)
        shown.append((self.get_text(), self.get_fontsize()))

    patch.setattr(matplotlib.text.Text, "__init__", recording)
    try:
        images.draw_heatmap({"512": {"0.5": 0.0}}, "one cell", tmp_path / "one.png", diverging=True)
    finally:
        patch.undo()
    values = [(text, size) for text, size in shown if text in ("0", "+0", "-0")]
    assert values == [("0", 22.0)]
    assert images.cell_font_size(40, 10) == 7.0


def test_pngs_open_with_pillow_at_their_size_and_the_page_is_self_contained(reported):
    from PIL import Image

    folder, report, _ = reported
    pngs = sorted(p.name for p in folder.glob("*.png"))
    assert "heatmap-niah_single_1-difference.png" in pngs and "perplexity-last-tokens.png" in pngs and len(pngs) == 8
    for name in pngs:
        with Image.open(folder / name) as image:
            assert image.format == "PNG" and image.size == (720, 400)
            assert len(image.convert("L").getcolors(256) or []) > 10  # drawn, not blank
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page.lower() and "@import" not in page and "@font-face" not in page
    sources = re.findall(r'(?:src|href)\s*=\s*"?([^"\s>]+)', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert json.loads((folder / "report.json").read_text()) == json.loads(json.dumps({k: v for k, v in report.items() if k != "report"}))
    assert report["verdict"]["reason"].split(":")[0] in page


def _render(browser: str, page: Path, work: Path) -> tuple[Path, set[str]]:
    """A screenshot of ``page`` in headless Chromium, and the URLs the page itself asked for (the browser's own
    update and account checks are told apart by their network isolation key, which is the page's origin)."""
    work.mkdir()
    shot, netlog = work / "shot.png", work / "net.json"
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            f"--user-data-dir={work / 'profile'}",
            f"--log-net-log={netlog}",
            "--net-log-capture-mode=Everything",
            f"--screenshot={shot}",
            "--window-size=1280,2000",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists() and netlog.exists(), done.stderr[-2000:]
    events = json.loads(netlog.read_text(encoding="utf-8"))["events"]
    asked = {
        e["params"]["url"]
        for e in events
        if isinstance(e.get("params"), dict) and "url" in e["params"] and str(e["params"].get("network_isolation_key", "")).startswith("file://")
    }
    return shot, {url for url in asked if not url.startswith(("file:", "data:"))}


def test_the_report_renders_in_chromium_without_a_network_request(reported, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    from PIL import Image

    folder, _, _ = reported
    shot, requests = _render(browser, folder / "report.html", tmp_path / "report")
    assert requests == set()
    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50  # text, tables and heatmaps, not a blank page
    # the check can fail: a page that loads a font and an image from the network is caught
    leaky = tmp_path / "leaky.html"
    leaky.write_text(
        '<html><head><link rel=stylesheet href="https://fonts.example.invalid/a.css"></head>'
        '<body><img src="http://example.invalid/x.png">hi</body></html>'
    )
    _, requests = _render(browser, leaky, tmp_path / "leaky")
    assert requests == {"https://fonts.example.invalid/a.css", "http://example.invalid/x.png"}


def test_the_report_opens_with_its_provenance(reported, tiny_x4, tmp_path):
    """Version, date, command, the checkpoint's hash, engine and device, seed and samples: at the top of the page and
    in the JSON. The hash follows the weights' bytes and ignores the card verify writes beside them."""
    import shutil as files

    from yarn_cli import __version__
    from yarn_cli.io.digest import checkpoint_digest

    folder, report, _ = reported
    given = report["provenance"]
    assert given["yarn_cli"] == __version__ and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", given["date"])
    assert given["command"] is None and given["seed"] == 0 and given["samples_per_cell"] == 2
    assert (given["engine"], given["device"]) == ("native", "cpu") and given["checkpoint"]["covers"] == "every byte"
    assert given["checkpoint"]["sha256"] == checkpoint_digest(tiny_x4)["sha256"]
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert page.index("sha256") < page.index("RoPE configuration") and given["checkpoint"]["sha256"] in page
    assert "(Python API)" in page and "seed, samples per cell" in page
    copy = tmp_path / "copy"
    files.copytree(tiny_x4, copy)
    (copy / "README.md").write_text("a card")
    assert checkpoint_digest(copy)["sha256"] == given["checkpoint"]["sha256"]
    weights = next(copy.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert checkpoint_digest(copy)["sha256"] != given["checkpoint"]["sha256"]


def test_the_command_line_keeps_no_credential():
    from yarn_cli.cli.output import command_line

    line = command_line(["/usr/bin/yarn-cli", "verify", "m.gguf", "--lm-eval-args", "api_key=sk-1,base_url=http://h", "--hf-token", "hf_x"])
    assert "sk-1" not in line and "hf_x" not in line and "api_key=***" in line and "base_url=http://h" in line
    assert line.startswith("yarn-cli verify m.gguf") and command_line(["yarn", "tune", "--passkeys", "4"]).endswith("--passkeys 4")


def test_yarn_report_puts_runs_side_by_side(reported, tmp_path, capsys):
    folder, report, _ = reported
    other = dict(report, verdict={"ok": True, "reason": "a second run"})
    second = tmp_path / "second.json"
    second.write_text(json.dumps(other))
    code, out, err = run(["report", str(folder), str(second), "-o", str(tmp_path / "both"), "--json"], capsys)
    assert code == 0, err
    written = json.loads(out)
    page = (tmp_path / "both" / "report.html").read_text(encoding="utf-8")
    assert page.count('<div class="run">') == 2 and "a second run" in page
    # runs are titled by the checkpoint and the judged variant, not by the folder or file they were read from
    label = report["variants"][0]["label"]
    assert f"<title>x4: {label} vs x4: {label}</title>" in page.replace("&#x27;", "'")
    assert (tmp_path / "both" / "run1" / "report.json").exists() and (tmp_path / "both" / "run2" / "heatmap-passkey-extended.png").exists()
    assert len(written["pictures"]) == 16


# Measures the laid-out page: each run's box, and whether anything inside a run shows beyond it (a descendant
# wider than its run, in a run that does not clip). The answer goes into the DOM, which --dump-dom prints.
_LAYOUT_PROBE = """<script>
addEventListener("load", () => {
  const runs = [...document.querySelectorAll(".run")].map(run => {
    const box = run.getBoundingClientRect();
    const clips = getComputedStyle(run).overflowX !== "visible";
    const spill = Math.max(0, ...[...run.querySelectorAll("*")].map(e => e.getBoundingClientRect().right - box.right));
    return {left: box.left, right: box.right, clips: clips, spill: spill};
  });
  const out = document.createElement("pre"); out.id = "layout"; out.textContent = JSON.stringify(runs);
  document.body.appendChild(out);
});
</script>"""


def _layout(browser: str, page: Path, work: Path, width: int) -> list[dict]:
    probe = work / f"probe-{width}.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _LAYOUT_PROBE + "</body>"), encoding="utf-8")
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={work / 'profile'}",
         f"--window-size={width},1000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    found = re.search(r'<pre id="layout">(.*?)</pre>', done.stdout, re.S)
    assert found, done.stderr[-2000:]
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.parametrize("width", [1280, 1920])
def test_runs_side_by_side_do_not_overlap(reported, tmp_path, capsys, width):
    """Two runs in `yarn report`, at a laptop's and a desktop's width: the columns do not intersect, and nothing in
    one shows over the other (a wide table scrolls inside its own column). The probe can fail: with clipping
    switched off, the runs' tables spill."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    folder, _, _ = reported
    both = tmp_path / "both"
    assert run(["report", str(folder), str(folder), "-o", str(both)], capsys)[0] == 0
    (tmp_path / "work").mkdir()
    first, second = _layout(browser, both / "report.html", tmp_path / "work", width)
    assert first["right"] <= second["left"] and second["right"] <= width
    assert all(r["clips"] or r["spill"] <= 0.5 for r in (first, second)), (first, second)
    unclipped = both / "unclipped.html"
    unclipped.write_text((both / "report.html").read_text(encoding="utf-8").replace("overflow-x:auto", "overflow-x:visible"))
    narrow = _layout(browser, unclipped, tmp_path / "work", 900)
    assert any(not r["clips"] and r["spill"] > 0.5 for r in narrow), narrow


def test_report_refuses_bad_input_in_one_line_and_writes_nothing(tiny_x4, tmp_path, capsys):
    code, _, err = run(["report", str(tmp_path / "missing.json"), "-o", str(tmp_path / "r")], capsys)
    assert code != 0 and "cannot read" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
    (tmp_path / "x.json").write_text('{"a": 1}')
    code, _, err = run(["report", str(tmp_path / "x.json"), "-o", str(tmp_path / "r")], capsys)
    assert code != 0 and "not a verify report" in err and not (tmp_path / "r").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    code, _, err = run(["verify", str(tiny_x4), "--report", str(busy), "--lengths", "300"], capsys)
    assert code != 0 and "not an earlier report" in err and sorted(p.name for p in busy.iterdir()) == ["keep.txt"]


def test_card_is_written_then_updated_in_place(tiny_x4, tmp_path):
    from huggingface_hub import ModelCard

    from yarn_cli.api import verify

    model = tmp_path / "model"
    shutil.copytree(tiny_x4, model)
    (model / "README.md").write_text("---\nlicense: apache-2.0\ntags:\n- mine\n---\n\n# My model\n\nMy own words.\n")
    report = verify(model, tasks="passkey", lengths=[512], depths="0.5", parity=False, card=True).to_json()
    assert "Base model: not recorded" in (model / "README.md").read_text()
    report = verify(model, tasks="passkey", lengths=[512], depths="0.5", parity=False, card=True, base_model="HuggingFaceTB/SmolLM2-135M").to_json()
    card = ModelCard.load(model / "README.md")
    assert card.data.license == "apache-2.0" and card.data.tags[:1] == ["mine"] and "yarn" in card.data.tags
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M" and "Base model: HuggingFaceTB/SmolLM2-135M." in card.content
    assert card.content.count("yarn_cli verify: start") == 1 and "My own words." in card.content
    assert "![needle-in-a-haystack heatmap](yarn_verify_heatmap.png)" in card.content and (model / "yarn_verify_heatmap.png").exists()
    assert report["card"] == str(model / "README.md") and "| 512 |" in card.content


def test_compare_adds_the_papers_alternatives_on_the_same_weights(tiny_x4):
    import transformers  # noqa: F401
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from yarn_cli.usecases.verify import prepare_verify

    run_ = prepare_verify(tiny_x4, tasks="perplexity", lengths=[512], compare="linear,ntk,none", parity=False)
    try:
        chosen = {v.name: v for v in run_.prepared.variants}
        assert list(chosen) == ["extended", "baseline", "linear", "ntk"]
        assert any("--compare none: the same RoPE as the baseline" in n for n in run_.prepared.notes)
        config = AutoConfig.from_pretrained(tiny_x4)
        config.rope_parameters = {"rope_type": "linear", "factor": 4.0, "rope_theta": config.rope_parameters["rope_theta"]}
        theirs, _ = ROPE_INIT_FUNCTIONS["linear"](config, "cpu")
        assert chosen["linear"].inv_freq == pytest.approx(theirs.tolist(), rel=1e-6)
        dim = len(chosen["ntk"].inv_freq) * 2
        assert chosen["ntk"].base == pytest.approx(config.rope_parameters["rope_theta"] * 4 ** (dim / (dim - 2)))
    finally:
        run_.engine.close()


def test_one_pass_curve_equals_separate_passes(tiny_x4):
    """The curve from one pass per document equals each length's own window pass (the loss at p ignores what follows)."""
    from yarn_cli.core.verify import plan as verify_plan
    from yarn_cli.usecases.verify import prepare_verify

    run_ = prepare_verify(tiny_x4, tasks="perplexity", lengths=[1024], ppl_windows=1, parity=False)
    engine, prepared = run_.engine, run_.prepared
    report = run_.run().to_json()
    curve = report["perplexity_curve"]
    assert curve["pass_tokens"] == 1024 and curve["lengths"][0] > 256 and curve["lengths"][-1] == 1024
    text = prepared.context.text_ids
    engine = type(engine)(tiny_x4, "cpu", None, max_length=1100)
    try:
        variant = prepared.variants[0]
        for n in curve["lengths"][::3] + [1024]:
            separate = engine.score(variant, text[:n], n - 1 - verify_plan.PPL_STRIDE).losses
            assert curve["last_tokens"]["extended"][str(n)] == pytest.approx(math.exp(sum(separate) / len(separate)), rel=1e-5)
            whole = engine.score(variant, text[:n], 0).losses
            assert curve["all_tokens"]["extended"][str(n)] == pytest.approx(math.exp(sum(whole) / len(whole)), rel=1e-5)
    finally:
        engine.close()


def test_the_curves_average_several_windows_and_show_their_spread(reported, tiny_x4):
    """By default perplexity pools three windows of the text; each length's band runs from the lowest to the highest
    single window, and each window's figure equals that window scored on its own by a fresh engine."""
    from yarn_cli.core.verify import plan as verify_plan
    from yarn_cli.runtimes.base import load_engine
    from yarn_cli.usecases.verify.protocol import default_variants, load_text

    folder, report, drawn = reported
    curve = report["perplexity_curve"]
    assert curve["documents"] == 3 and curve["overlapping"] is False
    engine = load_engine("native", tiny_x4, "cpu", None, 1100)
    try:
        text = engine.tokenizer.encode(load_text(None))
        taken = 1024 - len(engine.tokenizer.bos)
        starts = verify_plan.ppl_windows(len(text), taken, 3)
        extended = default_variants(engine)[0]
        for n in (curve["lengths"][0], 1024):
            each = []
            for start in starts:
                ids = engine.tokenizer.bos + text[start : start + taken]
                losses = engine.score(extended, ids[:n], n - 1 - verify_plan.PPL_STRIDE).losses
                each.append(math.exp(sum(losses) / len(losses)))
            low, high = curve["spread"]["last_tokens"]["extended"][str(n)]
            assert (low, high) == (pytest.approx(min(each), rel=1e-5), pytest.approx(max(each), rel=1e-5))
            assert low <= curve["last_tokens"]["extended"][str(n)] <= high and low < high
    finally:
        engine.close()
    bands = [d for t, d in drawn if isinstance(d, tuple)]
    assert len(bands) == 4  # both variants on both readings
    assert any(x[-1] == 1024 and high[-1] == curve["spread"]["last_tokens"]["extended"]["1024"][1] for x, _, high in bands)
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert all(html.escape(line, quote=True) in page for line in curve["readings"])


def test_a_single_window_says_it_has_no_spread_and_readings_that_disagree_are_explained():
    from yarn_cli.report.images import curve_caption
    from yarn_cli.usecases.verify.tasks.perplexity import readings_differ

    assert "no spread" in curve_caption(1, False) and "--ppl-windows 3" in curve_caption(1, False)
    assert "understates" in curve_caption(3, True) and "lowest to the highest" in curve_caption(3, False)
    # the demo's case: past L the last-256 reading favours the extension, the all-tokens reading the baseline
    curves = {
        "last_tokens": {"extended": {8192: 8.0, 10240: 7.98}, "baseline": {8192: 7.9, 10240: 8.69}},
        "all_tokens": {"extended": {8192: 7.5, 10240: 7.4}, "baseline": {8192: 7.3, 10240: 7.35}},
    }
    (line,) = readings_differ(curves, 8192, "extended", "baseline")
    assert line.startswith("at 10,240 tokens the all-tokens reading puts the baseline model ahead (7.40 vs 7.35)")
    assert "last-256-tokens reading puts the extended model ahead (7.98 vs 8.69)" in line and "80% of each 10,240-token window" in line
    curves["all_tokens"]["baseline"][10240] = 7.6  # both readings agree: nothing to explain
    assert readings_differ(curves, 8192, "extended", "baseline") == [] and readings_differ(curves, 8192, "extended", None) == []
