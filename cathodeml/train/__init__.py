"""Training and testing DeepPot-SE models: config (TOML / DeePMD-kit input.json), data (splits,
batches, statistics), loss (DeePMD-kit's schedule and objective), trainer (the jitted step,
checkpoints), evaluate (`cathodeml test`).  See each module's docstring for the why."""
