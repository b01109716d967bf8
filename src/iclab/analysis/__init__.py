"""Pure analysis functions: (model or cache, batch, options) -> a typed result; no plotting, no file I/O.

Generic, for any study and any :class:`~iclab.heads.HeadModel`:

- :mod:`.stats`: one PCA, one moving average, one bootstrap.
- :mod:`.heads`: per-head scores from attention patterns and OV paths: prefix-matching, previous-token, copying (logit
  score, top-1 share, eigenvalues), TransformerLens-style detection scores.
- :mod:`.circuits`: QK / OV circuits and their composition read off the weights (``HeadModel.circuit_weights``: iclab's
  models and every Hugging Face family whose queries and keys are linear; q/k-normalised families are refused).

By study:

- :mod:`.linreg`: SPD / ILWD / MSPD, trained models against reference learners, probes, task diversity.
- :mod:`.induction`: head scores over training, the phase change, ablations, per-token loss attribution, evidence on
  real models.
- :mod:`.addk`: prompts and task means, the head-set search, subspaces and the extraction identity, the pipeline.

The spin-glass study's experiments live with their library, :mod:`iclab.spinglass.experiments`.
"""
