"""Attribution patching against exact activation patching on SmolLM2-135M: the speed-up and how well they agree.

The same prompt pair (an indirect-object sentence whose subject is swapped in the corrupted prompt), the same sites
(every head's z at every position; the residual stream at every layer and position) and the same metric (the logit
difference between the two names), in one run, each timed alone:
  - exact: one patched forward pass per site, batched;
  - attribution: one forward and one backward pass.
Prints both times, the ratio, and the agreement (Pearson correlation of the effects; how many of exact patching's ten
largest sites attribution also ranks in its ten largest). Then path patching from every earlier head into the query,
key and value of the head exact patching ranks first at the last position: its time and strongest senders.

    python benchmarks/patching.py          # needs `iclab models get smollm2-135m`
"""

from __future__ import annotations

import time

import torch

import numpy as np

from iclab.analysis.patching import PromptPair, agreement, patch, path_patch
from iclab.heads import load_model

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


def main() -> None:
    model = load_model("smollm2-135m", log=lambda s: None)
    answer, wrong = model.encode(" Mary", bos=False), model.encode(" John", bos=False)
    pair = PromptPair(model.encode(CLEAN), model.encode(CORRUPT), answer[0], wrong[0])
    print(f"SmolLM2-135M, {len(pair.clean)} tokens, {model.n_layers} x {model.n_heads} heads, {torch.get_num_threads()} threads")
    for site in ("heads", "resid"):
        timed = {}
        for method in ("exact", "attribution"):
            t0 = time.perf_counter()
            timed[method] = (patch(model, [pair], site, "logit_diff", "denoising", method), time.perf_counter() - t0)
        (exact, t_exact), (approx, t_approx) = timed["exact"], timed["attribution"]
        a = agreement(exact, approx, k=10)
        print(f"{site}: exact {t_exact:.1f} s ({exact.effect.size} sites), attribution {t_approx:.2f} s: {t_exact / t_approx:.0f}x "
              f"faster; correlation {a.correlation:.3f}, {a.top_k_shared} of exact's top {a.k} sites in attribution's top {a.k}; "
              f"clean {exact.clean_metric:.2f}, corrupted {exact.corrupted_metric:.2f}")
        if site == "heads":
            last = exact.normalised[..., -1]
            receiver = tuple(int(i) for i in np.unravel_index(int(np.argmax(last)), last.shape))
    for into in ("q", "k", "v"):
        t0 = time.perf_counter()
        paths = path_patch(model, [pair], receiver, into, "logit_diff")
        flat = np.nan_to_num(paths.normalised[: receiver[0]])
        top = sorted(np.ndindex(*flat.shape), key=lambda i: -abs(flat[i]))[:3]
        print(f"path patching into L{receiver[0]}H{receiver[1]}'s {into}: {time.perf_counter() - t0:.1f} s "
              f"({receiver[0] * model.n_heads} senders); strongest " + ", ".join(f"L{a}H{b} {flat[a, b]:+.3f}" for a, b in top))


if __name__ == "__main__":
    main()
