"""Loading an nnU-Net v2 trained-model folder and running nnU-Net's own preprocessing and prediction.

Everything here calls nnU-Net (``nnunetv2``) itself; nothing of it is re-implemented. Arrays:
- ``Volume.array`` (CT in HU) is (z, y, x), which is what nnU-Net's SimpleITKIO would give for the same file.
- nnU-Net's preprocessed network input is (c, z', y', x') after transpose_forward, crop-to-nonzero and resampling.
- logits are (C, z', y', x') on the preprocessed grid; segmentations come back as (z, y, x) on the CT grid.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from SegSHAPLib import options
from SegSHAPLib.errors import InputError
from SegSHAPLib.io.image_io import Volume

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 600


def resolve_device(name: str = "cpu"):
    """'cpu', 'cuda', 'cuda:N' or 'auto' -> torch.device; a GPU that is not there is an InputError."""
    import torch

    name = (name or "cpu").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r} requested but this torch sees no CUDA GPU; use --device cpu")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {name!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
        return device
    raise InputError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto")


def available_folds(model_dir: Path, checkpoint: str = options.CHECKPOINT) -> list[str]:
    """Fold names ('0', '1', ..., 'all') that hold ``checkpoint``, sorted."""
    return [sub.name[len("fold_"):] for sub in sorted(model_dir.glob("fold_*")) if (sub / checkpoint).is_file()]


def checkpoints_present(model_dir: Path) -> list[str]:
    """The checkpoint file names found in any fold_X of the folder, sorted."""
    return sorted({path.name for path in model_dir.glob("fold_*/*.pth")})


def check_model_folder(model_dir: str | Path, folds: list[str] | None = None,
                       checkpoint: str = options.CHECKPOINT) -> list[str]:
    """Validate an nnU-Net v2 trained-model folder; return the folds to use. InputError says what is wrong."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise InputError(f"model folder {model_dir} does not exist; give an nnU-Net v2 trained-model folder "
                         f"(with dataset.json, plans.json and fold_X/{options.CHECKPOINT})")
    for name in ("dataset.json", "plans.json"):
        path = model_dir / name
        if not path.is_file():
            raise InputError(f"{model_dir} is not an nnU-Net v2 trained-model folder: {name} is missing")
        try:
            json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InputError(f"{path} is not valid JSON ({err})") from None
    present = available_folds(model_dir, checkpoint)
    if not present:
        others = checkpoints_present(model_dir)
        if others:
            raise InputError(f"{model_dir} has no fold_X/{checkpoint}; its folds hold {', '.join(others)}: "
                             f"choose one with --checkpoint (e.g. --checkpoint {others[0]})")
        raise InputError(f"{model_dir} has no fold_X/{checkpoint} (no checkpoint at all); train the model or point "
                         "to the folder that holds the fold_X subfolders")
    if folds is None:
        return present
    missing = [f for f in folds if f not in present]
    if missing:
        raise InputError(f"fold(s) {', '.join(missing)} not found in {model_dir} (with {checkpoint}); available: "
                         f"{', '.join(present)}")
    return list(folds)


def configuration_name(predictor) -> str:
    """The plans' name of the configuration the predictor runs (e.g. '3d_fullres', '2d')."""
    plans_manager = predictor.plans_manager
    for name in plans_manager.available_configurations:
        if plans_manager.get_configuration(name).configuration == predictor.configuration_manager.configuration:
            return name
    return "unknown"


def check_supported(predictor, model_dir) -> None:
    """Refuse what nnU-Net runs but SegSHAP cannot run exactly: a cascade stage (it needs the previous stage's
    prediction as extra input channels)."""
    previous = predictor.configuration_manager.previous_stage_name
    if previous is not None:
        raise InputError(f"{model_dir} is nnU-Net's cascade stage {configuration_name(predictor)!r}, which needs "
                         f"the {previous!r} stage's prediction as input; SegSHAP does not run cascades: explain "
                         f"the {previous!r} or a 3d_fullres model instead")


