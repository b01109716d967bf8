"""``iclab sweep``: a grid of study runs, locally or on a Ray cluster.

Each grid point (x seed) is one study run with ``--set`` overrides, in its own
directory ``DIR/runs/<study>-<hash>``, the hash taken over the run's complete,
validated settings. Every point's settings are checked before any run starts
(an unknown key or a bad value is refused). A finished run (its summary.json
carries today's run identity) is skipped on re-run; a failing run writes ``error.txt`` and the
others go on; the command exits non-zero if any failed. At the end
every run's results become one table, ``DIR/results.parquet`` and
``DIR/results.csv``: the grid values, every claim's measured values by name
(``result.claim.<name>``), each claim's verdict (``result.verdict.<name>``), the count of each verdict and the
summary's scalar numbers. With ``--seeds N`` (N > 1), ``DIR/verdicts.csv`` holds each claim's verdict over the
seeds of each grid point by :func:`iclab.claims.over_seeds` (the same verdict at every seed, else INCONCLUSIVE).
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal

import pandas as pd
import yaml

from iclab.claims import Verdict, over_seeds
from iclab.config import config_hash
from iclab.errors import IclabError
from iclab.io import holding_locks, lock_folder, output_dir
from iclab.studies.common import Summary, finished

Executor = Literal["local", "ray"]


@dataclass(frozen=True)
class SweepPoint:
    overrides: tuple[str, ...]
    values: dict[str, Any]  # grid key -> value (and "seed")


def _split_values(text: str) -> list[str]:
    """Split "1,2,[3,4]" on the commas outside brackets."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def parse_grid(grids: list[str]) -> dict[str, list[Any]]:
    """["depths=[1],[2]", "recipe.lr=1e-3,3e-4"] -> {key: [values]} (values parsed as YAML).

    A key given twice, an empty key or a value that is not YAML is refused.
    """
    out: dict[str, list[Any]] = {}
    for text in grids:
        if "=" not in text:
            raise IclabError(f"--grid {text!r}: expected key=v1,v2,... (e.g. --grid recipe.lr=1e-3,3e-4)")
        key, raw = (part.strip() for part in text.split("=", 1))
        if not key:
            raise IclabError(f"--grid {text!r}: no key before '='; expected key=v1,v2,...")
        if key in out:
            raise IclabError(f"--grid {key}: given twice; put all its values in one --grid {key}=v1,v2,...")
        try:
            values = [yaml.safe_load(v) for v in _split_values(raw)]
        except yaml.YAMLError as err:
            problem = str(getattr(err, "problem", None) or err).splitlines()[0]
            raise IclabError(f"--grid {text!r}: a value is not valid YAML ({problem})") from None
        if not values:
            raise IclabError(f"--grid {text!r}: no values given")
        out[key] = values
    return out


def expand(grids: list[str], seeds: int, base: list[str] = ()) -> list[SweepPoint]:
    """Every combination of the grid values, times seeds 0..seeds-1 (if seeds > 0)."""
    grid = parse_grid(grids)
    if seeds > 0:
        grid["seed"] = list(range(seeds))
    keys = list(grid)
    points = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        values = dict(zip(keys, combo))
        overrides = tuple(base) + tuple(f"{k}={json.dumps(v)}" for k, v in values.items())
        points.append(SweepPoint(overrides, values))
    return points


def run_directory(study: str, preset: str, overrides: tuple[str, ...], root: Path) -> Path:
    """Where a run lives: named by the hash of its complete, validated settings."""
    from iclab.studies import study as study_named

    settings = study_named(study).settings(preset, overrides)
    return root / "runs" / f"{study}-{config_hash(settings)}"


def _judges_seeds(study: str, preset: str) -> bool:
    """Whether the study's settings have a ``seeds`` setting (it trains and judges several seeds in one run)."""
    from iclab.studies import study as study_named

    presets = study_named(study).presets
    return preset in presets and hasattr(presets[preset], "seeds")


def _refuse_foreign(out: Path) -> None:
    """A sweep writes into a folder of its own: a training run or a study's folder is refused untouched."""
    from iclab.studies.common import StudyDir, is_training_run

    if is_training_run(out):
        raise IclabError(f"--out {out}: holds a training run; a sweep needs a new folder or one of its own")
    owner = StudyDir(out).owner()
    if owner is not None:
        raise IclabError(f"--out {out}: holds the {owner!r} study; a sweep needs a new folder or one of its own")


