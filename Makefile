# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of PyTorch unless one is already installed (a GPU user brings their own torch).
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint venv clean default-model browser real-imagery finetune-demo

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q --retries 0 --timeout 20 "$(TORCH_SPEC)" \
		--index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple
	$(PY) -m pip install -q -e ".[test]"
	touch $@

venv: $(VENV)/.installed

# The study on the embedded benchmark (icbench-synth with two failure modes held out of training, generated on first
# use): the MLP baseline and IC-Reward trained over folds and seeds, every offline metric on the same test pairs,
# one table, and a report folder with plots.
demo: venv
	$(VENV)/bin/icreward experiment --out reports/demo

# Retrain the shipped default model from scratch (synthetic data, training, evaluation; about 45 minutes on 2 CPU
# cores) into src/icreward/default_model, with its card.json. Data and run files go to build/default-model.
default-model: venv
	$(PY) -m icreward_recipes.default_model --work build/default-model --out src/icreward/default_model \
		--real-i2v ../shared/real-i2v ../shared/real-i2v-pia --yardstick benchmarks/fixtures/icbench-synth-wave1

# The reward fine-tuning demonstration (about 12 minutes on 2 CPU cores; one thread: the small kernels run faster so,
# and the figures in the README reproduce): a tiny SVD generator trained on synth clips, fine-tuned with the reward
# with and without the guard, judged on held-out images -> reports/finetune/ (results.json, index.html).
finetune-demo: venv real-imagery
	OMP_NUM_THREADS=1 $(PY) -m icreward_recipes.finetune_demo --work build/finetune-demo --out reports/finetune

# Debian's headless Chromium for the browser tests (the report page, the service's /docs); installed where we are
# root, otherwise those tests skip with their reason.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "no chromium: the browser tests will be skipped"

# Real photographs, video clips and emoji sprites from Debian packages (synth --real-share, the default model's recipe);
# installed where we are root, otherwise the tests that need them are skipped with their reason.
real-imagery:
	@[ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] && [ -d /usr/share/doc/opencv-doc/examples/data ] && \
		[ -d /usr/share/backgrounds/mate/nature ] || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		{ DEBIAN_FRONTEND=noninteractive apt-get install -y -qq opencv-doc fonts-noto-color-emoji mate-backgrounds \
		>/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq opencv-doc \
		fonts-noto-color-emoji mate-backgrounds >/dev/null; }; }; } || echo "no real imagery: those tests will be skipped"

test: venv browser real-imagery
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) reports
