"""Draw an exported (tools/export.py) model's predictions on images, run by onnxruntime.

Example:
    python tools/onnx_demo.py data/demo_shapes/coco/val/shapes_val_000000.jpg \
        work_dirs/onnx/mask_rcnn --out-dir work_dirs/onnx_demo
"""
import argparse
import sys

from convnext_dense.deploy.runtime import draw_predictions
from convnext_dense.runtime.cli_options import exit_code, wrote


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('image', help='image file, or a folder of images')
    parser.add_argument('model_dir', help='folder written by tools/export.py')
    parser.add_argument('--out-dir', default='work_dirs/onnx_demo',
                        help='the drawings go to OUT_DIR/vis (default: work_dirs/onnx_demo)')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detections below this score are not drawn (default: 0.3)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    return exit_code(lambda: wrote(draw_predictions(args.image, args.model_dir, args.out_dir,
                                                    args.score_thr)),
                     (OSError, ValueError, ModuleNotFoundError))


if __name__ == '__main__':
    sys.exit(main())
