"""Live views in headless Chromium: on the planted two-layer induction circuit, hovering a token shows the planted
previous-token head attending to the token before it (a screenshot holds the full-attention colour) and a random
head does not; the patching view colours the prompt by the planted site's effect; nothing needs the network."""

import re

import numpy as np
import torch

from iclab.analysis.lens import prompt_attention
from iclab.analysis.patching import patch
from iclab.plots.views import attention_view, page, patching_view
from test_patching import IND_PAIR, induction_pair_model
from test_report import chromium

FULL_ATTENTION = (255, 127, 14)  # the colour of attention 1.0


def _attention_page(tmp_path):
    model = induction_pair_model()
    seen = prompt_attention(model, torch.tensor(IND_PAIR.clean))
    view = attention_view(seen.tokens, seen.patterns, "planted circuit",
                          {"previous token": seen.previous_token, "prefix matching": seen.prefix_matching}, {"loss": seen.loss})
    path = tmp_path / "attention.html"
    path.write_text(page("attention", [view]))
    return path, seen


def _pixels_of(png, colour, tol=3) -> int:
    import matplotlib.image as mpimg

    rgb = (mpimg.imread(png)[..., :3] * 255).round()
    return int((np.abs(rgb - np.array(colour)).max(-1) <= tol).sum())


def test_the_planted_previous_token_head_attends_to_the_token_before_the_hovered_one(tmp_path):
    path, seen = _attention_page(tmp_path)
    assert seen.previous_token[0, 0] > 0.95 and seen.prefix_matching[1, 0] > 0.95  # the planted heads, measured
    page_text = path.read_text()
    assert "http://" not in page_text and "https://" not in page_text and " src=" not in page_text
    dom = chromium("--dump-dom", path.as_uri() + "#L0H0t5", tmp=tmp_path / "profile").stdout
    assert 'data-state="L0H0t5"' in dom  # the address set the head, a real mouseover event the token
    assert re.search(r'data-i="4" title="4: attention 1\.00\d"', dom)
    assert re.search(r'data-i="3" title="3: attention 0\.00\d"', dom)
    shot = tmp_path / "hover.png"
    chromium(f"--screenshot={shot}", "--window-size=900,400", path.as_uri() + "#L0H0t5", tmp=tmp_path / "profile")
    assert _pixels_of(shot, FULL_ATTENTION) > 100  # one token's box in full-attention colour
    control = tmp_path / "control.png"  # a random, small head spreads its attention: no token in full colour
    chromium(f"--screenshot={control}", "--window-size=900,400", path.as_uri() + "#L0H1t5", tmp=tmp_path / "profile")
    assert _pixels_of(control, FULL_ATTENTION) == 0


def test_the_view_opens_on_the_head_its_first_grid_ranks_first_and_colours_by_loss_when_asked(tmp_path):
    path, _ = _attention_page(tmp_path)
    dom = chromium("--dump-dom", path.as_uri(), tmp=tmp_path / "profile").stdout
    assert 'data-state="L0H0t6"' in dom  # the best previous-token head, from the last token: what a printout shows
    assert "loss" in dom and "L0H0: previous token 1.000, prefix matching" in dom  # each head's numbers on hover


def test_the_patching_view_colours_the_prompt_by_the_planted_key(tmp_path):
    p = patch(induction_pair_model(), [IND_PAIR], "k", "logprob")
    path = tmp_path / "patching.html"
    path.write_text(page("patching", [patching_view(p)]))
    dom = chromium("--dump-dom", path.as_uri(), tmp=tmp_path / "profile").stdout
    assert 'data-state="L1H0"' in dom  # the row with the largest effect is selected first
    assert re.search(r'data-i="3" title="3: normalised effect \+1\.0', dom)
    assert re.search(r'title="L1H0 at 3 &quot;[^&]*&quot;: normalised effect \+1\.0\d+ \(change \+[\d.]+ ± 0\.000\)"', dom)


def test_iclab_view_writes_a_page_for_a_patching_folder_and_for_a_model(tmp_path):
    from test_robustness import iclab, one_line_error

    run = tmp_path / "ind"
    assert iclab("train", "--task", "induction", "--out", str(run), "--set", "model.n_layers=2", "--set", "model.d_model=16",
                 "--set", "train.steps=3").returncode == 0
    done = iclab("view", str(run), "--prompt", "abcabc", "--out", str(tmp_path / "v.html"))
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "v.html").read_text()
    assert "iclabViews.attention" in text and '"tokens":["' in text
    p = tmp_path / "p"
    assert iclab("patch", str(run), "--clean", "xyzabcxyzab", "--corrupt", "xyzabdxyzab", "--answer", "c", "--wrong", "d",
                 "--out", str(p)).returncode == 0
    assert iclab("view", str(p)).returncode == 0 and (p / "view.html").read_text().count("iclabViews.patching(") == 2
    one_line_error(iclab("view", str(p), "--out", str(tmp_path / "v.png")), "must name an .html file")
    one_line_error(iclab("view", str(run), "--prompt", "ab" * 200), "--prompt is 400 tokens; a view holds at most 256")
