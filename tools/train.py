"""Train a detector (mmdet config) or segmenter (mmseg config) with mmengine's Runner."""
import argparse
import sys

from convnext_dense.runtime import cli_options, run


def parse_args():
    parser = argparse.ArgumentParser(description='Train a ConvNeXt detector or segmenter')
    cli_options.add_common_arguments(parser, work_dir_help='where logs and checkpoints go')
    parser.add_argument('--resume', nargs='?', const='auto', metavar='PATH',
                        help='resume from PATH, or from the latest checkpoint in the work dir')
    parser.add_argument('--restart', action='store_true',
                        help="start over in a work dir that holds an earlier run's checkpoints "
                             '(they are moved into WORK_DIR/earlier_run_<time>/ first); without '
                             'it such a work dir is refused')
    parser.add_argument('--amp', action='store_true', help='mixed precision (fp32 on CPU)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by the real total batch size')
    return parser.parse_args()


def build_config(args):
    cfg = cli_options.config_from_args(args)
    cli_options.set_amp(cfg, args.amp)
    cli_options.set_auto_scale_lr(cfg, args.auto_scale_lr)
    cli_options.set_resume(cfg, args.resume)
    cli_options.protect_earlier_run(cfg, args.restart)
    cli_options.set_launcher(cfg, args.launcher)
    return cfg


def main():
    args = parse_args()
    cfg = cli_options.configured(lambda: build_config(args))
    return 1 if cfg is None else run.run_or_explain(cfg, 'train')


if __name__ == '__main__':
    sys.exit(main())