def run_point(study: str, preset: str, overrides: tuple[str, ...], values: dict[str, Any], folder: str, device: str,
              threads: int | None = None) -> dict[str, Any]:
    """Run one grid point (in any process); never raises: a failure is returned and written to error.txt.

    ``threads`` caps torch's CPU threads in this process (workers sharing a machine should not oversubscribe it).
    """
    import torch

    from iclab.errors import Interrupted
    from iclab.studies import study as study_named

    if threads:
        torch.set_num_threads(threads)

    path = Path(folder)
    row: dict[str, Any] = {"run": path.name, **values}
    declared = study_named(study)
    if finished(path, declared.identity(declared.settings(preset, overrides))) is not None:
        return {**row, "status": "skipped (finished)"}
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / "sweep_point.json").write_text(json.dumps({"overrides": list(overrides), "values": values}))
        declared.run(preset, path, list(overrides), torch.device(device), log=lambda s: None)
        (path / "error.txt").unlink(missing_ok=True)
        return {**row, "status": "complete"}
    except Interrupted:  # Ctrl-C / SIGTERM stops the sweep; finished runs are kept
        raise
    except Exception as err:  # one failing run must not stop the sweep
        (path / "error.txt").write_text(traceback.format_exc())
        return {**row, "status": "failed", "error": f"{type(err).__name__}: {err}"}


def _flatten(summary: Summary) -> dict[str, Any]:
    """A summary as columns: every claim's measured values by name (``claim.<name>``), its verdict under the name of
    its first value (``verdict.<name>``: over a sweep of seeds, which verdicts hold at every seed and which flip), the
    count of each verdict (``verdicts.<VERDICT>``) and the scalar numbers as dotted columns (``<key>.<key>``; lists
    left out)."""
    row: dict[str, Any] = {}
    for claim in summary.claims:
        if claim.values:
            row[f"verdict.{next(iter(claim.values))}"] = claim.verdict.value
        for name, value in claim.values.items():
            key = f"claim.{name}"
            if key in row and row[key] != value:  # two claims name different numbers alike: keep both
                key = f"{key}.{sum(k.startswith(key) for k in row) + 1}"
            row[key] = value
    for verdict in Verdict:
        row[f"verdicts.{verdict.value.replace(' ', '_')}"] = sum(c.verdict is verdict for c in summary.claims)
    flat = pd.json_normalize({"preset": summary.preset, **summary.numbers}, sep=".")
    for key, value in flat.iloc[0].items():
        if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy scalar
            value = value.item()
        if isinstance(value, (int, float, str, bool)) or value is None:
            row[key] = value
    return row


