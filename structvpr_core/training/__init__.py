"""The StructVPR training method (Shen et al., CVPR 2023, Sec. 3.3-3.5), run by ``training/train.py``.

Modules, in the order a run uses them:

- ``config``: the job schema (``config/train_*.yaml``);
- ``run``: the run directory, data loading, synthetic-set generation, the stages in order;
  ``context``: the ``RunContext`` the stages read; ``budget``: ``--max-steps``;
- ``mining``: positives (10 m or ground truth), negatives (beyond 25 m), hard-negative cache;
- ``inputs``: image tensors (RGB branch) and SLME tensors (seg branch), training tuples;
- ``stage`` (the epoch loop), ``stage1``, ``partition_stage``, ``stage2``;
- ``distillation``: what a distillation is (the interface the loop calls, found by name);
  ``distill_structvpr``: StructVPR's φ-weighted KD from the cached seg teacher (stage II);
  ``distill_structvpr_pp``: StructVPR++'s global + per-label KD and masks CE (``model.label_features``);
- ``branches``: which network a stage trains (StructVPR's branches, or StructVPR++'s);
- ``losses_kd``: triplet + φ-weighted distillation formulas; ``embed``: descriptors split over DDP ranks;
- ``distributed``: process groups (gloo on CPU, nccl on CUDA), seeding;
- ``records``: state.pt / best.pt / log.csv / steps.csv / done.json (columns documented there).

The group partition and φ themselves are in ``structvpr_core.partition``.
"""
