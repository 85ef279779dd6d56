"""nnU-Net (v2 raw) and Medical Segmentation Decathlon layouts, described by a ``dataset.json``.

- **nnunet**: ``dataset.json`` with ``channel_names`` (``{"0": "CT"}``), ``labels`` (label name ->
  id) and ``file_ending``; images ``imagesTr/<case>_0000<ending>``, labels
  ``labelsTr/<case><ending>``, unlabelled ``imagesTs/<case>_0000<ending>``.
- **decathlon**: ``dataset.json`` with ``modality`` (``{"0": "CT"}``), ``labels`` (id -> label
  name), ``training`` (``[{"image": ..., "label": ...}]``) and ``test`` (image paths).

The modality comes from the channel name (``CT`` -> ``ct``; any other name, e.g. ``MRI``, ``T2``
or ``ADC``, -> ``mr``) unless the caller fixes it; the label map comes from the label names
(:func:`dltk_mm.io.labels.preset_from_label_names`: liver, spleen, right / left kidney in their
usual spellings, everything else background) and is stored as a preset file next to the manifest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from absl import logging

from dltk_mm.errors import InputDataError
from dltk_mm.io.labels import preset_from_label_names
from dltk_mm.io.layouts import LayoutScan, simple_candidate, volume_files

_MR_NAME = re.compile(r"mr|t1|t2|flair|dwi|adc|spir|dixon|pd|swi|bold|dce|dual", re.IGNORECASE)


def read_dataset_json(root: Path) -> dict[str, Any]:
    """The ``dataset.json`` of ``root`` as a dict.

    Raises:
        InputDataError: if it is missing or not a JSON object.
    """
    path = root / "dataset.json"
    if not path.is_file():
        raise InputDataError(f"{path}: not found; --root must be the data set's folder (the one "
                             "holding dataset.json, imagesTr and labelsTr)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputDataError(f"{path}: cannot be read as JSON ({error}); restore it from the "
                             "download") from error
    if not isinstance(data, dict):
        raise InputDataError(f"{path}: must hold a JSON object")
    return data


def modality_from_channel(name: str, source: str) -> str:
    """``ct`` for a channel called CT, ``mr`` for any other name (warning if it does not look
    like an MR sequence)."""
    if name.strip().lower() == "ct":
        return "ct"
    if not _MR_NAME.search(name):
        logging.warning("%s: channel %r is taken as MR; pass --modality if it is not", source,
                        name)
    return "mr"


def _channel(channels: Mapping[str, Any], channel: int, source: Path) -> str:
    if not isinstance(channels, Mapping) or not channels:
        raise InputDataError(f"{source}: needs a non-empty channel / modality object, e.g. "
                             '{"0": "CT"}')
    names = {int(k): str(v) for k, v in channels.items()}
    if channel not in names:
        raise InputDataError(f"{source}: has no channel {channel} (channels {names}); choose one "
                             "of them with --channel")
    if len(names) > 1:
        logging.warning("%s: %d channels %s; only channel %d (%s) is used", source, len(names),
                        names, channel, names[channel])
    return names[channel]


def _derive_preset(scan: LayoutScan, labels: Mapping[int, str], name: str,
                   source: Path) -> None:
    preset, missing = preset_from_label_names(labels, name, f"derived from {source}")
    scan.presets[name] = (preset, dict(labels))
    if missing:
        note = (f"{source}: no label names the {', '.join(missing)}; those organs count as "
                "background in this data set")
        logging.warning("%s", note)
        scan.notes.append(note)


def _preset_name(root: Path, data: Mapping[str, Any]) -> str:
    name = str(data.get("name") or data.get("dataset_name") or root.name)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "dataset"


def _read_checked(root: Path, kind: str, keys: Sequence[str], other_layout: str,
                  modality: str | None, channel: int) -> tuple[Mapping[str, Any], Path, str]:
    """``root/dataset.json``, checked to hold ``keys``, its path and the rows' modality.

    The modality is ``modality`` if given, else the name of entry ``channel`` of the channel
    table ``keys[0]``. A missing key raises InputDataError reading ``<source>: has no 'key';
    <kind> dataset.json needs a, b and c (<other_layout>)``.
    """
    data = read_dataset_json(root)
    source = root / "dataset.json"
    for key in keys:
        if key not in data:
            raise InputDataError(f"{source}: has no {key!r}; {kind} dataset.json needs "
                                 f"{', '.join(keys[:-1])} and {keys[-1]} ({other_layout})")
    row_modality = modality or modality_from_channel(_channel(data[keys[0]], channel, source),
                                                     str(source))
    return data, source, row_modality


def scan_nnunet(root: Path, modality: str | None = None, channel: int = 0) -> LayoutScan:
    """The cases of an nnU-Net v2 raw data set (see the module docstring).

    Args:
        root: the data set folder (``.../nnUNet_raw/DatasetXXX_Name``).
        modality: fixes the modality of every row (default: from the channel name).
        channel: the channel used as image (``_0000`` is channel 0).
    """
    data, source, row_modality = _read_checked(
        root, "an nnU-Net v2", ("channel_names", "labels", "file_ending"),
        "a Decathlon dataset.json with 'modality' and 'training' is --layout=decathlon",
        modality, channel)
    labels = {}
    for label_name, value in data["labels"].items():
        for label_id in (value if isinstance(value, list) else [value]):
            labels.setdefault(int(label_id), str(label_name))
    scan = LayoutScan()
    name = _preset_name(root, data)
    _derive_preset(scan, labels, name, source)
    ending = str(data["file_ending"])
    suffix = f"_{channel:04d}{ending}"
    for folder, labelled in (("imagesTr", True), ("imagesTs", False)):
        for image in volume_files(root / folder):
            if not image.name.endswith(suffix):
                continue
            case = image.name[: -len(suffix)]
            label = root / "labelsTr" / f"{case}{ending}" if labelled else None
            scan.candidates.append(simple_candidate(case, row_modality, image, label, name,
                                                    label_expected=True))
    if not scan.candidates:
        raise InputDataError(f"{root}: no images named <case>{suffix} in imagesTr or imagesTs")
    return scan


def scan_decathlon(root: Path, modality: str | None = None, channel: int = 0) -> LayoutScan:
    """The cases of a Medical Segmentation Decathlon style data set (see the module docstring).

    Args:
        root: the task folder (``TaskXX_Name``).
        modality: fixes the modality of every row (default: from the ``modality`` entry).
        channel: the ``modality`` entry whose name gives the modality.
    """
    data, source, row_modality = _read_checked(
        root, "a Decathlon", ("modality", "labels", "training"),
        "an nnU-Net v2 dataset.json is --layout=nnunet", modality, channel)
    labels = {int(k): str(v) for k, v in data["labels"].items()}
    scan = LayoutScan()
    name = _preset_name(root, data)
    _derive_preset(scan, labels, name, source)
    items = [(item["image"], item.get("label")) for item in data["training"]]
    items += [(item["image"] if isinstance(item, Mapping) else item, None)
              for item in data.get("test", []) or []]
    for image_text, label_text in items:
        image = (root / image_text).resolve()
        label = (root / label_text).resolve() if label_text else None
        scan.candidates.append(simple_candidate(
            re.sub(r"\.nii(\.gz)?$", "", image.name), row_modality, image, label, name,
            label_expected=True))
    return scan
