"""`make demo`: train and evaluate both demo models on the embedded shapes dataset, draw pictures.

Generates data/demo_shapes, pre-trains the small ConvNeXt on shape classification (the demo's
stand-in for the ImageNet-22k weights), fine-tunes UperNet and Mask R-CNN from it with
tools/train.py (side by side, a core each), evaluates both with tools/test.py, writes
work_dirs/demo/{curves,predictions}.png, and ends with one line:

    demo: bbox_mAP=<0..1> segm_mAP=<0..1> mIoU=<0..100>
"""
import argparse
import sys
from pathlib import Path

from convnext_dense.extras.demo.pipeline import DemoPipeline, DemoSettings
from convnext_dense.extras.demo.summary import THRESHOLDS, below_thresholds

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    defaults = DemoSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data-dir', default=str(defaults.data_dir),
                        help=f'shapes dataset folder (default: {defaults.data_dir})')
    parser.add_argument('--work-dir', default=str(defaults.work_dir),
                        help=f'outputs (default: {defaults.work_dir})')
    parser.add_argument('--num-train', type=int, default=defaults.num_train,
                        help=f'training images to generate (default: {defaults.num_train})')
    parser.add_argument('--num-val', type=int, default=defaults.num_val,
                        help=f'validation images to generate (default: {defaults.num_val})')
    parser.add_argument('--seg-iters', type=int, default=None,
                        help='UperNet iterations (default: the config\'s)')
    parser.add_argument('--det-iters', type=int, default=None,
                        help='Mask R-CNN iterations (default: the config\'s)')
    parser.add_argument('--pretrain-iters', type=int, default=None,
                        help='steps of each pre-training phase, teacher and distillation '
                        '(default: the recipe\'s)')
    parser.add_argument('--sequential', action='store_true',
                        help='train the two models one after the other instead of side by side')
    parser.add_argument('--threads', type=int, default=defaults.threads,
                        help='torch threads per training process (default: half the cores side '
                        'by side, else torch\'s choice)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # progress shows as it comes, also through a pipe
    settings = DemoSettings(data_dir=args.data_dir, work_dir=args.work_dir,
                            num_train=args.num_train, num_val=args.num_val,
                            seg_iters=args.seg_iters, det_iters=args.det_iters,
                            pretrain_iters=args.pretrain_iters, parallel=not args.sequential,
                            threads=args.threads)
    pipeline = DemoPipeline(ROOT / 'tools', ROOT / 'configs', settings, echo=print)
    try:
        result = pipeline.run()
    except (RuntimeError, FileNotFoundError, KeyError, ValueError) as err:
        print(f'demo failed: {err}', file=sys.stderr)
        return 1
    seconds = ', '.join(f'{k} {v:.0f} s' for k, v in result.seconds.items())
    print(f'times: {seconds}')
    for name, path in result.pictures.items():
        print(f'{name}: {path}')
    missed = below_thresholds(result.summary)
    if missed:
        print('below the demo targets: ' + ', '.join(
            f'{k} {v:g} < {THRESHOLDS[k]:g}' for k, v in missed.items()))
    print(result.summary)
    return 0


if __name__ == '__main__':
    sys.exit(main())
