"""Install convnext_dense. In an existing OpenMMLab environment: ``pip install -e .``."""
from setuptools import find_packages, setup

setup(
    name='convnext_dense',
    version='0.1.0',
    description='ConvNeXt as a dense-prediction backbone for mmdet 3.x and mmseg 1.x',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['convnext_dense', 'convnext_dense.*']),
    python_requires='>=3.8',
    install_requires=[
        # torch.serialization's safe-globals allowlist (2.4); tested with constraints.txt's.
        'torch>=2.4',
        'mmengine>=0.10.7,<1.0',
        'mmcv>=2.0.0rc4,<2.2.0',
        'mmdet>=3.3.0,<3.4',
        'mmsegmentation>=1.2.2,<1.3',
        'ftfy',
        'regex',
        'huggingface_hub',
        'safetensors',
        'tqdm',
        # mmengine finds mmdet::/mmseg:: base configs through pkg_resources (gone in setuptools 81).
        'setuptools<81',
    ],
    extras_require={
        'tests': ['pytest', 'pytest-timeout', 'transformers'],
        # Writing Hugging Face model folders (tools/convert_checkpoint.py --to hf-*).
        'hf': ['transformers'],
        # ONNX export and onnxruntime inference (tools/export.py, tools/onnx_demo.py).
        'deploy': ['onnx', 'onnxruntime', 'onnxconverter-common'],
    },
    license='Apache-2.0',
)
