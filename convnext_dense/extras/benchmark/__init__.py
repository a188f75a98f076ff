"""Benchmark the backbone against Hugging Face's ConvNextBackbone (and timm, mmpretrain).

``tools/benchmark.py`` is the command line; ``tools/benchmark_gpu.py`` the GPU script. Modules:
:mod:`.timing` (interleaved medians), :mod:`.peers` (the other implementations on our weights),
:mod:`.cases` (one step of one configuration), :mod:`.flops` (mmengine's FLOP counts),
:mod:`.matmul_peak`, :mod:`.memory` (peak memory in a fresh process), :mod:`.runner`,
:mod:`.whole_model` (the B detector and segmenter), :mod:`.roi_align_speed` (the
channels-last RoIAlign against mmcv's) and :mod:`.report`.

Only torch is imported at module level, so the GPU script can use these modules on a machine
without the OpenMMLab packages.
"""
