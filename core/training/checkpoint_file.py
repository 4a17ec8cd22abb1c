"""Checkpoint files in safetensors: the tensors as tensors, everything else as JSON in the file's metadata.

Nothing a job wrote is ever unpickled. Any nesting of dicts, lists, tuples, numbers, strings, None and
tensors round-trips; dicts with non-string keys (an optimizer's per-parameter state) and tuples (Python's
random state) keep their types. Writes go to a temporary file that is fsynced and then moved into place,
so a kill never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

META_KEY = "muscle"


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().to("cpu").contiguous().clone()
        if value.is_contiguous():
            return {"__tensor__": key}
        # the layout is restored on load: sums over a tensor may run in another order otherwise
        return {"__tensor__": key, "stride": list(value.stride())}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {"__dict__": {k: _encode(v, tensors) for k, v in value.items()}}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_encode(v, tensors) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint")


def _decode(value: Any, tensors: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if isinstance(value, dict):
        if "__tensor__" in value:
            # a fresh, aligned copy: reductions over a tensor read from the file's buffer may take another
            # vectorised path (and round differently) than over one the run allocated itself
            tensor = tensors.get_tensor(value["__tensor__"]).clone()
            if "stride" not in value:
                return tensor
            return torch.empty_strided(tensor.shape, value["stride"], dtype=tensor.dtype).copy_(tensor)
        if "__dict__" in value:
            return {k: _decode(v, tensors) for k, v in value["__dict__"].items()}
        if "__items__" in value:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in value["__items__"]}
        if "__tuple__" in value:
            return tuple(_decode(v, tensors) for v in value["__tuple__"])
    return value


def save_checkpoint(obj: dict[str, Any], path: Path) -> None:
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    meta = json.dumps(_encode(obj, tensors))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file(tensors, str(tmp), metadata={META_KEY: meta})
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as fh:
        meta = (fh.metadata() or {}).get(META_KEY)
        if meta is None:
            raise ValueError(f"{path} is not a checkpoint of this engine")
        return _decode(json.loads(meta), fh)
