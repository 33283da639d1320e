"""The parts of `scripts/bench`, one module each; `common` and `places` are what they share."""
