# Two commands on a fresh machine:  make demo   and   make test
# Both create .venv, install torch 2.13.0 (CPU build) first, then the package under a torch
# constraint so that nothing can replace it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   := out/demo
SIMS   := $(BIN)/simsurrogate

.PHONY: setup test lint demo demo-nbody clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "setuptools>=77.0.3" wheel
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test]"
	touch $@

setup: $(STAMP)

lint: setup
	$(BIN)/ruff check simsurrogate tests benchmarks
	$(BIN)/ruff format --check simsurrogate tests benchmarks

test: setup lint
	$(BIN)/python -m pytest -q

# The main job on a small default: flow past a cylinder (about 2 minutes on 2 cores). Solve a
# fresh trajectory with the FEM generator (parameters never seen in training), roll the shipped
# MeshGraphNet out over all of it, and write metrics, a figure, an animation and ParaView files.
demo: setup
	$(SIMS) data generate cylinder-flow --out $(DEMO)/data --n-train 0 --n-valid 0 --n-test 1 --seed 1
	$(SIMS) data validate $(DEMO)/data/test.h5
	$(SIMS) rollout --checkpoint checkpoints/cylinder_mgn/model.ckpt --data $(DEMO)/data/test.h5 \
		--trajectory 0 --steps 599 --out $(DEMO)/rollout
	@echo "demo outputs under $(DEMO)/rollout/: metrics.json, rollout.png, rollout.gif, rollout.xdmf"

# The first slice, charged N-body (about 3 minutes): generate data, train EGNN briefly, test it,
# roll it out.
NBODY := out/demo_nbody
demo-nbody: setup
	$(SIMS) data generate nbody --out data/nbody
	$(SIMS) data validate data/nbody/test.h5
	$(SIMS) fit --config recipes/equivariant/nbody_egnn.yaml --config recipes/equivariant/demo.yaml
	$(SIMS) test --config recipes/equivariant/nbody_egnn.yaml --config recipes/equivariant/demo.yaml \
		--trainer.logger false --ckpt_path $(NBODY)/checkpoints/best.ckpt
	$(SIMS) rollout --checkpoint $(NBODY)/checkpoints/best.ckpt --data data/nbody/test.h5 \
		--trajectory 0 --start 0 --steps 4 --out $(NBODY)/rollout
	@echo "demo outputs under $(NBODY)/: logs/curves.png, test_metrics.json, rollout/"

clean:
	rm -rf $(VENV) out
