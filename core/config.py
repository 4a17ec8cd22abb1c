"""Training configuration: one pydantic model, resolved from a named profile plus overrides.

`reference` reproduces the authors' code (docs/reference-implementation.md §2-3, §8). `default` starts as a
copy and is what the efficacy work tunes. Every field is recorded, fully resolved, in metrics.json.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.defenses.registry import defense_names, defenses

# The methods are the registered defenses (`core.defenses.registry`, one module each in core/defenses/kinds/).
METHODS: tuple[str, ...] = defense_names()
Method = Literal[METHODS]  # type: ignore[valid-type]

# Which building blocks each method switches on (reference-implementation.md §2.4).
METHOD_PARTS: dict[str, dict[str, bool]] = {spec.name: spec.parts for spec in defenses()}


def _roles(*roles: str) -> dict[str, Any]:
    return {"roles": list(roles)}


# What a field is, as metadata on the field (`fields_with`): `runtime` fields may differ between a run and
# its resume (they do not change the training trajectory); `canary` fields are calibration's own (spent
# before the shipped run trains); `fixed` fields change the data, the backbone or the run's bookkeeping, so a
# canary grid may not vary them.
RUNTIME, FIXED, RUNTIME_FIXED, CANARY = _roles("runtime"), _roles("fixed"), _roles("runtime", "fixed"), _roles("canary")


class TrainConfig(BaseModel):
    """Everything that decides a training run. Unknown keys are refused (typos must not pass silently)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), use_attribute_docstrings=True)

    profile: Literal["default", "reference"] = Field("default", json_schema_extra=FIXED)
    """Preset the run started from: reference = the authors' code, default = tuned for MiniLM-sized encoders."""
    method: Method = "vanilla"
    """Defense: muscle, vanilla (full fine-tuning), lora, adapter, prefix, or an ablation."""
    model: str = Field("minilm", json_schema_extra=FIXED)
    """Backbone: minilm (packaged all-MiniLM-L6-v2), a hub id or a local folder."""
    seed: int = 42
    """Seed for initialisation, shuffling and sampling; the same seed gives the same result on CPU."""
    epochs: int = Field(3, ge=1, le=1000)
    """Training epochs."""
    batch_size: int = Field(32, ge=1)
    """Training rows per step."""
    eval_batch_size: int = Field(128, ge=1, json_schema_extra=RUNTIME)
    """Rows per evaluation batch (length-sorted)."""
    max_length: int = Field(512, ge=8)
    """Tokens per row after truncation."""
    lr: float = Field(2e-5, gt=0)
    """Peak learning rate (AdamW, linear decay to zero)."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    warmup_ratio: float = Field(0.0, ge=0, le=1)
    """Share of steps with linear warm-up."""
    grad_clip: float = Field(1.0, ge=0)  # 0 disables clipping
    """Gradient-norm clipping after alignment; 0 switches it off."""
    target_label: str = Field("1", json_schema_extra=RUNTIME_FIXED)
    """The attack's target class: ASR counts rows of other classes predicted as this one."""

    # LoRA (PEFT) on the attention query/value projections.
    lora_r: int = Field(8, ge=1)
    """LoRA rank."""
    lora_alpha: float = Field(32, gt=0)
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the LoRA path."""
    lora_targets: list[str] | None = None  # None: per-family default (query/value, q_proj/v_proj)
    """Module names LoRA wraps; null = the family default (query/value)."""

    # Multi-scale low-rank module on the penultimate dense layer: h = W0 x + a * R (S * (L x)).
    mslr_scales: list[float] | None = None  # None: per-family default (paper Table 6 / rule)
    """Radial scaling factors S of the multi-scale module; null = the family default."""
    mslr_rank: int = Field(1, ge=1)  # bandwidth: each scale repeated this many times
    """Bandwidth: each scale repeated this many times."""
    mslr_alpha: float = Field(6.0, gt=0)  # multiplier alpha/rank on the MSLR path
    """Multiplier of the multi-scale path (alpha / mslr_rank)."""
    # zero: the authors' random update saturates MiniLM's pooler (bench/notes/muscle-efficacy-study.md)
    mslr_init: Literal["kaiming", "zero"] = "zero"
    """Initialisation of the multi-scale factors: kaiming (authors, non-zero) or zero (R = 0, paper)."""

    # Head: the authors freeze the randomly initialised classifier whenever LoRA is on. `probe` starts the
    # output layer from a logistic regression on the clean aux rows' features instead (still frozen
    # unless train_head).
    train_head: bool = False
    """Train the classification head (the authors freeze it whenever LoRA is on)."""
    head_init: Literal["random", "probe"] = "random"
    """Head start: random, or probe = a logistic regression on the clean aux rows' features."""

    # Gradient alignment.
    ga_granularity: Literal["per_tensor", "global", "per_row"] = "per_tensor"
    """Gradient alignment per parameter tensor (authors), once over the whole gradient, or per matrix row."""
    # no gate: the gate's raw steps are where the backdoor leaks in (bench/notes/muscle-efficacy-study.md)
    ga_gate_loss: float | None = None
    """Clean-loss gate: pure alignment while the clean batch loss is above this; null = no gate."""
    ga_min_ref_grad_norm: float = 5e-7
    """Below this mean clean-gradient norm the gate counts the clean gradient as zero."""
    # once the few aux rows saturate the pooler's tanh (float32 tanh' = 0), g_c is zero and the authors'
    # code keeps that tensor's raw, poisoned gradient; skip takes no step there
    ga_no_direction: Literal["keep_raw", "skip"] = "skip"
    """When a tensor's clean gradient gives no direction (none, or a norm at most ga_min_ref_grad_norm):
    keep_raw = keep its raw training gradient (authors), skip = no aligned update (Eq. 8 with g_a = 0)."""
    mu_max: float = Field(0.0, ge=0, le=1)  # AdamW scales a small raw share up to full-sized steps
    """Largest share of the raw gradient mixed into the aligned one (Eq. 8)."""
    mu_start_epoch: int = Field(1, ge=0)  # GAEpoch
    """First 0-based epoch with mu > 0."""
    mu_schedule: Literal["per_epoch", "linear_step"] = "per_epoch"
    """How mu grows: per_epoch (authors) or linear_step (paper)."""
    aux_batch_size: int = Field(32, ge=1)  # one clean minibatch per step
    """Clean auxiliary rows in the reference batch of each step."""
    # ~100 trusted rows are soon fitted and their gradient vanishes (bench/notes/muscle-efficacy-study.md);
    # the rows the screen kept are many more and, bar what it missed, clean.
    ga_reference: Literal["aux", "kept"] = "aux"
    """The clean rows gradient alignment aligns to: the trusted aux rows (authors), or the kept rows, those
    the job trains on after the screen (so it needs the screen on)."""
    # ours: an average of g_c over steps is never exactly zero once the aux rows are fitted, and varies less
    # from step to step than one batch's g_c. It holds clean-label Badnets out on full SST-2 but costs clean
    # accuracy (MiniLM: about 66% on the selection rows after two epochs, 75-78% without it; the runs are in
    # bench/notes/muscle-efficacy-study.md), so it is off in both profiles.
    ga_ref_momentum: float = Field(0.0, ge=0, lt=1)
    """Align to a moving average of the clean gradient (this share of the previous average kept each
    step); 0 = the current clean batch's gradient (authors)."""

    # Adapter / prefix baselines.
    adapter_bottleneck: int = Field(8, ge=1)
    """Bottleneck width of the adapter baseline."""
    prefix_tokens: int = Field(8, ge=1)
    """Virtual tokens of the prefix-tuning baseline."""

    # Canary calibration (issue: estimate backdoor suppression on the user's own data). A secret synthetic
    # trigger is planted in a copy of the training data; a first run reads its ASR per epoch on held-back
    # clean rows; the shipped model is trained again without it.
    canary: bool = Field(False, json_schema_extra=CANARY)
    """Calibrate with a secret planted canary trigger: choose the epoch (and grid point) by canary ASR."""
    canary_rate: float = Field(0.05, gt=0, lt=0.5, json_schema_extra=CANARY)
    """Share of training rows that get the canary trigger (in the calibration copy only)."""
    # epochs above this canary ASR are not chosen
    canary_max_asr: float = Field(0.2, ge=0, le=1, json_schema_extra=CANARY)
    """Epochs and settings whose canary lift (or ASR, see canary_criterion) is above this are not chosen."""
    canary_criterion: Literal["lift", "asr"] = Field("lift", json_schema_extra=CANARY)
    """What canary_max_asr bounds: lift = canary ASR minus the ASR of never-planted decoy tokens of the same
    kind (class bias and the effect of inserting random strings), asr = the canary ASR itself."""
    # e.g. {"lr": [1e-4, 3e-4], "mu_max": [0, 0.05]}
    canary_grid: dict[str, list[Any]] | None = Field(None, json_schema_extra=CANARY)
    """Optional settings grid the canary chooses from, e.g. {"lr": [1e-4, 3e-4]}."""
    # ship this epoch instead of the best select accuracy
    fixed_epoch: int | None = Field(None, ge=1, json_schema_extra=FIXED)
    """Ship this epoch instead of the one with the best selection accuracy."""

    # Frequency-space analysis (paper §3, Appendix A): LFR/HFR and relative errors of the clean mapping
    # (select rows) and the backdoor mapping (the first probe, else training rows marked `poisoned`)
    # every `frequency_every` steps of the first `frequency_epochs` epochs; 0 switches it off.
    frequency_every: int = Field(0, ge=0, json_schema_extra=RUNTIME)
    """Record frequency-space metrics every N steps; 0 switches the analysis off."""
    frequency_epochs: int = Field(10, ge=1, json_schema_extra=RUNTIME)
    """Record them during the first this-many epochs only."""
    # paper's squared distance instead of the authors' plain distance
    frequency_squared: bool = Field(False, json_schema_extra=RUNTIME)
    """Squared distances in the kernel (paper) instead of plain ones (authors' code)."""
    # per set; the kernel is rows x rows
    frequency_max_rows: int | None = Field(512, ge=2, json_schema_extra=RUNTIME)
    """Rows per set in the frequency analysis (the kernel is rows x rows)."""

    # Data handling.
    # share of aux held back for epoch choice w/o --select
    select_fraction: float = Field(0.25, gt=0, lt=1, json_schema_extra=RUNTIME_FIXED)
    """Share of the aux rows held back for epoch choice when no --select file is given."""
    # share of train held back as eval w/o --eval
    eval_holdout_fraction: float = Field(0.1, gt=0, lt=1, json_schema_extra=RUNTIME_FIXED)
    """Share of training rows held back as the eval set when no --eval file is given."""
    min_aux_per_class: int = Field(2, ge=1, json_schema_extra=RUNTIME_FIXED)
    """Fewest clean aux rows each class must have."""

    # Screen: find and drop poisoned training rows before any training (core/screen).
    screen: bool = True
    """Screen the training file for poisoned rows and train on the rest; false trains on every row."""
    screen_fdr: float = Field(0.05, gt=0, lt=1)
    """Expected share of natural features among the screen's suspects (Benjamini-Hochberg level)."""
    screen_purity: float = Field(0.6, gt=0, lt=1)
    """A suspect's label purity must exceed its class's base rate plus this share of the way to 1 (or, if
    higher, the typical purity of the file's own words associated with the class)."""
    screen_budget: float = Field(0.03, ge=0, lt=1)
    """Most rows, as a share of the file, removed on suspects the aux rows can neither confirm nor clear."""
    screen_min_rows: int = Field(5, ge=2)
    """Fewest untrusted rows a feature needs before the screen tests it."""
    screen_expand: bool = False
    """Experimental: also remove rows like those removed on confirmed suspects (a cross-fitted linear model
    on their other features, thresholded at the trusted rows' highest score). Off by default: on SST-2 it
    added little recall and cost 1-3% of clean rows (bench/results/screen_lexical_expand.json)."""
    screen_learned: bool = False
    """Experimental: after the lexical screen, a cross-fitted one-epoch bait run that drops groups of rows
    (k-means in the bait model's representation, per class) the trusted aux rows avoid. About one epoch of
    training; off by default (docs/screen.md: on HiddenKiller it removed as many clean rows as poisoned)."""
    screen_clusters: int = Field(4, ge=2, le=64)
    """Clusters per class in the learned screen."""
    screen_content: bool = True
    """After the lexical screen, the content screen: features whose rows carry a label more often than a
    content model (a logistic regression on the backbone's frozen sentence embeddings, cross-fitted on the
    kept rows) expects, tested at `screen_fdr` (docs/screen.md). One forward pass over the file; it stands
    down when the embeddings read the aux rows worse than a bag of words does."""
    screen_content_budget: float = Field(0.15, ge=0, lt=1)
    """Most rows, as a share of the file, the content screen removes: a bound on what a content model that
    misreads the file (another language, texts far longer than max_length) can cost."""
    screen_relabel: bool = True
    """Counter-examples: the removed rows that no token of their own explains (a style's or a template's
    rows, found by a mark of the sentence's form) and that the content screen's reader (fitted on the kept
    rows) reads as another class go back into training with that class, so a trigger the screen found only
    in part stops meaning the target label. Rows a word or character removed stay out: back with another
    label they would teach that token as its cue (docs/screen.md). Needs `screen_content` and a reader that
    passed its check."""

    # Runtime.
    device: str = Field("auto", json_schema_extra=RUNTIME_FIXED)  # auto | cpu | cuda | cuda:N
    """auto, cpu, cuda or cuda:N."""
    # autocast on CUDA only
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", json_schema_extra=RUNTIME_FIXED)
    """auto, fp32, bf16 or fp16; autocast applies on CUDA only."""
    checkpoint_every_epoch: bool = Field(True, json_schema_extra=RUNTIME_FIXED)
    """Write a resumable checkpoint after every epoch."""

    @field_validator("target_label", mode="before")
    @classmethod
    def _label_as_text(cls, value: Any) -> Any:
        # labels in the files may be integers: {"target_label": 1} means the label "1"
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.mslr_scales is not None and not self.mslr_scales:
            raise ValueError("mslr_scales must not be empty")
        if self.ga_reference == "kept" and not self.screen and self.parts["ga"]:
            raise ValueError("ga_reference=kept aligns to the rows the screen kept; with screen=false they are "
                             "the untrusted rows themselves: set ga_reference=aux or turn the screen on")
        return self

    @property
    def parts(self) -> dict[str, bool]:
        return METHOD_PARTS[self.method]


