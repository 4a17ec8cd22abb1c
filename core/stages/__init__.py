"""The job's stages, one module each, in the order `core/pipeline.py` runs them.

`validate` (input files -> `PreparedData`), `screen` (`PreparedData` -> the screen summary, rows dropped
in place), `train` (-> `DefendedModel`, then `Trained`: the training loop's `TrainOutcome`, whose
`best_epoch` is the epoch the loop chose on the select rows), `export` (-> `Exported`), `evaluate`
(-> `Scored`) and `report` (-> metrics.json). This package imports none of them: import the module you need.
"""
