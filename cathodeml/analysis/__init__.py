"""Ion transport and structure from MD trajectories (`cathodeml analyze`).

Pure functions over arrays, one concern per module, so each piece is tested against an analytic
result or a peer tool on its own and the command only wires them:

- `msd`: unwrapping (image counts or minimum-image fractional steps, triclinic), framework
  centre of mass, FFT MSD over all time origins (`msd_fft`, `self_and_collective_msd`,
  `self_msd_and_particle_msd`, `particle_slopes`); positions Å, times fs, MSD Å².
- `transport`: fit windows, D = slope/(2·dim) (Å²/fs), block and ion-scatter errors, Haven
  ratio, Nernst–Einstein σ (mS/cm), replicas; `Estimate(value, err, unit)`.
- `arrhenius`: weighted fit of ln D or ln σT against 1/T → Eₐ (eV), extrapolation with a CI.
- `rdf`: partial g_ab(r) and coordination numbers under triclinic PBC (`RdfAccumulator`,
  `first_shell`).
- `pipeline`: one streaming pass over a `cathodeml.io.trajectory.Trajectory` →
  `RunAnalysis` (`analyze_trajectory`, `AnalysisSettings`, `parse_fit_window`).
- `plots`: MSD, Arrhenius and RDF figures (matplotlib Agg, written atomically).
- `results`: replicas merged per temperature, the Arrhenius fit over them and earlier points, and
  the results.json / CSV / figure record (`summarize_analysis`, `write_analysis`); the command only
  parses, opens the trajectories and renders.
"""