# The class's defaults are the `default` profile: the default job is the screen and a short full fine-tune
# (method vanilla, 3 epochs, lr 2e-5; bench/results/efficacy.md). `reference` is the authors' code
# (reference-implementation.md §8): the differences from those defaults. Llama-family values are applied per
# family by the pipeline when the profile is `reference` (LLAMA_REFERENCE).
REFERENCE: dict[str, object] = {
    "method": "muscle",
    "epochs": 10,
    "mslr_init": "kaiming",
    "ga_gate_loss": 0.4,
    "ga_no_direction": "keep_raw",
    "mu_max": 0.1,
    "screen": False,  # the authors train on every row
}
PROFILES: dict[str, dict[str, object]] = {"reference": REFERENCE, "default": {}}

# Values a profile gives one method before the caller's overrides (each defense's `profile_values`). Under
# `default`, the low-rank methods (LoRA, MSLR) take a larger lr for their smaller updates and the other
# baselines the authors' 10 epochs.
PROFILE_METHOD_VALUES: dict[str, dict[str, dict[str, object]]] = {
    profile: {spec.name: dict(spec.profile_values[profile]) for spec in defenses() if profile in spec.profile_values}
    for profile in PROFILES}


def fields_with(role: str) -> frozenset[str]:
    """The TrainConfig fields with this role in their metadata (`runtime`, `canary`, `fixed`)."""
    return frozenset(name for name, info in TrainConfig.model_fields.items()
                     if role in (info.json_schema_extra or {}).get("roles", ()))  # type: ignore[union-attr]


