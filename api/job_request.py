"""The JSON body of POST /jobs: file ids plus the training settings at the top level.

The settings are TrainConfig's own fields (same names, types and descriptions), each optional: a field
left out takes the profile's value. The multipart form's `config` field takes the same keys.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from api.errors import ApiError
from core.config import TrainConfig


class JobFiles(BaseModel):
    model_config = ConfigDict(extra="forbid")

    training_file: str = Field(description="id of the untrusted (possibly poisoned) training file "
                                           "(purpose train)")
    aux_file: str = Field(description="id of the small trusted clean file (purpose aux)")
    eval_file: str | None = Field(None, description="id of a clean test file for CACC (purpose eval); "
                                                   "without it a slice of the training rows is held out")
    probe_files: dict[str, str] = Field(default_factory=dict, description="triggered test sets for ASR: "
                                        "{probe name: file id} (purpose probe)")
    probes: list[str] = Field(default_factory=list, description='built-in probes: "badnets", "addsent" or '
                              "'insert:\"some text\"'")
    text_column: str = Field("text", description="column holding the text")
    label_column: str = Field("label", description="column holding the label")
    metadata: dict[str, str] = Field(default_factory=dict, description="up to 16 string pairs, kept with the job")


def _setting(name: str) -> tuple[Any, Any]:
    field = TrainConfig.model_fields[name]
    annotation: Any = field.annotation
    if name == "target_label":
        annotation = str | int  # labels in the files may be integers
    return annotation | None, Field(None, description=field.description)


JobCreate = create_model(  # type: ignore[call-overload]
    "JobCreate", __base__=JobFiles, __doc__="A job from uploaded files (POST /files) and training settings.",
    **{name: _setting(name) for name in TrainConfig.model_fields})

ROLES = {"training_file": "train", "aux_file": "aux", "eval_file": "eval"}


def parse_body(payload: Any) -> Any:
    """Validate a JSON body; the first problem is answered 422 naming its field."""
    try:
        return JobCreate.model_validate(payload)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise ApiError(422, "invalid_request", f"{where}: {err['msg']}", param=where) from exc


def settings_of(body: Any) -> dict[str, Any]:
    """What the client set, as the multipart `config` object would hold it (file ids left out)."""
    sent = body.model_dump(exclude_unset=True)
    return {k: v for k, v in sent.items() if k not in ROLES and k != "probe_files"}


def file_ids(body: Any) -> dict[str, str]:
    """Role (train, aux, eval, probe:NAME) -> file id."""
    # `is not None`: an empty id is a missing file (422), not a field left out (found by fuzzing: a 500)
    ids = {role: getattr(body, field) for field, role in ROLES.items() if getattr(body, field) is not None}
    ids.update({f"probe:{name}": fid for name, fid in body.probe_files.items()})
    return ids


def openapi_components() -> dict[str, Any]:
    """JobCreate and the multipart form, for the OpenAPI document (POST /jobs reads its body itself)."""
    schema = JobCreate.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.pop("$defs", {})
    components["JobCreate"] = schema
    components["JobUpload"] = {
        "title": "JobUpload", "type": "object", "required": ["train", "aux"],
        "description": "One-shot form: the files themselves (each registered under /files) and the settings.",
        "properties": {
            "train": {"type": "string", "format": "binary", "description": "the untrusted training set"},
            "aux": {"type": "string", "format": "binary", "description": "a small trusted clean set"},
            "eval": {"type": "string", "format": "binary", "description": "clean test set for CACC"},
            "probe_file": {"type": "array", "items": {"type": "string", "format": "binary"},
                           "description": "triggered test sets, repeatable; each named by its file name stem"},
            "config": {"type": "string", "description": "JSON object: the JobCreate settings (any TrainConfig "
                       "field, probes, metadata, text_column, label_column)"},
        },
    }
    return components
