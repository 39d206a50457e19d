"""The mask value b that removed units take: given in the image's own units, normalised as nnU-Net normalises
this very case (``MaskValue``).

nnU-Net normalises each channel before resampling (``DefaultPreprocessor.run_case_npy``), on the CT transposed
by ``transpose_forward`` and cropped to its nonzero bounding box (``crop_to_nonzero``), with the scheme the plans
name. Per scheme, b̃ = N(b) is:

- ``CTNormalization``:        (clip(b, p0.5, p99.5) - mean) / max(std, eps), the plans' foreground statistics
                              (data-independent: nnU-Net's normaliser is run on one voxel of value b);
- ``ZScoreNormalization``:    (b - mean) / max(std, eps), mean and std of *this image* after transpose and crop,
                              over the nonzero mask (``seg >= 0``) when the plans set ``use_mask_for_norm``;
- ``RescaleTo01Normalization``: (b - min) / max(max - min, eps), min and max of this cropped image;
- ``RGBTo01Normalization``:   b / 255 (b must lie in [0, 255]);
- ``NoNormalization``:        b.

The per-image statistics are computed from the same float32 arrays, in the same memory layout, as nnU-Net's
normaliser computes them, so b̃ is the float32 value nnU-Net's preprocessing would give a voxel of value b.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from SegSHAPLib.errors import InputError
from SegSHAPLib.inference import nnunet_private
from SegSHAPLib.io.image_io import Volume

DATA_INDEPENDENT = ("CTNormalization", "NoNormalization", "RGBTo01Normalization")
PER_IMAGE = ("ZScoreNormalization", "RescaleTo01Normalization")


@dataclass(frozen=True)
class MaskValue:
    """b in the image's own units (HU for CT), b̃ as the network sees it, and how b̃ was obtained.

    statistics: the per-image statistics the scheme used ({} for data-independent schemes), as floats.
    """

    image_units: float
    normalised: float
    scheme: str
    use_mask_for_norm: bool
    statistics: dict = field(default_factory=dict)

    def as_summary(self) -> dict:
        """summary.json's ``mask_value`` block."""
        return {"image_units": self.image_units, "normalised": self.normalised, "scheme": self.scheme,
                "use_mask_for_norm": self.use_mask_for_norm, "statistics": dict(self.statistics)}


def _cropped_channel(predictor, ct: Volume) -> tuple[np.ndarray, np.ndarray]:
    """The CT as nnU-Net's normaliser sees it: float32 (z', y', x') transposed and cropped to nonzero (a view,
    laid out as in ``run_case_npy``), and nnU-Net's crop mask (int8, -1 outside the nonzero region)."""
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero

    transpose = predictor.plans_manager.transpose_forward
    data = ct.array[None].astype(np.float32).transpose([0, *[i + 1 for i in transpose]])
    data, seg, _ = crop_to_nonzero(data, None)
    return data[0], seg[0]


def _per_image(scheme: str, image: np.ndarray, seg: np.ndarray, use_mask: bool, b: np.float32):
    """(b̃ as float32, statistics) for the schemes whose statistics come from the image itself."""
    eps = 1e-8
    if scheme == "ZScoreNormalization":
        values = image[seg >= 0] if use_mask else image
        mean, std = values.mean(), values.std()
        return np.float32((b - mean) / max(std, eps)), {"mean": float(mean), "std": float(std)}
    low, high = image.min(), image.max()
    return np.float32((b - low) / np.clip(high - low, a_min=eps, a_max=None)), {"min": float(low), "max": float(high)}


def mask_value(predictor, ct: Volume, b: float) -> MaskValue:
    """b (the image's units) -> ``MaskValue`` for this model and this CT (channel 0)."""
    configuration = predictor.configuration_manager
    scheme = configuration.normalization_schemes[0]
    use_mask = bool(configuration.use_mask_for_norm[0])
    b32 = np.float32(b)
    if scheme in DATA_INDEPENDENT:
        if scheme == "RGBTo01Normalization" and not 0 <= b <= 255:
            raise InputError(f"--mask-value {b:g} is outside this model's RGB range; it normalises with "
                             "RGBTo01Normalization, give a value in 0..255 (0 = black)")
        normaliser = nnunet_private.normalisation_class(scheme)(
            use_mask_for_norm=use_mask,
            intensityproperties=predictor.plans_manager.foreground_intensity_properties_per_channel["0"])
        normalised = normaliser.run(np.full((1, 1, 1), b32, dtype=np.float32),
                                    np.zeros((1, 1, 1), dtype=np.int8)).reshape(-1)[0]
        statistics = {}
    elif scheme in PER_IMAGE:
        image, seg = _cropped_channel(predictor, ct)
        normalised, statistics = _per_image(scheme, image, seg, use_mask, b32)
    else:
        raise InputError(f"the model normalises with {scheme!r}, for which SegSHAP cannot say what a removed "
                         f"voxel becomes; supported: {', '.join(DATA_INDEPENDENT + PER_IMAGE)}")
    return MaskValue(float(b), float(normalised), scheme, use_mask, statistics)
