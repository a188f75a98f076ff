"""Demo-size models with weights spread enough that their predictions are distinct, and the data."""
import json
from pathlib import Path

import torch
from mmengine.config import Config

from convnext_dense.deploy.export import build_model
from convnext_dense.runtime.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DET_CONFIG = ROOT / 'configs/demo/mask-rcnn_convnext-demo_shapes.py'
SEG_CONFIG = ROOT / 'configs/demo/upernet_convnext-demo_shapes.py'
CASCADE_CONFIG = ROOT / ('configs/cascade_mask_rcnn/'
                         'cascade-mask-rcnn_convnext-b-in22k_fpn_4conv1fc-giou_ms-crop-3x_coco.py')


def with_data_root(config: Path, task: str, shapes_root: Path, out_file: Path) -> Path:
    """``config`` reading the shapes dataset at ``shapes_root``, written to ``out_file``."""
    cfg = load_config(str(config))
    if task == 'det':
        root = f'{shapes_root}/coco/'
        cfg.test_dataloader.dataset.data_root = root
        cfg.test_evaluator.ann_file = root + 'annotations/instances_val.json'
    else:
        cfg.test_dataloader.dataset.data_root = f'{shapes_root}/ade'
    cfg.dump(str(out_file))
    return out_file


def small_cascade_config(out_file: Path) -> Path:
    """The B-22k Cascade Mask R-CNN config with the demo backbone and narrow heads (fast on CPU)."""
    cfg = load_config(str(CASCADE_CONFIG))
    demo = load_config(str(DET_CONFIG))
    cfg.model.backbone.arch = dict(depths=(1, 1, 3, 1), channels=(32, 64, 128, 256))
    cfg.model.backbone.init_cfg = None
    cfg.model.neck.update(in_channels=[32, 64, 128, 256], out_channels=32)
    cfg.model.rpn_head.update(in_channels=32, feat_channels=32)
    cfg.model.test_cfg.rpn.update(nms_pre=300, max_per_img=50)
    for head in cfg.model.roi_head.bbox_head:
        head.update(in_channels=32, conv_out_channels=32, fc_out_channels=64, num_classes=4)
    cfg.model.roi_head.bbox_roi_extractor.out_channels = 32
    cfg.model.roi_head.mask_roi_extractor.out_channels = 32
    cfg.model.roi_head.mask_head.update(in_channels=32, conv_out_channels=32, num_classes=4)
    cfg.test_pipeline = demo.test_pipeline
    cfg.test_dataloader = demo.test_dataloader
    cfg.dump(str(out_file))
    return out_file


def spread_weights(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """mmdet/mmseg's init, then random classifier and regressor layers: distinct, unsaturated
    scores and boxes of many sizes (their own init gives near-equal scores, i.e. ties)."""
    generator = torch.Generator().manual_seed(seed)
    model.init_weights()
    for name, param in model.named_parameters():
        if param.dim() < 2:
            continue
        if any(key in name for key in ('conv_cls', 'fc_cls', 'rpn_cls', 'conv_seg')):
            param.data = torch.randn(param.shape, generator=generator) * 0.1
        elif any(key in name for key in ('conv_reg', 'fc_reg', 'rpn_reg')):
            param.data = torch.randn(param.shape, generator=generator) * 0.02
    return model


def random_checkpoint(config: Path, out_file: Path, seed: int = 0) -> Path:
    """A checkpoint of ``config``'s model with :func:`spread_weights`."""
    torch.manual_seed(seed)
    model, _, _ = build_model(config, None)
    spread_weights(model, seed)
    torch.save({'state_dict': model.state_dict()}, out_file)
    return out_file


def coco_image_ids(ann_file: Path) -> dict:
    """``file_name -> id`` of a COCO annotation file."""
    images = json.loads(Path(ann_file).read_text())['images']
    return {Path(image['file_name']).name: image['id'] for image in images}


def load_cfg(path: Path) -> Config:
    return load_config(str(path))