# Canary calibration's own settings: spent before the shipped run trains (they pick `fixed_epoch`), so they
# neither block a resume nor may a canary grid vary them.
CANARY_FIELDS: tuple[str, ...] = tuple(sorted(fields_with("canary")))

# Llama-family settings of the authors' code (r 2, alpha 8, mu_max 0, no gate, batch 16, lr 1e-5, 5 epochs).
LLAMA_REFERENCE: dict[str, object] = {
    "lora_r": 2,
    "lora_alpha": 8,
    "mslr_alpha": 4.0,
    "mu_max": 0.0,
    "mu_start_epoch": 0,
    "ga_gate_loss": 0.0,
    "batch_size": 16,
    "aux_batch_size": 16,
    "lr": 1e-5,
    "epochs": 5,
    "max_length": 4096,
}


def resolve_config(profile: str = "default", overrides: dict[str, object] | None = None) -> TrainConfig:
    """Profile values, then the caller's overrides, validated together (None is a real value: e.g.
    `ga_gate_loss=None` switches the gate off; callers drop options the user did not give)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    overrides = overrides or {}
    values: dict[str, object] = dict(PROFILES[profile])
    values["profile"] = profile
    method = overrides.get("method", values.get("method", TrainConfig.model_fields["method"].default))
    values.update(PROFILE_METHOD_VALUES[profile].get(str(method), {}))
    values.update(overrides)
    if values.get("screen") is False and "ga_reference" not in overrides:
        values["ga_reference"] = "aux"  # no kept rows to align to: a profile's choice yields to the user's
    return TrainConfig(**values)
