"""Small synthetic batches in the format mmdet / mmseg data preprocessors expect."""
from typing import Dict, Sequence

import torch


def detection_batch(num_classes: int = 80, size: Sequence[int] = (128, 160),
                    batch_size: int = 2, with_mask: bool = True) -> Dict:
    """A packed detection batch with boxes (and masks) for ``model.train_step``."""
    from mmdet.testing import demo_mm_inputs
    return demo_mm_inputs(batch_size=batch_size, image_shapes=(3, *size), num_items=[3] * batch_size,
                          num_classes=num_classes, with_mask=with_mask, use_box_type=True)


def segmentation_batch(num_classes: int = 150, size: Sequence[int] = (128, 128),
                       batch_size: int = 2) -> Dict:
    """A packed segmentation batch with random label maps for ``model.train_step``."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    height, width = size
    inputs, samples = [], []
    for _ in range(batch_size):
        inputs.append(torch.randint(0, 256, (3, height, width), dtype=torch.uint8))
        sample = SegDataSample(metainfo=dict(
            img_shape=(height, width), ori_shape=(height, width), pad_shape=(height, width)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, height, width)))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)
