"""Export a detector, segmenter or their backbone to ONNX (model.onnx + deploy.json).

Example:
    python tools/export.py configs/demo/upernet_convnext-demo_shapes.py \
        work_dirs/demo/upernet/iter_2000.pth --out work_dirs/onnx/upernet
"""
import argparse
import sys

from convnext_dense import model_checkpoints
from convnext_dense.deploy.errors import ExportError
from convnext_dense.deploy.export import PARTS, export_model
from convnext_dense.runtime.cli_options import exit_code


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='mmdet or mmseg config file (its scope decides)')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size to export (default: the slide window of mmseg slide '
                             'configs; required otherwise)')
    parser.add_argument('--dynamic', action='store_true', help='any input height and width')
    parser.add_argument('--fp16', action='store_true',
                        help='fp16 weights and compute; LayerNorm, softmax, sigmoid in fp32')
    parser.add_argument('--part', choices=PARTS, default='model',
                        help='the whole model, or the backbone alone (its feature maps)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    model_checkpoints.enable()  # safe, strict checkpoint loading of every layout

    def export() -> str:
        onnx_file = export_model(args.config, args.checkpoint, args.out, args.shape,
                                 args.dynamic, args.fp16, args.part)
        return f'wrote {onnx_file} and {onnx_file.parent / "deploy.json"}'

    return exit_code(export, (ExportError, FileNotFoundError, FileExistsError, ValueError,
                              ModuleNotFoundError))


if __name__ == '__main__':
    sys.exit(main())
