# Every target bootstraps .venv/ at the repo root on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TIMM_TESTS := $(VENV)/timm-tests/test_models.py

.PHONY: demo test test-slow test-gpu test-mm gpu-check lint install

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# exactly these: pip takes them from local disk, other versions download gigabytes
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

# timm's own model test-suite, from the sdist of the installed timm (not vendored here)
$(TIMM_TESTS): $(STAMP)
	$(PY) tools/get_timm_tests.py $(VENV)/timm-tests

install: $(STAMP) $(TIMM_TESTS)

# trains InceptionNeXt-atto on the bundled digits (~1.5 min on a CPU core): validation
# accuracy, runs/demo/metrics.png and runs/demo/confusion_matrix.png. One thread: on a busy
# 2-core machine two OpenMP threads spin-wait for each other and ran 20x slower (measured).
demo: install
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) train.py fit --config configs/classification/demo.yaml

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

test-gpu: install
	$(PY) -m pytest -q -m gpu

# OpenMMLab (mmsegmentation 1.2.2, mmdet 3.3.0, mmengine 0.10.7): installs the `mm` extra into
# .venv and runs tests/mm (marker mm: real UperNet / Mask R-CNN training on tiny generated data).
# mmcv 2.1.0 has no wheel for torch 2.14: tools/build_mmcv.sh builds one from the sdist ONCE per
# machine (~20-40 min on 2 cores) into $ZOO_CACHE_DIR/wheels (~/.cache/lkzoo) and reuses it.
MM_STAMP := $(VENV)/.installed-mm
$(MM_STAMP): $(STAMP) pyproject.toml tools/build_mmcv.sh
	$(PY) -m pip install -q "setuptools<81"
	wheel=$$(PY=$(PY) bash tools/build_mmcv.sh) && $(PY) -m pip install -q --no-deps "$$wheel"
	$(PY) -m pip install -q -e ".[dev,mm]"
	@touch $(MM_STAMP)

test-mm: $(MM_STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q -m mm tests/mm

# On a CUDA machine: the GPU tests, then the op and model benchmarks, written to
# benchmarks/*_cuda.md (device, versions, command). Under 6 minutes on an H100/H200.
gpu-check: install
	bash tools/gpu_check.sh

lint: install
	$(VENV)/bin/ruff check ops zoo tools tests

# OFA-KD vs KD vs no distillation on the bundled digits (~6 min on a CPU core): timm's ResNet-18
# teacher, the zoo's InceptionNeXt-atto student on 200 training images, 3 seeds each; prints the
# table and writes runs/distill_demo/curves.png. One thread, as for `demo`.
.PHONY: distill-demo
distill-demo: install
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) tools/distill_demo.py

# A narrow DeepRFTv2 learns to deblur scikit-image photos blurred by generated camera shake
# (a few CPU minutes); prints restored vs blurry PSNR on held-out photos and writes
# runs/deblur_demo/restoration/*.png. One thread, as for `demo`.
.PHONY: deblur-demo
deblur-demo: install
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) train.py fit --config configs/restoration/deeprftv2_demo.yaml
