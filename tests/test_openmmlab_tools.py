"""mmdet's and mmseg's own tools (shipped inside the installed packages, under ``.mim/tools``)
take this package's configs: their ``custom_imports`` register the backbone there too."""
import subprocess
import sys
from pathlib import Path

import mmdet
import mmseg
import pytest

from convnext_dense.extras.demo import generate_shapes_dataset

ROOT = Path(__file__).resolve().parents[1]
MMDET_TOOLS = Path(mmdet.__file__).parent / '.mim' / 'tools'
MMSEG_TOOLS = Path(mmseg.__file__).parent / '.mim' / 'tools'


def _run(tool: Path, *args, cwd: Path):
    # In a scratch directory: mmseg's print_config.py writes example.py where it runs.
    result = subprocess.run([sys.executable, str(tool), *map(str, args)], cwd=cwd,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize('tools, config', [
    (MMDET_TOOLS, 'configs/cascade_mask_rcnn/'
                  'cascade-mask-rcnn_convnext-b-in22k_fpn_4conv1fc-giou_ms-crop-3x_coco.py'),
    (MMSEG_TOOLS, 'configs/upernet/upernet_convnext-b-in22k_8xb2-160k_ade20k-640x640.py'),
])
def test_print_config_resolves_the_configs(tools, config, tmp_path):
    out = _run(tools / 'misc' / 'print_config.py', ROOT / config, cwd=tmp_path)
    assert "type='convnext_dense.ConvNeXt'" in out and "arch='base'" in out


def test_mmdet_browse_dataset_draws_the_demo_data(tmp_path):
    generate_shapes_dataset(tmp_path / 'shapes', seed=5, num_train=3, num_val=1)
    coco = tmp_path / 'shapes' / 'coco'
    _run(MMDET_TOOLS / 'analysis_tools' / 'browse_dataset.py',
         ROOT / 'configs/demo/mask-rcnn_convnext-demo_shapes.py', '--not-show', '--output-dir',
         tmp_path / 'drawn', '--cfg-options', f'train_dataloader.dataset.data_root={coco}/',
         cwd=tmp_path)
    assert len(list((tmp_path / 'drawn').glob('*.jpg'))) == 3
