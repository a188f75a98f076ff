"""The CPU-dependent tests once more, in a child process limited to AVX2 kernels.

``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2``: torch then
reports ``AVX2`` and oneDNN no bf16, so the fast paths' real decisions, not monkeypatched ones,
take the routes of an AVX2-only CPU (the float32 fallback for bf16 requests, GELU apart from
oneDNN's matmuls, BLAS on Intel). On an AVX-512 CI machine the rest of the suite reaches those
branches only by forcing them, and code outside the fast paths that assumed bf16 kernels (the
benchmark's matmul peak asked oneDNN for bf16) passed there and failed on AVX2 only.
"""
import os
import os.path as osp
import platform
import subprocess
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
AVX2_KERNELS = {'ATEN_CPU_CAPABILITY': 'avx2', 'ONEDNN_MAX_CPU_ISA': 'AVX2',
                'MKL_ENABLE_INSTRUCTIONS': 'AVX2'}
# The tests whose paths depend on the CPU: the backbone's fast paths, the tools that time them,
# export, the channels-last heads and the compile cache (about 75 s with AVX2 kernels).
CPU_DEPENDENT_TESTS = (
    'test_backbone.py', 'test_backbone_arguments.py', 'test_hf_backbone.py', 'test_fast_paths.py',
    'test_cpu_support.py', 'test_column_split.py', 'test_mkl_packed.py', 'test_train_matmuls.py',
    'test_patch_conv.py', 'test_sample_skip.py', 'test_benchmark_tools.py',
    'test_benchmark_gpu_script.py', 'test_deploy_export.py', 'test_deploy_speed.py',
    'test_channels_last.py', 'test_channels_last_roi_align.py', 'test_hf_upernet.py',
    'test_compile_cache.py',
)


def _avx2_env() -> dict:
    return dict(os.environ, **AVX2_KERNELS)


@pytest.mark.slow
def test_cpu_dependent_tests_pass_with_avx2_kernels():
    if platform.machine().lower() not in ('x86_64', 'amd64'):
        pytest.skip(f'needs an x86-64 CPU to limit to AVX2 kernels (this is {platform.machine()})')
    native = torch.backends.cpu.get_cpu_capability()
    if native == 'AVX2' and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        # The child would run the very kernels the suite itself ran (over 3 minutes on a slow
        # AVX2-only EPYC, for nothing).
        pytest.skip('needs a CPU beyond AVX2 (AVX-512) to limit; this one runs AVX2 kernels '
                    'without oneDNN bf16 natively, so the rest of the suite ran these tests on '
                    'the AVX2 routes already')
    probe = subprocess.run(
        [sys.executable, '-c', 'import torch; print(torch.backends.cpu.get_cpu_capability(), '
         'torch.ops.mkldnn._is_mkldnn_bf16_supported())'],
        env=_avx2_env(), capture_output=True, text=True, timeout=120)
    assert probe.stdout.split() == ['AVX2', 'False'], probe.stdout + probe.stderr
    tests = [osp.join('tests', name) for name in CPU_DEPENDENT_TESTS]
    result = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '-m', 'not slow', '-p', 'no:cacheprovider', '-rs',
         *tests], cwd=ROOT, env=_avx2_env(), capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-6000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert ' passed' in summary and 'failed' not in summary, summary
