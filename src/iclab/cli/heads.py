"""Head analyses on any model: ``iclab heads``, ``patch``, ``lens``, ``llc``, ``view``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from iclab.analysis.ranking import largest_entries
from iclab.cli.common import DEVICE_HELP, MAX_MEMORY_HELP, app, console, err_say, print_table, say
from iclab.errors import IclabError


@app.command()
def heads(
    model: str = typer.Argument(..., help="An iclab run directory, a name from `iclab models`, a local Hugging Face folder or a .gguf file."),
    top: int = typer.Option(10, "--top", min=1, help="How many heads to list, by prefix-matching score."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write every head's scores to this JSON file."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random probe tokens (the same seed gives the same scores)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help=MAX_MEMORY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the top heads' scores as JSON on stdout instead of a table."),
) -> None:
    """Score every head for induction: prefix-matching, copying, previous-token and detection scores."""
    import torch

    from iclab.analysis.induction.scores import score_heads
    from iclab.device import resolve_device
    from iclab.heads import load_model
    from iclab.results import Head

    if out is not None:
        from iclab.io import check_output_file

        check_output_file(out)
    log = err_say if as_json else say  # with --json, stdout holds the JSON alone
    m = load_model(model, resolve_device(device), log=log, max_memory=max_memory)
    from iclab.progress import reporting

    with reporting(log, "head scores", every_s=5):
        scores = score_heads(m, torch.Generator().manual_seed(seed))
    pm = scores["prefix_matching"]
    order = torch.argsort(pm.flatten(), descending=True)[:top]
    if as_json:
        rows = [{"head": str(Head(*divmod(i, pm.shape[1]))), **{k: float(v.flatten()[i]) for k, v in scores.items()}}
                for i in order.tolist()]
        print(json.dumps(rows, indent=1, ensure_ascii=False))
    table = Table("head", "prefix-matching", "copying (eigenvalues)", "copying (rank)", "previous-token", "induction (TL mul)")
    for i in order.tolist():
        head = Head(*divmod(i, pm.shape[1]))
        table.add_row(str(head), *(f"{float(scores[k][head]):.3f}" for k in
                                          ("prefix_matching", "copying_eigenvalues", "copying_rank", "previous_token",
                                           "induction_detection")))
    if not as_json:
        print_table(table)
    if out is not None:
        from iclab.io import atomic_write_json

        atomic_write_json(out, {k: v.tolist() for k, v in scores.items()})
        log(f"scores: {out}")


@app.command("patch")
def patch_command(
    model: str = typer.Argument(..., help="An iclab run directory of a token task, a name from `iclab models`, a local Hugging "
                                "Face folder or a .gguf file."),
    clean: Optional[str] = typer.Option(None, "--clean", help="The clean prompt (the model predicts --answer after it)."),
    corrupt: Optional[str] = typer.Option(None, "--corrupt", help="The corrupted prompt: the same number of tokens, changed "
                                          "where the answer comes from."),
    answer: Optional[str] = typer.Option(None, "--answer", help="The right next token after the clean prompt (one token; mind "
                                         "a leading space, e.g. ' Paris')."),
    wrong: Optional[str] = typer.Option(None, "--wrong", help="The token the corruption points to (one token); needed by "
                                        "--metric logit_diff."),
    pairs_file: Optional[Path] = typer.Option(None, "--pairs", help="Instead of one pair: a JSON-lines file, one pair a line "
                                              '({"clean": ..., "corrupt": ..., "answer": ..., "wrong": ...}), all of the '
                                              "same token length; effects are averaged with a standard error per site."),
    site: str = typer.Option("heads", "--site", help="What to patch: heads (each head's z at each position), resid (the "
                             "residual stream entering each layer, and the final one), attn_out or mlp_out (what each layer's "
                             "attention or MLP adds), q, k or v (each head's query, key or value)."),
    receiver: Optional[str] = typer.Option(None, "--receiver", help="Also path-patch every earlier head into this head "
                                           "(e.g. L1H0): which senders its --into input reads the answer from."),
    into: str = typer.Option("k", "--into", help="With --receiver: the receiver's input the paths end at: q, k or v."),
    metric: str = typer.Option("logit_diff", "--metric", help="logit_diff (answer minus wrong), logprob (of the answer) or "
                               "rank (tokens above the answer)."),
    direction: str = typer.Option("denoising", "--direction", help="denoising (corrupted run, one site restored from the "
                                  "clean run) or noising (clean run, one site from the corrupted run)."),
    method: str = typer.Option("both", "--method", help="exact (one run per site), attribution (one forward and one backward "
                               "pass) or both, with their agreement."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for patching.json and the heatmaps (default "
                                       "runs/patch-<model>-<site>)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help=MAX_MEMORY_HELP),
) -> None:
    """Activation patching between a clean and a corrupted prompt: which heads / layers and positions carry the answer."""
    import numpy as np

    from iclab.analysis.patching import DIRECTIONS, HEAD_SITES, METRICS, SITES, agreement, patch, path_patch
    from iclab.analysis.prompt_pairs import encode_pairs, pair_texts
    from iclab.device import resolve_device
    from iclab.heads import load_model
    from iclab.io import atomic_write_json, output_dir
    from iclab.plots.patching import patching_heatmap, path_patching_heatmap
    from iclab.results import Head, encode
    from iclab.studies.common import default_folder

    for option, value, allowed in (("--site", site, SITES), ("--metric", metric, METRICS), ("--direction", direction, DIRECTIONS),
                                   ("--method", method, ("exact", "attribution", "both")), ("--into", into, ("q", "k", "v"))):
        if value not in allowed:
            raise IclabError(f"{option} {value!r} is not one of {', '.join(allowed)}")
    path_to = Head.parse(receiver) if receiver is not None else None
    texts = pair_texts(pairs_file, clean, corrupt, answer, wrong)
    if metric == "logit_diff" and any(t.wrong is None for t in texts):
        raise IclabError("--metric logit_diff needs a wrong answer for every pair (--wrong, or \"wrong\" on each --pairs line: "
                         "the token the corruption points to); or use --metric logprob")
    m = load_model(model, resolve_device(device), log=say, max_memory=max_memory)
    pairs = encode_pairs(m, texts)
    folder = output_dir(out or default_folder("patch", site, model))
    results = {}
    from iclab.progress import reporting

    for how in (("exact", "attribution") if method == "both" else (method,)):
        if how == "attribution" and metric == "rank":
            continue
        with reporting(say, f"{how} patching", every_s=5):
            results[how] = patch(m, pairs, site, metric, direction, how)
    record = {how: encode(r) for how, r in results.items()}
    if len(results) == 2:
        record["agreement"] = encode(agreement(results["exact"], results["attribution"]))
    paths = None
    if path_to is not None:
        with reporting(say, "path patching", every_s=5):
            paths = path_patch(m, pairs, path_to, into, metric, direction)
        record["path"] = encode(paths)
    atomic_write_json(folder / "patching.json", record)
    for how, r in results.items():
        say(f"{how}: figure {patching_heatmap(r, folder / 'figures')}")
    if paths is not None:
        say(f"path patching: figure {path_patching_heatmap(paths, folder / 'figures')}")
    first = next(iter(results.values()))
    say(f"clean {metric} {first.clean_metric:.3f}, corrupted {first.corrupted_metric:.3f}"
         + (f" (mean of {len(pairs)} pairs)" if len(pairs) > 1 else ""))
    best = results.get("exact", first)
    flat = best.normalised.reshape(-1)
    order = [i for i in (-abs(flat)).argsort()[:8]]
    shape = best.normalised.shape
    table = Table("site", "position", "token", "normalised effect")
    for i in order:
        idx = np.unravel_index(i, shape)
        name = f"L{idx[0]}H{idx[1]}" if site in HEAD_SITES else f"layer {idx[0]}"
        table.add_row(name, str(idx[-1]), repr(best.tokens[idx[-1]]), f"{flat[i]:+.3f}")
    print_table(table)
    if "agreement" in record:
        a = record["agreement"]
        say(f"attribution vs exact: correlation {a['correlation']:.3f}, {a['top_k_shared']} of the top {a['k']} sites shared")
    if paths is not None:
        flat = np.nan_to_num(paths.normalised[: path_to[0]], nan=0.0)
        top = largest_entries(flat, 5)
        say(f"paths into L{path_to[0]}H{path_to[1]}'s {into}, strongest senders: "
             + ", ".join(f"L{layer}H{h} {flat[layer, h]:+.3f}" for layer, h in top))
    console.print(f"results: {folder}/patching.json")


@app.command("lens")
def lens_command(
    model: str = typer.Argument(..., help="An iclab run directory of a token task, a name from `iclab models`, a local Hugging "
                                "Face folder or a .gguf file."),
    prompt: str = typer.Option(..., "--prompt", help="The prompt to read layer by layer."),
    answer: str = typer.Option(..., "--answer", help="The token whose log-probability each layer is read for (one token)."),
    wrong: Optional[str] = typer.Option(None, "--wrong", help="Attribute the logit difference answer minus this token "
                                        "(one token) instead of the answer's logit alone."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for lens.json, attribution.json and their figures "
                                       "(default runs/lens-<model>)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help=MAX_MEMORY_HELP),
) -> None:
    """The logit lens (every layer's residual stream read through the model's own final norm and unembedding) and direct
    logit attribution (each head's and MLP's share of the answer's logit at the last position)."""
    import torch

    from iclab.analysis.lens import direct_logit_attribution, logit_lens
    from iclab.device import resolve_device
    from iclab.heads import load_model
    from iclab.io import atomic_write_json, output_dir
    from iclab.plots.lens import attribution_figure, lens_heatmap
    from iclab.results import encode

    m = load_model(model, resolve_device(device), log=say, max_memory=max_memory)
    ids = torch.tensor(m.encode(prompt))
    target = m.token_id(answer, "--answer")
    other = m.token_id(wrong, "--wrong") if wrong is not None else None
    lens = logit_lens(m, ids, target)
    dla = direct_logit_attribution(m, ids, target, other)
    folder = output_dir(out or Path("runs") / f"lens-{Path(str(model).rstrip('/')).name}")
    atomic_write_json(folder / "lens.json", encode(lens))
    atomic_write_json(folder / "attribution.json", encode(dla))
    table = Table("layer input", f"log p({answer!r}) at the last position", "rank", "top token")
    for layer in range(lens.logprob.shape[0]):
        top = m.token_strings([lens.top[layer][-1]])[0]
        table.add_row("final" if layer == m.n_layers else f"L{layer}", f"{lens.logprob[layer, -1]:.2f}",
                      str(int(lens.rank[layer, -1])), repr(top))
    print_table(table)
    top = largest_entries(dla.heads, 5)
    say("direct logit attribution at the last position, largest heads: "
         + ", ".join(f"L{layer}H{h} {dla.heads[layer, h]:+.2f}" for layer, h in top)
         + f"; all parts sum to {dla.total:+.2f}")
    console.print(f"results: {folder}/lens.json, {lens_heatmap(lens, answer, folder / 'figures')}, "
                  f"{attribution_figure(dla, answer, wrong, folder / 'figures')}")


@app.command("llc")
def llc_command(
    run: Path = typer.Argument(..., help="An iclab training run with snapshots (train.snapshots > 0)."),
    snapshots: Optional[int] = typer.Option(None, "--snapshots", help="Estimate at this many snapshots, evenly spread over "
                                            "the saved ones (default: all)."),
    heads: bool = typer.Option(False, "--heads", help="Also each attention head's refined LLC (its weights alone)."),
    chains: int = typer.Option(4, "--chains", help="SGLD chains per estimate."),
    draws: int = typer.Option(200, "--draws", help="Draws kept per chain (one per step)."),
    burnin: int = typer.Option(100, "--burnin", help="Steps dropped at the start of each chain."),
    step_size: float = typer.Option(1e-4, "--step-size", help="SGLD step size epsilon."),
    localization: float = typer.Option(100.0, "--localization", help="Localisation strength gamma."),
    nbeta: Optional[float] = typer.Option(None, "--nbeta", help="Inverse temperature n beta (default: batch / log batch)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Minibatch size of each SGLD step."),
    samples: int = typer.Option(1024, "--samples", help="Fixed samples of the run's task the loss is taken over."),
    seed: int = typer.Option(0, "--seed", help="Seed of the chains."),
    workers: int = typer.Option(1, "--workers", help="Processes running chains at once (one thread each when more than "
                                "one; small models run faster so on several cores)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for llc.json, llc.csv and figures/llc.png (default "
                                       "RUN/llc)."),
) -> None:
    """The local learning coefficient at every snapshot of a run (SGLD, Lau et al. 2023), beside its loss and ICL score."""
    from iclab.analysis.llc import SGLDSettings
    from iclab.analysis.llc_runs import llc_trajectory
    from iclab.io import atomic_write_json, atomic_write_text, output_dir
    from iclab.plots.llc import llc_figure
    from iclab.progress import reporting
    from iclab.results import encode

    settings = SGLDSettings(step_size, localization, nbeta, chains, burnin, draws, batch_size, seed, workers)
    if not (run / "config.yaml").is_file():
        raise IclabError(f"{str(run)!r} is not an iclab training run (no config.yaml)")
    with reporting(say, "LLC", every_s=10):
        t = llc_trajectory(run, settings, samples, snapshots, heads)
    folder = output_dir(out or run / "llc")
    atomic_write_json(folder / "llc.json", encode(t))
    rows = ["step,tokens,llc,stderr,eval_loss,icl_score,best_prefix_matching,warnings"] + [
        f"{s},{tok},{e.llc:.6g},{e.stderr:.6g},{loss:.6g},{icl:.6g},{pm:.6g},{len(e.warnings)}"
        for s, tok, e, loss, icl, pm in zip(t.step, t.tokens, t.estimates, t.eval_loss, t.icl_score, t.induction_score)]
    atomic_write_text(folder / "llc.csv", "\n".join(rows) + "\n")
    table = Table("step", "tokens", "LLC", "+-", "eval loss", "ICL score", "prefix matching", "warnings")
    for s, tok, e, loss, icl, pm in zip(t.step, t.tokens, t.estimates, t.eval_loss, t.icl_score, t.induction_score):
        table.add_row(str(s), f"{tok:,}", f"{e.llc:.2f}", f"{e.stderr:.2f}", f"{loss:.3f}", f"{icl:+.3f}", f"{pm:.2f}",
                      str(len(e.warnings)))
    print_table(table)
    for s, e in zip(t.step, t.estimates):
        for w in e.warnings:
            say(f"step {s}: {w}")
    if t.window is not None:
        say(f"phase-change window (from the run's ICL score): {t.window[0]:,.0f} to {t.window[1]:,.0f} tokens")
    console.print(f"results: {folder}/llc.json, {folder}/llc.csv, {llc_figure(t, folder / 'figures')}")


VIEW_MAX_TOKENS = 256
DEFAULT_VIEW_PROMPT = "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog."


@app.command("view")
def view_command(
    target: str = typer.Argument(..., help="A folder `iclab patch` wrote (patching.json: its sites x positions), or a model "
                                 "(an iclab run of a token task, a name from `iclab models`, a local Hugging Face folder, a "
                                 ".gguf file): every head's attention on --prompt."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="With a model: the prompt to show (default: a sentence said "
                                         "twice, where induction heads show)."),
    out: Optional[Path] = typer.Option(None, "--out", help="The page to write (default: TARGET/view.html for a patching "
                                       "folder, runs/view-<model>.html for a model)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help=MAX_MEMORY_HELP),
) -> None:
    """A stand-alone interactive page (no network needed): hover tokens to see where a head attends, click heads, read
    each cell's numbers; or a patching result's grid with the prompt coloured by each site's effect."""
    from iclab.io import atomic_write_text
    from iclab.plots.views import attention_view, page, patching_view

    folder = Path(target)
    if (folder / "patching.json").is_file():
        from iclab.analysis.patching import Patching
        from iclab.results import decode

        record = json.loads((folder / "patching.json").read_text())
        fragments = [patching_view(decode(Patching, record[how])) for how in ("exact", "attribution") if how in record]
        title, dest = f"patching: {folder.name}", out or folder / "view.html"
    else:
        import torch

        from iclab.analysis.lens import prompt_attention
        from iclab.device import resolve_device
        from iclab.heads import load_model

        m = load_model(target, resolve_device(device), log=say, max_memory=max_memory)
        ids = torch.tensor(m.encode(prompt or DEFAULT_VIEW_PROMPT))
        if len(ids) > VIEW_MAX_TOKENS:  # the page holds every head's [T, T] pattern: L * H * T^2 bytes
            raise IclabError(f"--prompt is {len(ids)} tokens; a view holds at most {VIEW_MAX_TOKENS} (every head's pattern "
                             "is inlined in the page)")
        seen = prompt_attention(m, ids)
        name = Path(str(target).rstrip("/")).name
        fragments = [attention_view(seen.tokens, seen.patterns, f"{name}: attention of every head ({len(ids)} tokens)",
                                    {"prefix matching": seen.prefix_matching, "previous token": seen.previous_token},
                                    {"loss (nats)": seen.loss})]
        title, dest = f"attention: {name}", out or Path("runs") / f"view-{name}.html"
    if dest.suffix != ".html":
        raise IclabError(f"--out {str(dest)!r} must name an .html file")
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(dest, page(title, fragments))
    console.print(f"view: {dest}")
