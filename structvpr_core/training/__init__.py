"""StructVPR training (Shen et al., CVPR 2023, Sec. 3.3-3.5) and low-quality-query students (``training/train.py``).

Modules, in the order a run uses them:

- ``config``: the job schema (``config/train_*.yaml``);
- ``run``: the run directory, data loading, synthetic-set generation, the stages in order;
  ``context``: the ``RunContext`` the stages read; ``budget``: ``--max-steps``;
- ``mining``: positives (10 m or ground truth), negatives (beyond 25 m), hard-negative cache;
- ``inputs``: image tensors (RGB branch) and SLME tensors (seg branch), training tuples;
- ``stage`` (the epoch loop), ``stage1``, ``partition_stage``, ``stage2``, ``lqq_stage``;
- ``batches``: where the loop's batches come from (tuples mined from place labels, or plain
  images); ``validation``: what it validates (Recall@N, or a distillation's loss on held-out images);
- ``distillation``: what a distillation is (the interface the loop calls, found by name);
  ``distill_structvpr``: StructVPR's φ-weighted KD from the cached seg teacher (stage II);
  ``distill_structvpr_pp``: StructVPR++'s global + per-label KD and masks CE (``model.label_features``);
  ``distill_lqq``: VPR4LQQ's low-quality-query KD (MSE + ICKD from a frozen teacher; stage lqq);
- ``branches``: which network a stage trains (StructVPR's branches, or StructVPR++'s);
- ``image_sources``: the lqq stage's unlabelled images (folders, rosbag2 topics) and held-out split;
- ``losses_kd``: triplet, φ-weighted distillation and ICKD formulas; ``embed``: descriptors split over DDP ranks;
- ``distributed``: process groups (gloo on CPU, nccl on CUDA), seeding;
- ``records``: state.pt / best.pt / log.csv / steps.csv / done.json (columns documented there);
  ``curves``: the training curve (validation R@N per epoch) from a log.csv as a PNG (``training/plot_curve.py``).
- ``experiment`` (``training/experiment.py``): many seeds x variants sharing stage I, each model
  evaluated on a held-out split and cached; ``experiment_report``: results.csv, summary.md, the
  figure; ``stats``: binomial and across-seed intervals, the paired (stratified, clustered) bootstrap.

The group partition and φ themselves are in ``structvpr_core.partition``.
"""
