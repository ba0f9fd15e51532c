"""Training and testing DeepPot-SE models: config (TOML / DeePMD-kit input.json), data (splits,
batches, statistics), loss (DeePMD-kit's schedule and objective), plan (a run set up from config,
data and checkpoint), step (the jitted optax step on device-resident batches), distributed (several
devices and hosts), trainer (the loop, lcurve and checkpoints), evaluate (`cathodeml test`).  See
each module's docstring for the why."""
