"""The GPU benchmark script and the backbone work without the OpenMMLab packages.

The GPU machines have torch, transformers and timm but no mmcv, mmdet or mmseg; the script is
checked here on CPU with a tiny backbone (no timing is asserted).
"""
import json
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
from tiny import TINY_ARCH as TINY
BLOCK_OPENMMLAB = '''
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in ('mmcv', 'mmdet', 'mmseg'):
            raise ImportError(f'{name} is blocked: the GPU machines do not have it')
sys.meta_path.insert(0, Block())
'''


def _run_python(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_backbone_imports_and_runs_without_openmmlab():
    result = _run_python(BLOCK_OPENMMLAB + f'''
import torch
from convnext_dense.model.backbone import ConvNeXt
feats = ConvNeXt(arch={TINY!r})(torch.rand(1, 3, 64, 64))
assert [f.shape[1] for f in feats] == [16, 32, 64, 128]
print(sorted(m for m in sys.modules if m.split('.')[0] in ('mmcv', 'mmdet', 'mmseg')))
''')
    assert result.stdout.strip().splitlines()[-1] == '[]'


def test_blocker_really_blocks():
    result = subprocess.run([sys.executable, '-c', BLOCK_OPENMMLAB + 'import mmdet'], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and 'blocked' in result.stderr


def test_gpu_script_runs_on_cpu_without_openmmlab(tmp_path):
    out = tmp_path / 'gpu.json'
    _run_python(BLOCK_OPENMMLAB + f'''
import runpy
sys.argv = ['tools/benchmark_gpu.py', '--tiny', '--json', {str(out)!r}]
runpy.run_path('tools/benchmark_gpu.py', run_name='__main__')
''')
    results = json.loads(out.read_text())
    names = {row['name'] for row in results['rows']}
    for impl in ('ours', 'huggingface'):
        for precision in ('fp32', 'tf32', 'bf16-autocast', 'bf16-cast'):
            assert f'{impl}+channels_last/{precision}' in names
    for row in results['rows']:
        assert row['images_per_s'] > 0
        if row['case']['task'] == 'infer':
            assert row['agrees'], row  # the same weights give the same features
