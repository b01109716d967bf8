"""In-context linear regression against reference learners (Akyürek et al. 2023; Raventós et al. 2023).

- :mod:`.metrics`: SPD, ILWD, MSPD with bootstrap intervals, implicit weights.
- :mod:`.comparison`: trained models against the learners (behaviour), the MSPD noise table, the constructions.
- :mod:`.probes`: attention-pooled linear and MLP probes of hidden states.
- :mod:`.task_diversity`: a softmax transformer trained on a finite pool of tasks, against ridge and dMMSE.
"""
