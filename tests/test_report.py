"""report.html as a user sees it: rendered in headless Chromium, every image loads, every study has a section."""

import json
import os
import re
import shutil
import subprocess

import pytest
import torch

from conftest import TINY_SPINGLASS
from iclab.report import build_report
from iclab.studies import spinglass

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--virtual-time-budget=5000"]


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    spinglass.run("quick", out / "spinglass", TINY_SPINGLASS, torch.device("cpu"), log=lambda s: None)
    record = {
        "preset": "quick",
        "device": "cpu",
        "versions": {"iclab": "test", "torch": torch.__version__},
        "studies": {
            "spinglass": {"title": "spin glass", "paper": "Li et al.", "status": "complete", "wall_time_s": 1.0},
            "linreg": {"title": "regression", "paper": "Akyürek et al.", "status": "failed", "error": "RuntimeError: boom", "traceback": "Traceback ..."},
            "induction": {"title": "induction heads", "paper": "Olsson et al.", "status": "complete"},
        },
    }
    (out / "induction").mkdir()  # a summary of an older iclab: shown with a re-run line, never adapted
    (out / "induction" / "summary.json").write_text(json.dumps({"study": "induction", "iclab_version": "0.3.0",
                                                                "findings": ["REPRODUCED: old line"]}))
    (out / "reproduce.json").write_text(json.dumps(record))
    build_report(out)
    return out


def test_the_page_is_self_contained_and_has_every_section(report_dir):
    page = (report_dir / "report.html").read_text()
    for study in ("spinglass", "linreg", "induction"):
        assert f'id="{study}"' in page
    assert "RuntimeError: boom" in page and "written by iclab 0.3.0 in an older format; re-run" in page
    assert "old line" not in page
    assert 'class="badge good">reproduced' in page
    assert not re.search(r'src="(?!data:)', page), "every image must be embedded"
    assert "http://" not in page and "https://" not in page


def chromium(*args, tmp):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed here")
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp}", *args], capture_output=True, text=True, timeout=120)


def test_every_image_loads_in_headless_chromium(report_dir, tmp_path):
    result = chromium("--dump-dom", (report_dir / "report.html").as_uri(), tmp=tmp_path / "profile")
    dom = result.stdout
    total = int(re.search(r'data-images-total="(\d+)"', dom).group(1))
    loaded = int(re.search(r'data-images-loaded="(\d+)"', dom).group(1))
    figures = len(json.loads((report_dir / "spinglass" / "summary.json").read_text())["figures"])
    assert total == figures and loaded == total


def test_a_screenshot_can_be_taken(report_dir, tmp_path):
    shot = report_dir / "report.png"
    chromium(f"--screenshot={shot}", "--window-size=1200,2400", (report_dir / "report.html").as_uri(), tmp=tmp_path / "profile")
    assert shot.stat().st_size > 20_000


def test_the_page_opens_with_each_studys_verdict_counts(report_dir):
    from iclab.claims import Verdict
    from iclab.studies.common import Summary

    page = (report_dir / "report.html").read_text()
    claims = Summary.load(report_dir / "spinglass" / "summary.json").claims
    counts = "".join(f"<td>{sum(c.verdict is v for c in claims)}</td>" for v in Verdict)
    table = page[page.index('<table class="counts">'):]
    assert f'<a href="#spinglass">spinglass</a></td>{counts}</tr>' in table
    assert page.index('<table class="counts">') < page.index('id="spinglass"')  # at the top, before the sections
    assert re.search(rf'#linreg">linreg</a></td><td colspan="{len(Verdict)}"><span class="badge bad">failed', table)
    assert "click: full size" in page and "classList.toggle('full')" in page  # wide figures open full size on click


def test_a_single_study_folder_gets_its_own_report_from_run_and_from_report(tmp_path):
    from test_robustness import iclab, one_line_error

    out = tmp_path / "sg"
    result = iclab("run", "spinglass", "--out", str(out), *sum((["--set", s] for s in TINY_SPINGLASS), []))
    assert result.returncode == 0, result.stderr
    page = (out / "report.html").read_text()
    assert "iclab: study report" in page and 'id="spinglass"' in page and 'class="badge good">reproduced' in page
    (out / "report.html").unlink()
    assert iclab("report", str(out)).returncode == 0 and (out / "report.html").is_file()
    (tmp_path / "empty").mkdir()
    one_line_error(iclab("report", str(tmp_path / "empty")), "neither a reproduction (reproduce.json) nor a study folder")
