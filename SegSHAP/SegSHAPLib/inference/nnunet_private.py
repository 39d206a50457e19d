"""Every use of nnU-Net's private API in SegSHAP, in one place (read against nnunetv2 2.x).

The exact engine has to reproduce nnU-Net's sliding window patch by patch, which its public API does not offer:
the patch grid, the (mirrored) forward of one patch, swapping fold weights into the network, and the lookup of a
normalisation scheme by name live behind underscores or internal attributes. When the nnunetv2 pin moves, this
module is the one to re-read; the bit-identity tests (test_cached_inference.py, test_model_zoo.py) fail when
any of these drift from what ``nnUNetPredictor.predict_logits_from_preprocessed_data`` does.
"""

from __future__ import annotations


def sliding_window_slicers(predictor, padded_spatial_shape: tuple[int, ...]) -> list[tuple]:
    """nnU-Net's patch slicers over the padded input, in its own order.

    ``padded_spatial_shape`` is (Z, Y, X). 3d configurations give ``(slice(None), slice_z, slice_y, slice_x)``;
    2d configurations give ``(slice(None), z, slice_y, slice_x)`` with an integer slice index z.
    (``nnUNetPredictor._internal_get_sliding_window_slicers``.)
    """
    return predictor._internal_get_sliding_window_slicers(tuple(padded_spatial_shape))


def mirror_and_predict(predictor, x):
    """The network's logits for a batch of patches, with nnU-Net's mirroring TTA when the predictor has it on.

    x: float32 tensor (n, c, pz, py, px) for 3d or (n, c, py, px) for 2d; returns (n, C, ...) of the same spatial
    shape. (``nnUNetPredictor._internal_maybe_mirror_and_predict``.)
    """
    return predictor._internal_maybe_mirror_and_predict(x)


def load_fold_weights(predictor, parameters: dict) -> None:
    """Put one fold's weights into the predictor's network, as ``predict_logits_from_preprocessed_data`` does
    (a ``torch.compile``-d network keeps the real module in ``_orig_mod``)."""
    network = predictor.network
    getattr(network, "_orig_mod", network).load_state_dict(parameters)


def normalisation_class(scheme: str):
    """The ``ImageNormalization`` subclass a plans file names (e.g. 'CTNormalization'), found the way
    ``DefaultPreprocessor._normalize`` finds it; None when nnU-Net has no such class."""
    from os.path import join

    import nnunetv2
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    return recursive_find_python_class(join(nnunetv2.__path__[0], "preprocessing", "normalization"), scheme,
                                       "nnunetv2.preprocessing.normalization")
