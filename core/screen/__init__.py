"""The screen stage: find poisoned rows in an untrusted training file before training (docs/screen.md)."""
