# Shared by the ImageNet-1k configs: the backbone of the ConvNeXt authors' 1k fine-tuning recipes
# and the official ImageNet-1k 224 weights (not the EMA ones: as mmpretrain's "noema" downstream
# copies the stock mmdet / mmseg configs load). Each config adds arch, drop path and checkpoint.
# Used as `backbone=dict(_delete_=True, **_base_.convnext_in1k, arch=..., ...)`.
checkpoint_tiny = 'https://dl.fbaipublicfiles.com/convnext/convnext_tiny_1k_224.pth'
checkpoint_small = 'https://dl.fbaipublicfiles.com/convnext/convnext_small_1k_224.pth'
checkpoint_base = 'https://dl.fbaipublicfiles.com/convnext/convnext_base_1k_224.pth'

convnext_in1k = dict(
    type='convnext_dense.ConvNeXt',
    out_indices=(0, 1, 2, 3),
    layer_scale_init_value=1.0)
