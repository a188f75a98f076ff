"""A misspelt config key is named by its config path, with the argument that was meant."""
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.registry import DefaultScope

from convnext_dense.extras.demo.shapes import generate_shapes_dataset
from convnext_dense.runtime.argument_errors import (ConfigArgumentError,
                                                    explain_unexpected_arguments)
from convnext_dense.runtime.config import load_config, task_registry

ROOT = Path(__file__).resolve().parents[1]
DETECTOR = str(ROOT / 'configs/demo/mask-rcnn_convnext-demo_shapes.py')
SEGMENTER = str(ROOT / 'configs/demo/upernet_convnext-demo_shapes.py')


def _build(config, options, registry='MODELS', entry='model'):
    cfg = load_config(config, options)
    scope = cfg.default_scope
    node = cfg
    for name in entry.split('.'):
        node = node[name]
    with DefaultScope.overwrite_default_scope(scope), explain_unexpected_arguments(cfg):
        task_registry(scope, registry).build(node)


@pytest.mark.parametrize('config, option, registry, entry, message', [
    (DETECTOR, 'model.backbon.arch', 'MODELS', 'model',
     r"config entry model\.backbon: MaskRCNN takes no argument 'backbon' \(did you mean "
     r"'backbone'\?\); fix the config file or the --cfg-options item that set it"),
    # RPNHead passes **kwargs on: the error names AnchorHead, the message the entry's class.
    (DETECTOR, 'model.rpn_head.anchor_generatorr', 'MODELS', 'model',
     r"model\.rpn_head\.anchor_generatorr: RPNHead takes no argument 'anchor_generatorr' "
     r"\(did you mean 'anchor_generator'\?\)"),
    (DETECTOR, 'model.backbone.archh', 'MODELS', 'model',
     r"model\.backbone\.archh: ConvNeXt takes no argument 'archh' \(did you mean 'arch'\?\)"),
    (SEGMENTER, 'model.decode_head.channel', 'MODELS', 'model',
     r"model\.decode_head\.channel: UPerHead takes no argument 'channel' \(did you mean "
     r"'channels'"),
    # A dataset's unknown key reaches BaseDataset.
    (DETECTOR, 'train_dataloader.dataset.pipline', 'DATASETS', 'train_dataloader.dataset',
     r"train_dataloader\.dataset\.pipline: CocoDataset takes no argument 'pipline' \(did you "
     r"mean 'pipeline'\?\)"),
])
def test_a_misspelt_key_is_named_with_what_was_meant(config, option, registry, entry, message):
    with pytest.raises(ConfigArgumentError, match=message):
        _build(config, {option: 1}, registry, entry)


def test_a_key_without_a_close_argument_is_named_without_a_guess():
    with pytest.raises(ConfigArgumentError, match=r"model\.neck\.zzz: FPN takes no argument "
                                                  r"'zzz'; fix"):
        _build(DETECTOR, {'model.neck.zzz': 1})


def test_other_type_errors_pass_through():
    cfg = load_config(DETECTOR)
    with pytest.raises(TypeError, match='unsupported operand'):
        with explain_unexpected_arguments(cfg):
            None + 1
    # The argument named is in no entry of the config: the error is not the config's.
    with pytest.raises(TypeError, match="unexpected keyword argument 'elsewhere'") as error:
        with explain_unexpected_arguments(cfg):
            raise TypeError("MaskRCNN.__init__() got an unexpected keyword argument 'elsewhere'")
    assert not isinstance(error.value, ConfigArgumentError)


def test_train_names_a_misspelt_option_in_one_line(tmp_path):
    generate_shapes_dataset(tmp_path / 'shapes', seed=0, num_train=2, num_val=1)
    data_root = tmp_path / 'shapes' / 'ade'
    options = [f'{loader}.dataset.data_root={data_root}'
               for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    result = subprocess.run(
        [sys.executable, 'tools/train.py', SEGMENTER, '--work-dir', str(tmp_path / 'work'),
         '--cfg-options', *options, 'model.decode_head.pool_scale=(1,2)'],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "error: config entry model.decode_head.pool_scale: UPerHead takes no argument "
        "'pool_scale' (did you mean 'pool_scales'?); fix the config file or the --cfg-options "
        'item that set it')
