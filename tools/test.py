"""Evaluate a checkpoint: COCO bbox/segm AP (mmdet configs) or mIoU (mmseg configs)."""
import argparse
import sys

from convnext_dense.runtime import cli_options, run


def parse_args():
    parser = argparse.ArgumentParser(description='Test a ConvNeXt detector or segmenter')
    cli_options.add_common_arguments(parser, work_dir_help='where the evaluation log goes')
    parser.add_argument('checkpoint', help='checkpoint: file, URL, Hugging Face directory or hub id '
                        '(any layout the README lists; loaded strictly)')
    parser.add_argument('--out', help='keep raw predictions (.pkl for mmdet, a dir for mmseg)')
    parser.add_argument('--show-dir', help='draw predictions on the test images into this dir')
    parser.add_argument('--show', action='store_true',
                        help='show each drawn test image in a window (needs a display)')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='with --show: seconds each image is shown (default: 2)')
    parser.add_argument('--show-limit', type=int, metavar='N',
                        help='with --show-dir or --show: draw only the first N test images '
                        '(whole batches); drawing can take longer than the inference')
    parser.add_argument('--tta', action='store_true', help='test-time augmentation')
    return parser.parse_args()


def build_config(args):
    cfg = cli_options.config_from_args(args)
    cfg.load_from = args.checkpoint
    if args.tta:
        cli_options.enable_tta(cfg)
    if args.show_limit is not None and not (args.show_dir or args.show):
        raise ValueError(f'--show-limit {args.show_limit} needs --show-dir (where to draw) or '
                         '--show')
    if args.show_dir:
        cli_options.enable_show_dir(cfg, args.show_dir, args.show_limit)
    if args.show:
        cli_options.enable_show(cfg, args.wait_time, args.show_limit)
    if args.out:
        cli_options.add_result_dump(cfg, args.out)
    cli_options.set_launcher(cfg, args.launcher)
    return cfg


def main():
    args = parse_args()
    cfg = cli_options.configured(lambda: build_config(args))
    return 1 if cfg is None else run.run_or_explain(cfg, 'test')


if __name__ == '__main__':
    sys.exit(main())
