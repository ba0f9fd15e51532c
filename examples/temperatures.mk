# A temperature series with `make -j`: one MD run per temperature in parallel, then one analysis
# (MSD, D, σ, Haven ratio, Arrhenius Eₐ) over all of them.  A finished run leaves a traj_<T>K.done
# stamp and is not rerun; a run that stopped (wall time, Ctrl-C, a crash) continues from its
# checkpoint traj_<T>K.h5.ckpt when make is called again.
#
#   make -j 6 -f examples/temperatures.mk MODEL=model.h5 STRUCTURE=POSCAR SUPERCELL=4x4x2 OUT=series
#   make -j 2 -f examples/temperatures.mk MODEL=results/model.h5 STRUCTURE=results/data.h5:Li1Ni2O4:4 \
#        MD_ARGS="--steps 100 --stride 2 --supercell 1x2x1 --magmom Ni=0.82" ANALYZE_ARGS="--fit-window 0.2T:0.6T"
#
# Defaults come from examples/md_preset.sh (1 fs, Tdamp 100 fs, 298–373 K in six steps, 5.5 ns).
# One GPU per run: set CUDA_VISIBLE_DEVICES per job yourself, or use examples/slurm_md_array.sh.

CATHODEML    ?= cathodeml
PRESET_FILE  ?= $(dir $(lastword $(MAKEFILE_LIST)))md_preset.sh
TEMPERATURES ?= $(shell . ./$(PRESET_FILE) && echo $$MD_TEMPERATURES)
MD_ARGS      ?= $(shell . ./$(PRESET_FILE) && echo $$MD_ARGS)
ANALYZE_ARGS ?= $(shell . ./$(PRESET_FILE) && echo $$ANALYZE_ARGS)
MODEL        ?= model.h5
STRUCTURE    ?= POSCAR
SUPERCELL    ?=
MAGMOM       ?=
OUT          ?= series

EXTRA := $(if $(SUPERCELL),--supercell $(SUPERCELL)) $(if $(MAGMOM),--magmom $(MAGMOM))
TRAJS := $(foreach T,$(TEMPERATURES),$(OUT)/traj_$(T)K.h5)
DONE  := $(TRAJS:.h5=.done)

.PHONY: all trajectories
all: $(OUT)/analysis/results.json
trajectories: $(DONE)

$(OUT)/traj_%K.done: $(MODEL)
	@mkdir -p $(OUT)
	if [ -e $(OUT)/traj_$*K.h5.ckpt ] && [ -e $(OUT)/traj_$*K.h5 ]; then again=--restart; else again=--overwrite; fi; \
	$(CATHODEML) md $(MODEL) $(STRUCTURE) -T $* $(MD_ARGS) $(EXTRA) $$again -o $(OUT)/traj_$*K.h5 --quiet
	touch $@

$(OUT)/analysis/results.json: $(DONE)
	$(CATHODEML) analyze $(TRAJS) $(ANALYZE_ARGS) -o $(OUT)/analysis
