"""``--verify N``: the cached engine against nnU-Net's own full-volume sliding-window prediction.

For the unperturbed baseline and N random coalitions (seeded), the whole perturbed network input is predicted by
``nnUNetPredictor.predict_logits_from_preprocessed_data`` and compared with the engine's logits inside the box.
With batch size 1 on CPU the difference is exactly 0 (nnU-Net's fusion order and float16 accumulators are
reproduced); larger batches may differ in the last bits.
"""

from __future__ import annotations

import numpy as np

from SegSHAPLib.inference.model import predict_logits
from SegSHAPLib.inference.perturbation import apply_coalition


def verify_engine(context, n_random: int, seed: int) -> dict:
    """Max |logit difference| and argmax mismatches in the box over the baseline + ``n_random`` coalitions."""
    rng = np.random.default_rng(seed + 7919)
    m = context.n_units
    keep = np.concatenate([np.ones((1, m), dtype=bool), rng.random((n_random, m)) < 0.5])
    engine = context.engine
    box = (slice(None), *engine.box.slices)
    units_net = context.grid.to_network(context.units.labels)
    data = context.preprocessed.data[0]
    max_diff, mismatches = 0.0, 0
    for row in keep:
        ours = engine.evaluate(row[None])[0]
        perturbed = apply_coalition(data, units_net, row, context.removal.replacement)[None]
        theirs = predict_logits(context.predictor, perturbed).float().numpy()[box]
        max_diff = max(max_diff, float(np.abs(ours - theirs).max()))
        mismatches += int((ours.argmax(axis=0) != theirs.argmax(axis=0)).sum())
    return {"coalitions": int(len(keep)), "max_abs_logit_diff": max_diff, "argmax_mismatch_voxels": mismatches}
