"""torch.compile's cache kept apart per ATEN_CPU_CAPABILITY (torch keys its cache without it)."""
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from convnext_dense.runtime.compile_cache import (CACHE_DIR_VARIABLE, CAPABILITY_VARIABLE,
                                                  default_cache_dir,
                                                  keep_compile_cache_per_capability)

ROOT = Path(__file__).resolve().parents[1]
# The backbone compiled, against its eager outputs: the largest error relative to the output's
# largest value, over the four maps.
COMPILE_AND_COMPARE = '''
import torch
from convnext_dense import ConvNeXt
from convnext_dense.runtime.compile_cache import keep_compile_cache_per_capability
print(keep_compile_cache_per_capability())
torch.manual_seed(0)
model = ConvNeXt(arch=dict(depths=(1, 1, 1, 1), channels=(8, 16, 32, 64))).eval()
x = torch.randn(2, 3, 64, 64)
with torch.no_grad():
    want, got = model(x), torch.compile(model)(x)
print(max(((g - w).abs().max() / w.abs().max()).item() for g, w in zip(got, want)))
'''


def test_a_capability_gets_its_own_directory():
    environ = {CAPABILITY_VARIABLE: 'AVX2 '}
    directory = keep_compile_cache_per_capability(environ)
    assert directory == default_cache_dir() + '_aten_avx2'
    assert environ[CACHE_DIR_VARIABLE] == directory


def test_nothing_changes_without_a_capability_or_with_a_directory_set():
    for environ in ({}, {CAPABILITY_VARIABLE: ''},
                    {CAPABILITY_VARIABLE: 'avx2', CACHE_DIR_VARIABLE: '/data/inductor'}):
        before = dict(environ)
        assert keep_compile_cache_per_capability(environ) is None
        assert environ == before


@pytest.mark.slow
@pytest.mark.skipif(platform.machine().lower() not in ('x86_64', 'amd64'),
                    reason='ATEN_CPU_CAPABILITY=avx2 is an x86 capability')
def test_compiled_backbone_is_right_under_a_capability_after_a_native_run(tmp_path):
    """A native process fills the default cache; one under ATEN_CPU_CAPABILITY=avx2 then compiles
    the same graph. Sharing the cache, the second got the first's graph and wrong outputs on an
    AVX-512 CPU (on an AVX2-only CPU both capabilities are the same and any cache would do)."""
    environ = {k: v for k, v in os.environ.items()
               if k not in (CAPABILITY_VARIABLE, CACHE_DIR_VARIABLE)}
    environ['TMPDIR'] = str(tmp_path)  # the default cache directory goes under it
    errors = []
    for capability in (None, 'avx2'):
        env = dict(environ, **({CAPABILITY_VARIABLE: capability} if capability else {}))
        result = subprocess.run([sys.executable, '-c', COMPILE_AND_COMPARE], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        directory, error = result.stdout.split()[-2:]
        errors.append(float(error))
        if capability:
            assert directory.startswith(str(tmp_path)) and directory.endswith('_aten_avx2')
            assert any(Path(directory).iterdir())
        else:
            assert directory == 'None'
    assert max(errors) < 1e-5, errors
