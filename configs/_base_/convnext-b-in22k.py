# Shared by the B-22k configs: the ConvNeXt-B backbone as the ImageNet-22k fine-tuning recipes
# build it, and the detection recipes' layer-wise lr decay. Each config's stock mmdet / mmseg base
# already defines `model` and `optim_wrapper`, and mmengine refuses a key two bases define, so
# these are named pieces the configs use: `backbone=dict(_delete_=True, **_base_.convnext_b_in22k,
# drop_path_rate=...)`. Drop path stays in each config: it is part of each published recipe.
checkpoint = 'https://dl.fbaipublicfiles.com/convnext/convnext_base_22k_224.pth'
backbone_channels = [128, 256, 512, 1024]

convnext_b_in22k = dict(
    type='convnext_dense.ConvNeXt',
    arch='base',
    out_indices=(0, 1, 2, 3),
    layer_scale_init_value=1.0,
    init_cfg=dict(type='Pretrained', checkpoint=checkpoint))

# The published Cascade Mask R-CNN B-22k optimizer: AdamW 1e-4, decay 0.8 over 12 layers.
detection_layer_decay = dict(
    constructor='convnext_dense.LayerDecayOptimizerConstructor',
    paramwise_cfg=dict(_delete_=True, decay_rate=0.8, decay_type='layer_wise', num_layers=12),
    optimizer=dict(lr=1e-4))