def load_predictor(model_dir: str | Path, folds: list[str] | None = None, device: str = "cpu",
                   tile_step_size: float = 0.5, use_mirroring: bool = False, checkpoint: str = options.CHECKPOINT):
    """An initialised ``nnUNetPredictor`` for the folder's ``checkpoint`` (nnU-Net's ``-chk``; mirroring TTA off
    unless asked for)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    use_folds = check_model_folder(model_dir, folds, checkpoint)
    if not 0 < tile_step_size <= 1:
        raise InputError(f"tile step {tile_step_size} must be in (0, 1]; nnU-Net's default is 0.5")
    predictor = nnUNetPredictor(tile_step_size=tile_step_size, use_gaussian=True, use_mirroring=use_mirroring,
                                perform_everything_on_device=True, device=resolve_device(device),
                                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    try:
        predictor.initialize_from_trained_model_folder(
            str(model_dir), tuple(int(f) if f != "all" else f for f in use_folds), checkpoint)
    except Exception as err:  # noqa: BLE001 - any failure inside nnU-Net's loader means "not a usable model"
        raise InputError(f"{model_dir} could not be loaded as an nnU-Net v2 model ({type(err).__name__}: "
                         f"{one_line(err)})") from None
    if predictor.network is None:
        raise InputError(f"{model_dir} could not be loaded as an nnU-Net v2 model")
    check_supported(predictor, model_dir)
    check_embedded_dataset(Path(model_dir), use_folds[0], checkpoint, predictor.dataset_json)
    predictor.network.to(predictor.device).eval()
    log.info("loaded %s folds %s (%s) on %s", model_dir, use_folds, checkpoint, predictor.device)
    torch.set_grad_enabled(False)
    return predictor


def one_line(err: BaseException, limit: int = MESSAGE_LIMIT) -> str:
    """An exception's whole message on one line (PyTorch's state-dict errors say what mismatched only after the
    first line), cut at ``limit`` characters."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_embedded_dataset(model_dir: Path, fold: str, checkpoint_name: str, dataset_json: dict) -> None:
    """Refuse a dataset.json that disagrees with the dataset description nnU-Net embedded in the checkpoint
    (``init_args["dataset_json"]``): the checkpoint is what the network was trained on, so renamed or
    renumbered labels in dataset.json would silently change which class is explained. A checkpoint without an
    embedded description is accepted as it is."""
    import torch

    checkpoint = model_dir / f"fold_{fold}" / checkpoint_name
    try:
        embedded = torch.load(checkpoint, map_location="cpu", weights_only=False) \
            .get("init_args", {}).get("dataset_json")
    except Exception as err:  # noqa: BLE001 - nnU-Net just loaded it, so this is a damaged file
        raise InputError(f"{checkpoint} cannot be read ({one_line(err)})") from None
    if not isinstance(embedded, dict):
        return
    differing = sorted(key for key in ("labels", "channel_names", "regions_class_order")
                       if embedded.get(key) != dataset_json.get(key))
    if differing:
        shown = "; ".join(f"{key}: dataset.json {dataset_json.get(key)} vs checkpoint {embedded.get(key)}"
                          for key in differing)
        raise InputError(f"{model_dir / 'dataset.json'} disagrees with the dataset description embedded in "
                         f"{checkpoint.relative_to(model_dir)} ({shown}); restore the model's own dataset.json")


@dataclass
class Preprocessed:
    """nnU-Net's preprocessed network input for one CT.

    data:       float32 numpy array (c, z', y', x') on the network grid.
    properties: nnU-Net's properties dict (spacing, shape_before_cropping, bbox_used_for_cropping,
                shape_after_cropping_and_before_resampling), as its export functions need it.
    """

    data: np.ndarray
    properties: dict


