"""One module per defense family; each registers its `DefenseSpec`s with `register_defense` at import.

`core.defenses.registry` imports every module here (no list to update): a new defense is a new file.
Keep these modules free of torch imports at module level (``core.config`` reads the registry).
"""
