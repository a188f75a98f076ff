# `make install` builds .venv/ in the order the OpenMMLab stack needs; `make test` and `make demo` use it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
PINS := -c requirements/constraints.txt
STAMP := $(VENV)/.installed
# PyPI's x86-64 torch is the CUDA build (~5.5 GB with its libraries); PyTorch's CPU index has the
# CPU one. Where that index cannot be reached, torch comes from pip's own sources (a local wheel,
# a mirror): pip would retry the index for every dependency, over a minute.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
REACHES_TORCH_INDEX := $(PY) -c "import urllib.request as r; r.urlopen('$(TORCH_INDEX)', timeout=5)"

.PHONY: install test demo clean-venv

install: $(STAMP)

$(STAMP): Makefile setup.py requirements/constraints.txt requirements/runtime.txt requirements/tests.txt requirements/deploy.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	if $(REACHES_TORCH_INDEX) 2>/dev/null; then \
		$(PIP) install $(PINS) --extra-index-url $(TORCH_INDEX) torch; \
	else \
		echo "$(TORCH_INDEX) cannot be reached: torch from pip's configured sources"; \
		$(PIP) install $(PINS) torch; \
	fi
	# mmcv's setup.py imports pkg_resources: setuptools<70 must be there before it builds.
	$(PIP) install $(PINS) "setuptools<70" wheel ninja
	$(PIP) install $(PINS) mmengine
	# PyPI has only the sdist of mmcv 2.1.0; it compiles the CPU ops (about 6 minutes, cached by pip).
	$(PIP) install $(PINS) --no-build-isolation mmcv
	# torch needs setuptools>=77.0.3; mmengine finds mmdet::/mmseg:: configs via pkg_resources (<81).
	$(PIP) install $(PINS) "setuptools>=77.0.3,<81"
	$(PIP) install $(PINS) -r requirements/runtime.txt
	$(PIP) install $(PINS) --no-build-isolation --no-deps -e .
	$(PIP) install $(PINS) -r requirements/tests.txt
	# The `deploy` extra (onnx, onnxruntime): the export tests run it.
	$(PIP) install $(PINS) -r requirements/deploy.txt
	$(PY) -c "import mmcv.ops, mmdet, mmseg, convnext_dense, onnxruntime"
	touch $(STAMP)

test: install
	$(PY) -m pytest tests

demo: install
	$(PY) tools/demo.py

clean-venv:
	rm -rf $(VENV)
