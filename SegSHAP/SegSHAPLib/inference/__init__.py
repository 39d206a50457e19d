"""nnU-Net inference: the model, nnU-Net's grid, and the exact cached sliding-window engine for many coalitions.

- ``model``:            load a trained-model folder, preprocess and predict with nnU-Net's own code.
- ``network_grid``:     the CT grid <-> nnU-Net's preprocessed grid.
- ``nnunet_private``:   every use of nnU-Net's private API (slicers, one patch's forward, fold weights, normalisers).
- ``mask_value``:       the mask value b, normalised as nnU-Net normalises this case (per scheme).
- ``perturbation``:     removed units take the replacement R (a scalar or an image).
- ``removal``:          the removal operator (``--removal constant|blur|mean``) and its replacement R.
- ``patch_memo``:       the byte-budgeted memo of per-patch outputs.
- ``cached_inference``: the engine (``CachedSlidingWindow``), restricted to the ROI's support and memoised per patch.
- ``forward_count``:    the patch forwards of a coalition list per cache mode and the memo's bytes, counted, none run.
- ``case_cache``:       the model, preprocessing and full prediction kept for the next explanation of the same CT.
- ``case_store``:       the on-disk case cache shared by processes (key, integrity check, byte budget).
- ``patch_timing``:     the measured seconds of one patch forward per model and device, kept in the cache folder.
- ``verify``:           ``--verify N``: the engine against nnU-Net's own full prediction.
The package is not imported eagerly here: its modules import torch and nnunetv2.
"""
