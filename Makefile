# One-command setup, tests and demo. Everything installs into .venv from requirements.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt | md5sum | cut -c1-12)
DEMO_DIR ?= demo_out
DEMO_TR ?= tr1
DEMO_METHODS ?= baseline,plc,plc_plus
DEMO_SEED ?= 0
# One runs folder per labeled set and seed: the pipeline refuses workdirs made with other settings.
DEMO_RUNS ?= $(DEMO_DIR)/runs$(if $(filter-out tr1,$(DEMO_TR)),_$(DEMO_TR))$(if $(filter-out 0,$(DEMO_SEED)),_s$(DEMO_SEED))

.PHONY: setup test demo clean

setup: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	rm -f $(VENV)/.installed-* && touch $(STAMP)

test: setup
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -n 2 tests

demo: setup
	$(PY) -m data.synthetic --out_dir $(DEMO_DIR)/raw --num_patients 40 --seed 0
	$(PY) -m data.preprocess --dataset synthetic --raw_dir $(DEMO_DIR)/raw --out_dir $(DEMO_DIR)/preprocessed
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) run_pipeline.py --dataset synthetic --preset demo \
		--data_dir $(DEMO_DIR)/preprocessed --out_dir $(DEMO_RUNS) \
		--no_of_tr_imgs $(DEMO_TR) --comb_tr_imgs c1 --methods $(DEMO_METHODS) --seed $(DEMO_SEED) \
		--export_dir $(DEMO_DIR)/export --in_process

clean:
	rm -rf $(VENV) $(DEMO_DIR)
