"""Evaluate a checkpoint: COCO bbox/segm AP (mmdet configs) or mIoU (mmseg configs)."""
import argparse

from mmengine.config import DictAction

from convnext_dense import runner_setup


def parse_args():
    parser = argparse.ArgumentParser(description='Test a ConvNeXt detector or segmenter')
    parser.add_argument('config', help='config file, or mmdet::/mmseg:: name')
    parser.add_argument('checkpoint', help='checkpoint: file, URL, Hugging Face directory or hub id '
                        '(any layout the README lists; loaded strictly)')
    parser.add_argument('--work-dir', help='where the evaluation log goes')
    parser.add_argument('--out', help='keep raw predictions (.pkl for mmdet, a dir for mmseg)')
    parser.add_argument('--show-dir', help='draw predictions on the test images into this dir')
    parser.add_argument('--tta', action='store_true', help='test-time augmentation')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, key=value')
    parser.add_argument('--launcher', choices=runner_setup.LAUNCHERS, default='none')
    parser.add_argument('--local-rank', '--local_rank', type=int, default=0)
    return parser.parse_args()


def main():
    args = parse_args()
    runner_setup.set_local_rank_env(args.local_rank)
    cfg = runner_setup.load_config(args.config, args.cfg_options)
    runner_setup.set_work_dir(cfg, args.config, args.work_dir)
    cfg.load_from = args.checkpoint
    if args.tta:
        runner_setup.enable_tta(cfg)
    if args.show_dir:
        runner_setup.enable_show_dir(cfg, args.show_dir)
    if args.out:
        runner_setup.add_result_dump(cfg, args.out)
    runner_setup.set_launcher(cfg, args.launcher)
    runner_setup.run(cfg, 'test')


if __name__ == '__main__':
    main()
