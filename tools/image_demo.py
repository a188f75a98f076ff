"""Draw a trained detector's or segmenter's predictions on any image (or folder of images).

Example:
    python tools/image_demo.py data/demo_shapes/coco/val/shapes_val_000000.jpg \
        configs/demo/mask-rcnn_convnext-demo_shapes.py work_dirs/demo/mask_rcnn/iter_3000.pth
"""
import argparse
import sys

from convnext_dense import model_checkpoints
from convnext_dense.runtime.cli_options import exit_code, wrote
from convnext_dense.runtime.inference import draw_predictions


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('image', help='image file, or a folder of images')
    parser.add_argument('config', help='mmdet or mmseg config file (its scope decides)')
    parser.add_argument('checkpoint', help='checkpoint: file, URL, Hugging Face folder or hub id')
    parser.add_argument('--out-dir', default='work_dirs/image_demo',
                        help='the drawings go to OUT_DIR/vis (default: work_dirs/image_demo)')
    parser.add_argument('--device', default='cpu', help="torch device (default: cpu)")
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detections below this score are not drawn (default: 0.3)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    model_checkpoints.enable()  # safe, strict checkpoint loading of every layout
    return exit_code(lambda: wrote(draw_predictions(
        args.image, args.config, args.checkpoint, args.out_dir, args.device, args.score_thr)),
        (OSError, ValueError))


if __name__ == '__main__':
    sys.exit(main())
