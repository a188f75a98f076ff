"""Compare an export (tools/export.py) with PyTorch on a folder of images: detections and COCO AP,
or identical segmentation pixels.

Example:
    python tools/onnx_parity.py configs/demo/mask-rcnn_convnext-demo_shapes.py \
        work_dirs/demo/mask_rcnn/iter_500.pth work_dirs/onnx/mask_rcnn data/demo_shapes/coco/val \
        --ann-file data/demo_shapes/coco/annotations/instances_val.json
"""
import argparse
import json
import sys
from pathlib import Path

from convnext_dense import model_checkpoints
from convnext_dense.deploy.meta import read_meta
from convnext_dense.deploy.parity import detector_parity, segmenter_parity
from convnext_dense.runtime.cli_options import positive_int


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=' '.join(__doc__.split('\n\n')[0].split()))
    parser.add_argument('config', help='the config the export was made from')
    parser.add_argument('checkpoint', help='its checkpoint')
    parser.add_argument('model_dir', help='folder written by tools/export.py')
    parser.add_argument('images', help='folder of .jpg / .png images')
    parser.add_argument('--ann-file', help='COCO annotations of the images (detectors)')
    parser.add_argument('--limit', type=positive_int,
                        help='use only the first N images (default: all)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    model_checkpoints.enable()  # safe, strict checkpoint loading of every layout
    images = sorted(p for p in Path(args.images).glob('*') if p.suffix in ('.jpg', '.png'))
    images = images[:args.limit]
    if not images:
        print(f'error: no .jpg / .png images in {args.images}', file=sys.stderr)
        return 1
    try:
        task = read_meta(args.model_dir)['task']
        if task == 'detector':
            if not args.ann_file:
                print('error: a detector needs --ann-file (COCO annotations)', file=sys.stderr)
                return 1
            result = detector_parity(args.config, args.checkpoint, args.model_dir, images,
                                     args.ann_file)
        elif task == 'segmenter':
            result = segmenter_parity(args.config, args.checkpoint, args.model_dir, images)
        else:
            print(f'error: {args.model_dir} holds a {task} export; compare a detector or a '
                  'segmenter', file=sys.stderr)
            return 1
    except (FileNotFoundError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(json.dumps(dict(images=len(images), **result), indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
