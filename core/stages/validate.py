"""Stage 1, validate: read and check every input file before anything is written or trained.

Input: the job's `JobInputs` (file paths, columns, probe specs) and its `TrainConfig`. Output: a
`core.prepared.PreparedData` (the label map and target, the train / aux / select / eval rows, the probes,
where the select and eval rows came from, and each input file's sha256). Bad input raises `DataError` or
`ConfigError` here, so a job that fails validation leaves no output folder behind.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from core.config import TrainConfig
from core.data.dataset import Example, check_aux, load_examples, stratified_split
from core.data.labels import LabelMap
from core.data.table import read_table
from core.errors import ConfigError, DataError
from core.interface import JobInputs
from core.metrics import FLOOR_MONITOR
from core.prepared import PreparedData


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def validate_inputs(inputs: JobInputs, config: TrainConfig) -> PreparedData:
    """Read and check every input file before any training; raises DataError / ConfigError."""
    cols = {"text_column": inputs.text_column, "label_column": inputs.label_column}
    _check_files_exist(inputs)
    label_map, target = _labels(inputs, config, cols)
    train = load_examples(inputs.train, label_map, role="train", **cols)
    aux = load_examples(inputs.aux, label_map, role="aux", **cols)
    check_aux(aux, label_map, config.min_aux_per_class, str(inputs.aux))
    sources: dict[str, str] = {}

    if inputs.select is not None:
        select = load_examples(inputs.select, label_map, role="select", **cols)
        sources["select"] = f"file {inputs.name('select', Path(inputs.select))}"
    else:
        # Epoch choice needs clean rows never trained on and never reported on: a slice of aux.
        aux, select = stratified_split(aux, config.select_fraction, config.seed)
        sources["select"] = f"aux hold-out ({len(select)} of the aux rows, not used for alignment)"

    if inputs.eval is not None:
        eval_rows = load_examples(inputs.eval, label_map, role="eval", **cols)
        sources["cacc"] = f"eval file {inputs.name('eval', Path(inputs.eval))}"
    else:
        train, eval_rows = stratified_split(train, config.eval_holdout_fraction, config.seed)
        sources["cacc"] = (f"train hold-out ({len(eval_rows)} rows not trained on; untrusted: may "
                           "contain poisoned rows)")

    probes = _load_probes(inputs, config, eval_rows, label_map, target, cols, sources)
    return PreparedData(label_map, target, train, aux, select, eval_rows, probes, sources, _input_hashes(inputs),
                        select_from_aux=inputs.select is None)


def _check_files_exist(inputs: JobInputs) -> None:
    named = [("train", inputs.train), ("aux", inputs.aux), ("eval", inputs.eval), ("select", inputs.select),
             *[(f"probe:{k}", v) for k, v in inputs.probe_files.items()]]
    for role, path in named:
        if path is not None and not Path(path).is_file():
            raise DataError("file not found", file=str(path), role=role)


def _labels(inputs: JobInputs, config: TrainConfig, cols: dict[str, str]) -> tuple[LabelMap, int]:
    """The label map of the training file and the target label's id in it."""
    raw_train = read_table(inputs.train, role="train", **cols)
    label_map = LabelMap.from_labels([r.label for r in raw_train if r.label is not None])
    if len(label_map.id2label) < 2:
        raise DataError("the training file has fewer than 2 distinct labels", file=str(inputs.train),
                        field=inputs.label_column, role="train")
    try:
        target = label_map.resolve_target(str(config.target_label))
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"target_label {config.target_label!r} is not a label of the training file "
                          f"(labels: {sorted(label_map.label2id)})") from exc
    return label_map, target


def _load_probes(inputs: JobInputs, config: TrainConfig, eval_rows: list[Example], label_map: LabelMap,
                 target: int, cols: dict[str, str], sources: dict[str, str]) -> dict[str, list[Example]]:
    """Built-in probes (triggered eval rows) and probe files; notes OpenBackdoor-layout files in ``sources``."""
    from core.attacks.probes import build_probe, load_probe_file
    from core.attacks.triggers import parse_trigger

    probes: dict[str, list[Example]] = {}
    for spec in inputs.probes:
        name, trigger = parse_trigger(spec)
        probes[name] = build_probe(eval_rows, trigger, target, config.seed)
    for name, path in inputs.probe_files.items():
        if name in probes:
            raise ConfigError(f"probe name {name!r} given twice")
        probes[name] = load_probe_file(path, label_map, target, role=f"probe:{name}", **cols)
        if all(r.orig_label is None for r in probes[name]):
            sources[f"probe:{name}"] = (f"all {len(probes[name])} rows of {inputs.name(f'probe:{name}', Path(path))} "
                                        "counted as triggered non-target rows: every row carries the target label "
                                        "and no orig_label column says otherwise (OpenBackdoor's layout)")
    for name, rows in probes.items():
        if name == FLOOR_MONITOR:
            raise ConfigError(f"probe name {name!r} is reserved for the per-epoch ASR floor; pick another")
        if not rows:
            raise ConfigError(f"probe {name!r} has no rows whose true label is not the target")
    return probes


def _input_hashes(inputs: JobInputs) -> dict[str, str]:
    sha = {role: file_sha256(Path(p)) for role, p in
           [("train", inputs.train), ("aux", inputs.aux), ("eval", inputs.eval), ("select", inputs.select)]
           if p is not None}
    sha.update({f"probe:{k}": file_sha256(Path(v)) for k, v in inputs.probe_files.items()})
    return sha