def check_ct(ct: Volume) -> None:
    """Refuse CT data that nnU-Net cannot preprocess meaningfully (NaN/inf voxels, 8-bit or boolean data, which
    cannot hold Hounsfield units: an image export, not the CT)."""
    if not np.issubdtype(ct.array.dtype, np.number):
        raise InputError(f"the CT has non-numeric voxels ({ct.array.dtype})")
    if ct.array.dtype in (np.uint8, np.int8, np.bool_):
        raise InputError(f"the CT is stored as {ct.array.dtype} (values {ct.array.min()}..{ct.array.max()}), which "
                         "cannot hold Hounsfield units (air is -1000); give the original CT (int16 or float, HU)")
    if np.issubdtype(ct.array.dtype, np.floating) and not np.all(np.isfinite(ct.array)):
        bad = int((~np.isfinite(ct.array)).sum())
        raise InputError(f"the CT has {bad} NaN/inf voxel(s); fill them (e.g. with -1024 HU) before explaining")


def preprocess(predictor, ct: Volume) -> Preprocessed:
    """Run the model's own preprocessor on a CT (HU, (z, y, x)) exactly as nnU-Net's prediction would."""
    check_ct(ct)
    plans_manager, configuration = predictor.plans_manager, predictor.configuration_manager
    preprocessor = configuration.preprocessor_class(verbose=False)
    properties = {"spacing": list(ct.spacing_zyx)}
    data, _, properties = preprocessor.run_case_npy(ct.array[None].astype(np.float32), None, properties,
                                                    plans_manager, configuration, predictor.dataset_json)
    return Preprocessed(np.ascontiguousarray(data, dtype=np.float32), properties)


def predict_logits(predictor, data: np.ndarray):
    """nnU-Net's full sliding-window logits (torch, (C, z', y', x')) for a preprocessed input (c, z', y', x')."""
    import torch

    return predictor.predict_logits_from_preprocessed_data(torch.from_numpy(np.ascontiguousarray(data)))


def logits_to_segmentation(predictor, logits, properties: dict) -> np.ndarray:
    """nnU-Net's own export of network-grid logits to a (z, y, x) label array on the CT grid."""
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

    seg = convert_predicted_logits_to_segmentation_with_correct_shape(
        logits, predictor.plans_manager, predictor.configuration_manager, predictor.label_manager,
        dict(properties), return_probabilities=False)
    return np.asarray(seg)


def predict_segmentation(predictor, ct: Volume, pre: Preprocessed | None = None) -> Volume:
    """The model's segmentation of a CT, as a uint8/uint16 label ``Volume`` on the CT grid (``pre``: the CT's
    preprocessing when already done)."""
    pre = pre if pre is not None else preprocess(predictor, ct)
    seg = logits_to_segmentation(predictor, predict_logits(predictor, pre.data), pre.properties)
    dtype = np.uint8 if seg.max(initial=0) < 256 else np.uint16
    return ct.with_array(seg.astype(dtype))


def class_names(predictor) -> dict[int, str]:
    """Label value -> name from the model's dataset.json (e.g. {0: 'background', 1: 'spleen'})."""
    return {int(v): k for k, v in predictor.dataset_json["labels"].items() if isinstance(v, int)}


def resolve_target(predictor, target: str | int) -> int:
    """A target class given by label value or name -> label value; InputError lists the model's classes."""
    names = class_names(predictor)
    if not any(value != 0 for value in names):
        raise InputError(f"the model's dataset.json 'labels' ({predictor.dataset_json.get('labels')}) has no "
                         "integer foreground label; nnU-Net v2 needs {name: integer} with classes above 0")
    by_name = {n.lower(): v for v, n in names.items()}
    text = str(target).strip()
    if text.lower() in by_name:
        value = by_name[text.lower()]
    elif text.isdigit():
        value = int(text)
    else:
        value = None
    if value is None or value not in names or value == 0:
        listing = ", ".join(f"{v}={n}" for v, n in sorted(names.items()) if v != 0)
        raise InputError(f"target {target!r} is not a foreground class of this model; choose one of {listing}")
    return value