@holding_locks()
def sweep(
    study: str,
    preset: str,
    grids: list[str],
    out: Path,
    seeds: int = 0,
    base: list[str] = (),
    executor: Executor = "local",
    workers: int = 1,
    address: str | None = None,
    cpus_per_run: float = 1.0,
    gpus_per_run: float = 0.0,
    device: str = "cpu",
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Run the grid; returns (and writes) the results table, one row per grid point."""
    out = Path(out)
    if seeds > 0 and _judges_seeds(study, preset):  # the sweep's seeds are the runs: each trains one
        base = [*base, "seeds=1"]
    points = expand(grids, seeds, base)
    jobs = []
    for p in points:  # every point's settings are validated before anything runs
        try:
            folder = run_directory(study, preset, p.overrides, out)
        except IclabError as err:
            at = ", ".join(f"{k}={v}" for k, v in p.values.items())
            raise type(err)(f"{err} (grid point {at})") from None
        jobs.append((p, folder))
    _refuse_foreign(out)
    output_dir(out)
    lock_folder(out, "sweep")
    log(f"sweep {study}: {len(points)} runs, executor {executor}" + (f" ({workers} workers)" if executor == "local" else ""))
    args = [(study, preset, p.overrides, p.values, str(f), device) for p, f in jobs]
    if executor == "ray":
        rows = list(_done(_run_ray(args, address, cpus_per_run, gpus_per_run), len(args), log))
    elif workers > 1:
        # spawn, not fork: forking a process whose torch / OpenMP threads are running can deadlock the children
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows = list(_done(pool.map(run_point, *zip(*args), [threads] * len(args)), len(args), log)) if args else []
    else:
        rows = list(_done((run_point(*a) for a in args), len(args), log))
    for row in rows:
        if row["run"]:
            summary_file = out / "runs" / row["run"] / "summary.json"
            if summary_file.is_file():
                row.update({f"result.{k}": v for k, v in _flatten(Summary.load(summary_file)).items()})
    table = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "results.csv", index=False)
    table.to_parquet(out / "results.parquet", index=False)
    (out / "sweep.json").write_text(json.dumps({"study": study, "preset": preset, "grid": list(grids), "seeds": seeds, "base": list(base)}, indent=1))
    if seeds > 1:
        verdicts_table(verdicts_over_seeds(table)).to_csv(out / "verdicts.csv", index=False)
    return table


def verdicts_table(verdicts: list["SeedVerdict"]) -> pd.DataFrame:
    """One row per grid point and claim: the grid values, the claim, its verdict over the seeds and how many seeds
    gave each verdict (``seeds.<VERDICT>``)."""
    return pd.DataFrame([{**v.point, "claim": v.claim, "verdict": v.verdict.value,
                          **{f"seeds.{k}": n for k, n in v.counts.items()}} for v in verdicts])


@dataclass(frozen=True)
class SeedVerdict:
    """A claim's verdict over the seeds of one grid point: ``point`` its grid values (seed left out), ``claim`` the
    name of its first value, ``counts`` verdict -> number of seeds, ``verdict`` by :func:`iclab.claims.over_seeds`."""

    point: dict[str, Any]
    claim: str
    counts: dict[str, int]

    @property
    def verdict(self) -> Verdict:
        return over_seeds([Verdict(v) for v, n in self.counts.items() for _ in range(n)])

    def line(self) -> str:
        at = ", ".join(f"{k}={v}" for k, v in self.point.items())
        counts = ", ".join(f"{v} {k}" for k, v in sorted(self.counts.items()))
        return f"{self.claim}{f' ({at})' if at else ''}: {counts}"


def verdicts_over_seeds(table: pd.DataFrame) -> list[SeedVerdict]:
    """Every claim's verdict over the seeds of each grid point, over the table's finished runs (those with verdict
    columns), in the table's order."""
    columns = [c for c in table.columns if c.startswith("result.verdict.")]
    if not columns:
        return []
    keys = [c for c in table.columns if c not in ("run", "status", "error", "seed") and not c.startswith("result.")]
    done = table.dropna(subset=columns, how="all")
    labels = [done[k].astype(str) for k in keys]  # grid values as written: a list value (depths=[1]) cannot be grouped
    found = []
    for point, group in (done.groupby(labels, dropna=False, sort=False) if keys else [((), done)]):
        values = dict(zip(keys, point if isinstance(point, tuple) else (point,)))
        for column in columns:
            counts = group[column].dropna().value_counts()
            if len(counts):
                found.append(SeedVerdict(values, column.removeprefix("result.verdict."), {str(k): int(v) for k, v in counts.items()}))
    return found


def verdict_flips(table: pd.DataFrame) -> list[SeedVerdict]:
    """The claims whose verdict is not the same at every seed of a grid point (INCONCLUSIVE by
    :func:`~iclab.claims.over_seeds`): the fragile verdicts a single seed would not show."""
    if "seed" not in table.columns:
        return []
    return [v for v in verdicts_over_seeds(table) if v.verdict is Verdict.INCONCLUSIVE]


def _done(rows: Iterable[dict[str, Any]], total: int, log: Callable[[str], None]) -> Iterator[dict[str, Any]]:
    """Pass the finished runs' rows through, logging each with runs done / total and an ETA."""
    t0 = time.perf_counter()
    for i, row in enumerate(rows, 1):
        elapsed = time.perf_counter() - t0
        eta = f", eta {elapsed / i * (total - i):.0f}s" if i < total else ""
        log(f"  [{i}/{total}] {row['run']}: {row['status']}" + (f" - {row['error']}" if row.get("error") else "")
            + f" ({elapsed:.0f}s{eta})")
        yield row


def _run_ray(args: list[tuple], address: str | None, cpus: float, gpus: float) -> list[dict[str, Any]]:
    try:
        import ray
    except ImportError:
        raise IclabError("--executor ray needs Ray: pip install 'iclab[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        remote = ray.remote(num_cpus=cpus, num_gpus=gpus)(run_point)
        return ray.get([remote.remote(*a) for a in args])
    finally:
        if started_here:
            ray.shutdown()


def plot_sweep(out: Path, key: str, metric: str | None = None) -> Path:
    """The standard sweep figure: a result metric against one grid key, mean +- std over seeds, a line per other grid setting."""
    from iclab.plots import plt, save

    out = Path(out)
    if not (out / "results.csv").is_file():
        raise IclabError(f"{out}: no results.csv; run the sweep first")
    table = pd.read_csv(out / "results.csv")
    if key not in table.columns:
        raise IclabError(f"--plot {key!r}: not a grid key of this sweep; keys: {', '.join(c for c in table.columns if not c.startswith('result.') and c not in ('run', 'status', 'error'))}")
    numeric = [c for c in table.columns if c.startswith("result.") and pd.api.types.is_numeric_dtype(table[c])]
    claims = [c for c in numeric if c.startswith("result.claim.")]
    if metric is None:
        if not numeric:
            raise IclabError("the sweep has no numeric results to plot")
        metric = (claims or numeric)[0]
    elif metric not in numeric:
        what = "not a numeric result" if metric in table.columns else "not a column"
        raise IclabError(f"--metric {metric!r} is {what}; numeric results: {', '.join(numeric[:20])}"
                         + (f" and {len(numeric) - 20} more (results.csv)" if len(numeric) > 20 else ""))
    others = [c for c in table.columns if c not in (key, "seed", "run", "status", "error") and not c.startswith("result.")]
    fig, ax = plt.subplots(figsize=(6, 4))
    groups = table.groupby(others, dropna=False) if others else [((), table)]
    for name, g in groups:
        stats = g.groupby(key)[metric].agg(["mean", "std"]).reset_index()
        label = ", ".join(f"{o}={v}" for o, v in zip(others, name if isinstance(name, tuple) else (name,))) or metric
        ax.errorbar(stats[key].astype(str), stats["mean"], yerr=stats["std"].fillna(0), marker="o", capsize=3, label=label)
    ax.set_xlabel(key)
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    return save(fig, out / "figures", f"sweep_{metric.replace('.', '_')}_vs_{key.replace('.', '_')}")
